// CudaLlamaModel's feed-forward block: the dense SwiGLU (in the gate_up GEMM's epilogue at decode
// sizes, Gemm::run_swiglu; else bf16, or fp8 SwiGLU output for fp8 prefill)
// and the MoE paths: the grouped path (route, permute, per-expert GEMMs via cuBLASLt over lanes, or
// opt-in the batched cuBLASLt GEMM or kiln's one-launch wgmma GEMM, un-permute)
// and the MoE decode path (moe_decode_gemm_cuda over the routed slots, fused with the norms' routing
// for fp8 decode steps). Declared in llama_cuda_model.h.
#ifdef KILN_WITH_CUDA
#include <algorithm>

#include "kiln/models/llama_cuda_model.h"

#include "kiln/kernels/random_fill.h"

namespace kiln::cuda_llama {

Status CudaLlamaModel::ffn(const CudaLayerWeights& lw, int64_t n, MoeSlots* fused, bool h_fp8) {
  const ModelConfig& c = config_;
  KILN_ASSIGN_OR_RETURN(Tensor h, h_.get(DType::kBF16, {n, c.hidden_size}));
  KILN_ASSIGN_OR_RETURN(Tensor x, x_.get(DType::kBF16, {n, c.hidden_size}));
  const int64_t inter = c.intermediate_size;
  if (lw.experts.empty()) {
    KILN_ASSIGN_OR_RETURN(Tensor gu, gate_up_.get(DType::kBF16, {n, 2 * inter}));
    KILN_ASSIGN_OR_RETURN(Tensor act, act_.get(DType::kBF16, {n, inter}));
    if (!h_fp8 && !x_fp8(lw.down.tensor, n)) {
      // Decode sizes: SwiGLU in the gate_up GEMM's epilogue (no [n, 2I] tensor, no silu_mul kernel
      // between the two GEMMs); where the decode kernel does not run it, the two steps below.
      // H100 batch-1 decode: Llama-3-8B fp8 +4.1%, bf16 +2.2% (perf.md, session 29).
      const Status fused_st = gemm_.run_swiglu({h, lw.gate_up.tensor, {}, act, lw.gate_up_scale.tensor}, stream_);
      if (fused_st.ok()) return gemm_.run({act, lw.down.tensor, {}, x, lw.down_scale.tensor}, stream_);
      if (fused_st.code() != StatusCode::kUnimplemented) return fused_st;
    }
    if (h_fp8) {  // h as per-token fp8 from the ffn norm
      KILN_ASSIGN_OR_RETURN(const HFp8 hq, hq_views(n));
      KILN_RETURN_IF_ERROR(gemm_.run_quantized({hq.q, hq.scale, lw.gate_up.tensor, {}, gu, lw.gate_up_scale.tensor}, stream_));
    } else {
      KILN_RETURN_IF_ERROR(gemm_.run({h, lw.gate_up.tensor, {}, gu, lw.gate_up_scale.tensor}, stream_));
    }
    if (x_fp8(lw.down.tensor, n)) {
      // the down GEMM quantizes x per token: SwiGLU straight to per-token fp8 (no bf16 act, no pass in the GEMM)
      KILN_ASSIGN_OR_RETURN(Tensor aq, act_.get(DType::kFp8E4M3, {n, inter}));
      KILN_ASSIGN_OR_RETURN(Tensor as, act_scale_.get(DType::kF32, {n}));
      // down launches before the SwiGLU's wait (as in moe_decode below; run_quantized's kernels wait
      // before they trigger). H100, Llama-3-8B fp8 `bench latency` batch 16, decode step ms, two
      // rounds: 3.757 / 3.756 -> 3.748 / 3.731.
      SiluMulFp8Args act_q{gu, aq, as};
      act_q.trigger_early = true;
      KILN_RETURN_IF_ERROR(silu_mul_fp8_cuda(act_q, stream_));
      return gemm_.run_quantized({aq, as, lw.down.tensor, {}, x, lw.down_scale.tensor}, stream_);
    }
    KILN_RETURN_IF_ERROR(silu_mul_cuda({gu, act}, stream_));
    return gemm_.run({act, lw.down.tensor, {}, x, lw.down_scale.tensor}, stream_);
  }
  const int64_t e = c.num_experts, k = moe_top_k();
  if (k <= 0 || k > e) return invalid_argument("moe top-k " + std::to_string(k) + " outside [1, " + std::to_string(e) + "]");
  if (moe_decode_path(lw, n)) return moe_decode(lw, n, k, fused);
  if (fused) return internal_error("ffn: the fused MoE decode step off the MoE decode path");
  // fp8 experts: each expert's rows start at a multiple of 4 (scale slices 16-byte aligned for cuBLASLt).
  const bool fp8 = fused_act_quant_ && !lw.expert_down_scale.empty() && lw.experts[0].down.tensor.dtype == DType::kFp8E4M3;
  const int64_t align = fp8 ? 4 : 1, rows_max = moe_permuted_rows(n * k, e, align), m0 = n * e + 3 * n * k + e + 1;
  KILN_ASSIGN_OR_RETURN(Tensor meta, moe_a_.get(DType::kInt32, {m0 + rows_max}));
  Tensor router_logits = Tensor::view(meta.data, DType::kF32, {n, e}, Device::kCuda);
  Tensor ids = Tensor::view(meta.ptr<int32_t>() + n * e, DType::kInt32, {n, k}, Device::kCuda);
  Tensor weights = Tensor::view(meta.ptr<int32_t>() + n * e + n * k, DType::kF32, {n, k}, Device::kCuda);
  Tensor inverse = Tensor::view(meta.ptr<int32_t>() + n * e + 2 * n * k, DType::kInt32, {n * k}, Device::kCuda);
  Tensor offsets = Tensor::view(meta.ptr<int32_t>() + n * e + 3 * n * k, DType::kInt32, {e + 1}, Device::kCuda);
  Tensor src = Tensor::view(meta.ptr<int32_t>() + m0, DType::kInt32, {rows_max}, Device::kCuda);
  KILN_RETURN_IF_ERROR(moe_route_cuda({router_logits, ids, weights, c.norm_topk_prob, h, lw.router.tensor}, stream_));
  KILN_ASSIGN_OR_RETURN(Tensor xp, moe_b_.get(DType::kBF16, {rows_max, c.hidden_size}));
  KILN_RETURN_IF_ERROR(moe_permute_cuda({ids, h, e, offsets, src, inverse, xp, align}, stream_));
  // The per-expert GEMMs need the expert offsets on the host. Their copy ends in an event, and with
  // many slots (fp8 x for sure) the x quantization, which needs no offsets (all rows_max rows, the
  // ones past the offsets unused), is queued behind it: the GPU works while the host wakes up and
  // launches the GEMMs, instead of idling from the end of a stream synchronize to the next launch.
  KILN_ASSIGN_OR_RETURN(int32_t* staged, offsets_staging_.get(e + 1));
  KILN_RETURN_IF_ERROR(cuda_status(cudaMemcpyAsync(staged, offsets.data, static_cast<size_t>(e + 1) * 4, cudaMemcpyDeviceToHost, stream_), "offsets"));
  KILN_RETURN_IF_ERROR(cuda_status(cudaEventRecord(offsets_ready_, stream_), "offsets event"));
  const bool x_fp8_early = fp8 && n * k >= 1024;
  Tensor aq, scales;  // fp8 x (then the SwiGLU output) and its per-row scales
  const int64_t x_slack = moe_batched_ ? n + 64 : 0;
  auto quantize_x = [&](int64_t x_rows) -> Status {
    // rows to spare: a batched GEMM entry reads rows_per_entry rows from its first, at most the
    // largest expert's rows (<= n + 3 with the alignment) rounded up to 32
    KILN_ASSIGN_OR_RETURN(aq, act_.get(DType::kFp8E4M3, {x_rows + x_slack, std::max(inter, c.hidden_size)}));
    KILN_ASSIGN_OR_RETURN(scales, act_scale_.get(DType::kF32, {x_rows}));  // x's, then the SwiGLU output's
    const Tensor xq = Tensor::view(aq.data, DType::kFp8E4M3, {x_rows, c.hidden_size}, Device::kCuda);  // read before aq's write
    return quantize_fp8_cuda({xp.slice0(0, x_rows), xq, scales}, stream_);
  };
  if (x_fp8_early) KILN_RETURN_IF_ERROR(quantize_x(rows_max));
  KILN_RETURN_IF_ERROR(cuda_status(cudaEventSynchronize(offsets_ready_), "offsets"));
  const std::vector<int32_t> host_offsets(staged, staged + e + 1);
  const int64_t rows = host_offsets[static_cast<size_t>(e)];  // n * k plus the alignment gaps
  KILN_ASSIGN_OR_RETURN(Tensor gu, moe_c_.get(DType::kBF16, {rows, 2 * inter}));
  KILN_ASSIGN_OR_RETURN(Tensor yp, moe_d_.get(DType::kBF16, {rows, c.hidden_size}));
  int32_t min_rows = std::numeric_limits<int32_t>::max(), max_rows = 0;
  for (size_t i = 0; i + 1 < host_offsets.size(); ++i) {
    if (host_offsets[i + 1] > host_offsets[i]) min_rows = std::min(min_rows, host_offsets[i + 1] - host_offsets[i]);
    max_rows = std::max(max_rows, host_offsets[i + 1] - host_offsets[i]);
  }
  if (x_fp8_early && moe_batched_ready(lw)) {
    MoeBatchedLayout layout = moe_batched_layout(host_offsets, moe_batched_force_ ? 1 << 30 : kMoeBatchedMaxPadPercent);
    // One entry per expert only, unless forced: entries of part of an expert lost to the loop on the
    // H100 (moe_grouped_bench, skewed routing: gate_up at 128-row entries 762 vs 576 us over 2 lanes).
    const bool whole_experts = layout.rows_per_entry == (max_rows + 31) / 32 * 32;
    const bool fits = whole_experts && layout.padded_rows() * 100 <= rows * kMoeBatchedMaxPadPercent;
    if (layout.entries() > 0 && (moe_batched_force_ || fits)) {
      const Tensor xq = Tensor::view(aq.data, DType::kFp8E4M3, {rows_max + x_slack, c.hidden_size}, Device::kCuda);
      return moe_batched({xq, scales, ids, weights, inverse, &layout, rows}, lw, x);
    }
    log_debug("moe: ", rows, " rows, the largest expert ", max_rows, ": padded too far for the batched path (",
              layout.padded_rows(), " rows in entries of ", layout.rows_per_entry, ")");
  }
  if (fp8 && (min_rows > kGemmSkinnyMaxMFp8 || x_fp8_early)) {  // no expert in the decode-kernel range: x, SwiGLU fp8
    if (!x_fp8_early) KILN_RETURN_IF_ERROR(quantize_x(rows));
    const Tensor xq = Tensor::view(aq.data, DType::kFp8E4M3, {rows, c.hidden_size}, Device::kCuda);
    scales = Tensor::view(scales.data, DType::kF32, {rows}, Device::kCuda);
    const bool wgmma = moe_wgmma_ > 0;  // init_moe_lanes checked the experts (per-channel scales, alignment)
    if (wgmma && moe_wgmma_ > 1)
      KILN_RETURN_IF_ERROR(moe_grouped_wgmma_cuda({xq, scales, lw.expert_gate_up, lw.expert_gate_up_scale, offsets, gu}, stream_));
    else
      KILN_RETURN_IF_ERROR(moe_grouped_gemm_cuda(moe_lanes(), {xq, lw.expert_gate_up, host_offsets, gu, lw.expert_gate_up_scale, scales}));
    aq = Tensor::view(aq.data, DType::kFp8E4M3, {rows, inter}, Device::kCuda);
    KILN_RETURN_IF_ERROR(silu_mul_fp8_cuda({gu, aq, scales}, stream_));
    if (wgmma)
      KILN_RETURN_IF_ERROR(moe_grouped_wgmma_cuda({aq, scales, lw.expert_down, lw.expert_down_scale, offsets, yp}, stream_));
    else
      KILN_RETURN_IF_ERROR(moe_grouped_gemm_cuda(moe_lanes(), {aq, lw.expert_down, host_offsets, yp, lw.expert_down_scale, scales}));
    return moe_unpermute_cuda({yp, weights, inverse, x}, stream_);
  }
  KILN_RETURN_IF_ERROR(moe_grouped_gemm_cuda(moe_lanes(), {xp.slice0(0, rows), lw.expert_gate_up, host_offsets, gu, lw.expert_gate_up_scale}));
  KILN_ASSIGN_OR_RETURN(Tensor act, act_.get(DType::kBF16, {rows, inter}));
  KILN_RETURN_IF_ERROR(silu_mul_cuda({gu, act}, stream_));
  KILN_RETURN_IF_ERROR(moe_grouped_gemm_cuda(moe_lanes(), {act, lw.expert_down, host_offsets, yp, lw.expert_down_scale}));
  return moe_unpermute_cuda({yp, weights, inverse, x}, stream_);
}

bool CudaLlamaModel::moe_ids_poll(int64_t n) const {
  return moe_ids_poll_ && n * moe_top_k() <= kMoeDecodeIdsPollSlots;
}

bool CudaLlamaModel::moe_batched_ready(const CudaLayerWeights& lw) const {
  // per-channel scales only (the dequant passes read [n] per expert)
  return moe_batched_ && !lw.gate_up_scale_ptrs.tensor.empty() && !lw.down_scale_ptrs.tensor.empty() &&
         lw.experts[0].gate_up_scale.tensor.numel() > 1 && lw.experts[0].down_scale.tensor.numel() > 1;
}

Status CudaLlamaModel::moe_batched(const MoeBatchedIo& io, const CudaLayerWeights& lw, Tensor x) {
  const ModelConfig& c = config_;
  const MoeBatchedLayout& layout = *io.layout;
  const int64_t inter = c.intermediate_size, prow = layout.padded_rows();
  KILN_ASSIGN_OR_RETURN(const MoeBatchedTables tables, moe_batched_gemm_.upload_layout(layout, io.rows, stream_));
  // gate_up: unscaled sums; the SwiGLU scales them (x's row scale, the expert's channel scales)
  KILN_ASSIGN_OR_RETURN(Tensor gu, moe_c_.get(DType::kBF16, {prow, 2 * inter}));
  KILN_RETURN_IF_ERROR(moe_batched_gemm_.run({io.xq, &layout, false, lw.gate_up_ptrs.tensor, 2 * inter, gu}, stream_));
  KILN_ASSIGN_OR_RETURN(Tensor aq, moe_e_.get(DType::kFp8E4M3, {prow, inter}));
  KILN_ASSIGN_OR_RETURN(Tensor as, moe_f_.get(DType::kF32, {prow}));
  const SiluMulFp8Dequant dq{layout.rows_per_entry, tables.entries, io.x_scale, lw.gate_up_scale_ptrs.tensor};
  KILN_RETURN_IF_ERROR(silu_mul_fp8_cuda({gu, aq, as, dq}, stream_));
  // down: unscaled sums again; the un-permute scales them
  KILN_ASSIGN_OR_RETURN(Tensor yp, moe_d_.get(DType::kBF16, {prow, c.hidden_size}));
  KILN_RETURN_IF_ERROR(moe_batched_gemm_.run({aq, &layout, true, lw.down_ptrs.tensor, c.hidden_size, yp}, stream_));
  MoeUnpermuteArgs ua{yp, io.weights, io.inverse, x};
  ua.padded_rows = tables.padded_rows;
  ua.topk_ids = io.ids;
  ua.row_scale = as;
  ua.col_scale_ptrs = lw.down_scale_ptrs.tensor;
  return moe_unpermute_cuda(ua, stream_);
}

Status CudaLlamaModel::init_moe_lanes() {
  int lanes = config_.num_experts > 1 ? kMoeLanes : 1;
  if (const char* v = std::getenv("KILN_MOE_LANES"); v && *v && config_.num_experts > 1)
    lanes = std::clamp(std::atoi(v), 1, kMoeMaxLanes);
  KILN_ASSIGN_OR_RETURN(moe_lanes_, MoeLaneSet::create(lanes, &gemm_, stream_));
  if (const char* v = std::getenv("KILN_MOE_BATCHED"); v && *v) {
    moe_batched_ = std::string(v) != "0";
    moe_batched_force_ = std::string(v) == "force";  // tests: whatever the padding
  }
  if (const char* v = std::getenv("KILN_MOE_WGMMA"); v && *v) moe_wgmma_ = std::clamp(std::atoi(v), 0, 2);
  if (const char* v = std::getenv("KILN_MOE_IDS_POLL"); v && *v) moe_ids_poll_ = std::string(v) != "0";
  if (!moe_grouped_wgmma_available() || config_.num_experts > kMoeGroupedWgmmaMaxExperts || config_.hidden_size % 16 != 0 ||
      config_.intermediate_size % 16 != 0)  // k of gate_up / down: TMA row strides of 16 bytes
    moe_wgmma_ = 0;
  auto aligned = [](const std::vector<Tensor>& ts, uintptr_t a) {
    return std::all_of(ts.begin(), ts.end(), [a](const Tensor& t) { return (reinterpret_cast<uintptr_t>(t.data) % a) == 0; });
  };
  for (const CudaLayerWeights& lw : w_.layers)  // fp8 experts with per-channel scales, as TMA and the kernel want them
    if (!lw.expert_down_scale.empty() &&
        (lw.expert_down_scale[0].numel() <= 1 || lw.expert_gate_up_scale[0].numel() <= 1 || !aligned(lw.expert_down, 16) ||
         !aligned(lw.expert_gate_up, 16) || !aligned(lw.expert_down_scale, 8) || !aligned(lw.expert_gate_up_scale, 8)))
      moe_wgmma_ = 0;
  if (moe_batched_ && config_.num_experts > 1) {
    KILN_ASSIGN_OR_RETURN(moe_batched_gemm_, MoeBatchedGemm::create());
  }
  moe_batched_ = moe_batched_ && static_cast<bool>(moe_batched_gemm_) && !w_.layers.empty() && moe_batched_ready(w_.layers[0]);
  return moe_batched_ ? pretune_moe_batched() : ok_status();
}

// Times the batched GEMMs' candidates now for the rows per expert that 512-2048-token steps give
// (128-768 in steps of 32), on layer 0's experts and random e4m3 x: timed on first use instead,
// each new row count stalled a serving step by tens of ms. ~40 plans, ~1 s.
Status CudaLlamaModel::pretune_moe_batched() {
  const ModelConfig& c = config_;
  const CudaLayerWeights& lw = w_.layers[0];
  const int64_t e = c.num_experts, inter = c.intermediate_size, wide = std::max(inter, c.hidden_size);
  constexpr int64_t kMin = 128, kMax = 768;
  log_info("moe: timing the batched expert GEMMs' algorithms for ", kMin, "-", kMax, " rows per expert...");
  KILN_ASSIGN_OR_RETURN(Tensor x, moe_e_.get(DType::kFp8E4M3, {e * kMax, wide}));
  KILN_ASSIGN_OR_RETURN(Tensor y, moe_c_.get(DType::kBF16, {e * kMax, std::max(2 * inter, wide)}));
  // x: random bf16 in y's memory, quantized per row of hidden into all of x's bytes
  const int64_t flat_rows = e * kMax * wide / c.hidden_size;
  KILN_ASSIGN_OR_RETURN(Tensor flat_scale, moe_f_.get(DType::kF32, {flat_rows}));
  const Tensor src = Tensor::view(y.data, DType::kBF16, {flat_rows, c.hidden_size}, Device::kCuda);
  KILN_RETURN_IF_ERROR(random_fill_cuda({src, 24, 1.0f, 0.0f}, stream_));
  KILN_RETURN_IF_ERROR(quantize_fp8_cuda({src, Tensor::view(x.data, DType::kFp8E4M3, {flat_rows, c.hidden_size}, Device::kCuda),
                                          flat_scale}, stream_));
  for (int64_t m = kMin; m <= kMax; m += 32) {
    MoeBatchedLayout layout;
    layout.rows_per_entry = m;
    for (int64_t i = 0; i < e; ++i) {
      layout.expert.push_back(static_cast<int32_t>(i));
      layout.begin.push_back(static_cast<int32_t>(i * m));
      layout.end.push_back(static_cast<int32_t>(i * m + m));
    }
    const Tensor xg = Tensor::view(x.data, DType::kFp8E4M3, {e * m, c.hidden_size}, Device::kCuda);
    const Tensor xd = Tensor::view(x.data, DType::kFp8E4M3, {e * m, inter}, Device::kCuda);
    const Tensor yg = Tensor::view(y.data, DType::kBF16, {e * m, 2 * inter}, Device::kCuda);
    const Tensor yd = Tensor::view(y.data, DType::kBF16, {e * m, c.hidden_size}, Device::kCuda);
    KILN_RETURN_IF_ERROR(moe_batched_gemm_.run({xg, &layout, true, lw.gate_up_ptrs.tensor, 2 * inter, yg}, stream_));
    KILN_RETURN_IF_ERROR(moe_batched_gemm_.run({xd, &layout, true, lw.down_ptrs.tensor, c.hidden_size, yd}, stream_));
  }
  return cuda_status(cudaStreamSynchronize(stream_), "pretune");
}

bool CudaLlamaModel::moe_decode_path(const CudaLayerWeights& lw, int64_t n) const {
  const int64_t k = options_.moe_top_k > 0 ? options_.moe_top_k : config_.num_experts_per_tok;
  if (moe_decode_slots_ == 0 || lw.gate_up_ptrs.tensor.empty() || n * k > static_cast<int64_t>(identity_rows_.tensor.numel()))
    return false;
  const bool fp8 = lw.experts[0].gate_up.tensor.dtype == DType::kFp8E4M3;
  if (n * k > (moe_decode_slots_ >= 0 ? moe_decode_slots_ : fp8 && !moe_x_fp8_.tensor.empty() ? kMoeFp8DecodeSlots : 32))
    return false;
  if (!fp8) return true;
  // fp8 experts need per-channel scales here ([n] each); per-tensor ones take the grouped path.
  return !lw.gate_up_scale_ptrs.tensor.empty() && lw.experts[0].gate_up_scale.tensor.numel() > 1 &&
         lw.experts[0].down_scale.tensor.numel() > 1;
}

// fp8 experts whose decode GEMMs take pre-quantized x (the wgmma row): see MoeSlots.
bool CudaLlamaModel::moe_fused_path(const CudaLayerWeights& lw, int64_t n) const {
  return moe_fused_ && !moe_x_fp8_.tensor.empty() && !lw.experts.empty() && moe_decode_path(lw, n) &&
         lw.experts[0].gate_up.tensor.dtype == DType::kFp8E4M3 && config_.intermediate_size <= 16384;  // silu_mul_fp8's limit
}

// The decode step's router outputs (in moe_a_): logits [n, e], ids and weights [n, k]; x unset.
Result<MoeRouteArgs> CudaLlamaModel::moe_route_args(const CudaLayerWeights& lw, int64_t n, int64_t k) {
  const int64_t e = config_.num_experts;
  KILN_ASSIGN_OR_RETURN(Tensor meta, moe_a_.get(DType::kInt32, {n * e + 2 * n * k}));
  return MoeRouteArgs{Tensor::view(meta.data, DType::kF32, {n, e}, Device::kCuda),
                      Tensor::view(meta.ptr<int32_t>() + n * e, DType::kInt32, {n, k}, Device::kCuda),
                      Tensor::view(meta.ptr<int32_t>() + n * e + n * k, DType::kF32, {n, k}, Device::kCuda),
                      config_.norm_topk_prob, {}, lw.router.tensor};
}

Status CudaLlamaModel::moe_decode(const CudaLayerWeights& lw, int64_t n, int64_t k, MoeSlots* fused) {
  const ModelConfig& c = config_;
  const int64_t inter = c.intermediate_size;
  KILN_ASSIGN_OR_RETURN(Tensor h, h_.get(DType::kBF16, {n, c.hidden_size}));
  KILN_ASSIGN_OR_RETURN(Tensor x, x_.get(DType::kBF16, {n, c.hidden_size}));
  KILN_ASSIGN_OR_RETURN(MoeRouteArgs route, moe_route_args(lw, n, k));
  const Tensor ids = route.topk_ids, weights = route.topk_weights;
  if (!fused) KILN_RETURN_IF_ERROR(moe_route_cuda({route.router_logits, ids, weights, route.renormalize, h, route.router_weight}, stream_));
  const DType wt = lw.experts[0].gate_up.tensor.dtype;
  KILN_ASSIGN_OR_RETURN(Tensor gu, moe_c_.get(DType::kBF16, {n * k, 2 * inter}));
  KILN_ASSIGN_OR_RETURN(Tensor act, act_.get(DType::kBF16, {n * k, inter}));
  KILN_ASSIGN_OR_RETURN(Tensor yp, moe_d_.get(DType::kBF16, {n * k, c.hidden_size}));
  if (fused) {
    KILN_ASSIGN_OR_RETURN(const HFp8 hq, hq_views(n));  // written by the ffn norm
    KILN_ASSIGN_OR_RETURN(Tensor aq, act_.get(DType::kFp8E4M3, {n * k, inter}));
    KILN_ASSIGN_OR_RETURN(Tensor as, act_scale_.get(DType::kF32, {n * k}));
    MoeDecodeGemmArgs gate_up{hq.q, ids, lw.gate_up_ptrs.tensor, lw.gate_up_scale_ptrs.tensor, wt, 2 * inter, gu};
    gate_up.x_scale = hq.scale;
    gate_up.ids_poll = moe_ids_poll(n);  // the norm before it routes and cleared the ids first
    KILN_RETURN_IF_ERROR(moe_decode_gemm_cuda(gate_up, stream_));
    // The down GEMM launches before the SwiGLU's wait, so its CTAs start in gate_up's tail and
    // request their 16-tile rings there (it waits before it lets the next kernel launch). H100,
    // Mixtral fp8, tok/s, three rounds, one binary (after the wait -> before it): batch 1 192.2 /
    // 193.2 / 193.5 -> 196.5 / 196.4 / 196.2; fp8 KV, 1K prompt 187.6 / 187.3 / 186.7 -> 189.7 /
    // 189.8 / 189.8. Timeline, us a layer: the SwiGLU 4.6 -> 3.8, down after it 44.1 -> 40.5.
    SiluMulFp8Args act_q{gu, aq, as};
    act_q.trigger_early = true;  // (batch 8, `bench latency` decode step: 14.97 / 15.03 -> 14.90 / 14.99 ms)
    KILN_RETURN_IF_ERROR(silu_mul_fp8_cuda(act_q, stream_));
    MoeDecodeGemmArgs down{aq, ids, lw.down_ptrs.tensor, lw.down_scale_ptrs.tensor, wt, c.hidden_size, yp};
    down.x_scale = as;
    down.ids_ready = true;  // the router wrote them two kernels back
    KILN_RETURN_IF_ERROR(moe_decode_gemm_cuda(down, stream_));
    *fused = {yp, weights};  // the next norm sums the slots into the residual
    return ok_status();
  }
  KILN_RETURN_IF_ERROR(moe_decode_gemm_cuda(
      {h, ids, lw.gate_up_ptrs.tensor, lw.gate_up_scale_ptrs.tensor, wt, 2 * inter, gu, moe_x_fp8_.tensor}, stream_));
  KILN_RETURN_IF_ERROR(silu_mul_cuda({gu, act}, stream_));
  KILN_RETURN_IF_ERROR(moe_decode_gemm_cuda(
      {act, ids, lw.down_ptrs.tensor, lw.down_scale_ptrs.tensor, wt, c.hidden_size, yp, moe_x_fp8_.tensor}, stream_));
  // Slots are already in (token, choice) order: the un-permute is a weighted sum over identity rows.
  const Tensor inverse = Tensor::view(identity_rows_.tensor.data, DType::kInt32, {n * k}, Device::kCuda);
  return moe_unpermute_cuda({yp, weights, inverse, x}, stream_);
}

}  // namespace kiln::cuda_llama
#endif  // KILN_WITH_CUDA
