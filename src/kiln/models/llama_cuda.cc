// CudaLlamaModel forward: the same layer sequence as llama.cc, on device tensors.
//   embed -> [rmsnorm, qkv GEMM, RoPE + paged KV write, paged attention, o GEMM,
//   rmsnorm(+residual), gate_up GEMM, silu_mul, down GEMM (or MoE), rmsnorm(+residual)] -> lm head
// Scratch buffers grow to the largest step seen; batch metadata is uploaded once per step.
// Decode steps of dense models are captured once per shape and replayed as CUDA graphs
// (KILN_CUDA_GRAPHS=0 turns that off); everything runs on the model's own stream.
#include "kiln/models/llama_cuda.h"

#ifndef KILN_WITH_CUDA
namespace kiln {
Result<std::unique_ptr<Model>> create_cuda_model(LoadedModel&& loaded, const ModelOptions&) {
  return unimplemented(loaded.path + ": --device cuda needs a build with KILN_CUDA=ON (this kiln is CPU-only)");
}
}  // namespace kiln
#else
#include <cuda_runtime.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <tuple>

#include "kiln/core/log.h"
#include "kiln/kernels/activation.h"
#include "kiln/kernels/attention.h"
#include "kiln/kernels/attention_hopper.h"
#include "kiln/kernels/embedding.h"
#include "kiln/kernels/gemm_cuda.h"
#include "kiln/kernels/moe.h"
#include "kiln/kernels/moe_cuda.h"
#include "kiln/kernels/quantize.h"
#include "kiln/kernels/rmsnorm.h"
#include "kiln/kernels/rope.h"
#include "kiln/kernels/sampling_cuda.h"
#include "kiln/kernels/silu_mul_fp8.h"
#include "kiln/models/llama_cuda_weights.h"

namespace kiln {
namespace {

Status cuda_status(cudaError_t e, const char* what) {
  return e == cudaSuccess ? ok_status() : internal_error(std::string(what) + ": " + cudaGetErrorString(e));
}

// Bumped whenever a scratch buffer moves: captured CUDA graphs hold its old address.
int64_t g_scratch_generation = 0;

// A device buffer that only grows.
struct Scratch {
  DeviceBuffer buf;
  Result<Tensor> get(DType dtype, std::initializer_list<int64_t> shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    const int64_t bytes = dtype_bytes(dtype, std::max<int64_t>(n, 1));
    if (buf.size() < bytes) {
      buf = DeviceBuffer{};
      KILN_ASSIGN_OR_RETURN(buf, DeviceBuffer::alloc(bytes + bytes / 4));
      ++g_scratch_generation;
    }
    return Tensor::view(buf.data(), dtype, shape, Device::kCuda);
  }
};

// A strided view of columns [col, col + heads * d) of a [n, width] matrix as [n, heads, d].
Tensor head_view(const Tensor& m, int64_t col, int64_t heads, int64_t d) {
  Tensor t = Tensor::view(static_cast<char*>(m.data) + dtype_bytes(m.dtype, col), m.dtype, {m.shape[0], heads, d}, Device::kCuda);
  t.strides[0] = m.strides[0];
  return t;
}

class CudaLlamaModel : public Model {
 public:
  CudaLlamaModel(ModelConfig c, CudaDecoderWeights w, Gemm gemm, CudaSampler sampler, const ModelOptions& o)
      : config_(std::move(c)), w_(std::move(w)), gemm_(std::move(gemm)), sampler_(std::move(sampler)), options_(o) {}
  ~CudaLlamaModel() override {
    for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
    if (stream_) cudaStreamDestroy(stream_);
    if (upload_done_) cudaEventDestroy(upload_done_);
  }
  Status init() {
    KILN_RETURN_IF_ERROR(cuda_status(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "stream"));
    KILN_RETURN_IF_ERROR(cuda_status(cudaEventCreateWithFlags(&upload_done_, cudaEventDisableTiming), "event"));
    auto on = [](const char* name) { const char* v = std::getenv(name); return !(v && std::string(v) == "0"); };
    use_graphs_ = on("KILN_CUDA_GRAPHS");
    use_hopper_ = on("KILN_HOPPER_PREFILL");
    fused_act_quant_ = on("KILN_FUSED_ACT_QUANT");
    use_hopper_vt_ = on("KILN_HOPPER_VT");
    moe_fused_ = on("KILN_MOE_FUSED");
    split_attention_ = on("KILN_SPLIT_ATTENTION");
    // KILN_MOE_DECODE: 0 = never the MoE decode kernel, N = up to N (token, expert) slots.
    const char* moe = std::getenv("KILN_MOE_DECODE");
    if (moe && *moe) moe_decode_slots_ = std::clamp<int64_t>(std::atoll(moe), 0, kMoeDecodeMaxSlots);
    std::vector<int32_t> iota(static_cast<size_t>(kMoeDecodeMaxSlots));
    for (size_t i = 0; i < iota.size(); ++i) iota[i] = static_cast<int32_t>(i);
    KILN_ASSIGN_OR_RETURN(identity_rows_, to_device(Tensor::view(iota.data(), DType::kInt32, {kMoeDecodeMaxSlots})));
    // KILN_MOE_X_FP8=0: no x workspace, so fp8 MoE decode keeps bf16 x (the f16-widening row).
    if (on("KILN_MOE_X_FP8") && config_.num_experts > 0 && !w_.layers.empty() && !w_.layers[0].experts.empty() &&
        w_.layers[0].experts[0].gate_up.tensor.dtype == DType::kFp8E4M3) {
      // x of the MoE decode GEMMs: up to kMoeDecodeMaxSlots rows of max(hidden, intermediate).
      const int64_t bytes = moe_decode_gemm_workspace_bytes(
          kMoeDecodeMaxSlots, std::max<int64_t>(config_.hidden_size, config_.intermediate_size));
      KILN_ASSIGN_OR_RETURN(moe_x_fp8_, DeviceTensor::empty(DType::kFp8E4M3, {bytes}));
    }
    const auto inv = rope_inv_freq(config_.head_dim, config_.rope_theta, config_.rope_scaling);
    KILN_ASSIGN_OR_RETURN(inv_freq_, to_device(Tensor::view(const_cast<float*>(inv.data()), DType::kF32,
                                                            {static_cast<int64_t>(inv.size())})));
    return ok_status();
  }
  const ModelConfig& config() const override { return config_; }
  Device device() const override { return Device::kCuda; }
  Result<KvCacheView> allocate_kv_cache(int64_t num_blocks, int64_t block_size) override;
  int64_t max_kv_blocks(int64_t block_size, double memory_fraction) const override;
  DType kv_dtype() const { return options_.fp8_kv_cache ? DType::kFp8E4M3 : DType::kBF16; }
  Status forward(const ForwardBatch& batch, const KvCacheView& kv, Tensor logits) override;
  bool samples_on_device() const override { return true; }
  Status forward_sample(const ForwardBatch& batch, const KvCacheView& kv, const std::vector<SamplingParams>& params,
                        const std::vector<uint64_t>& steps, const std::vector<std::pair<int32_t, int32_t>>& banned,
                        std::vector<int32_t>* ids) override;

 private:
  Status forward_device(const ForwardBatch& b, const KvCacheView& kv);  // to the logits_rows' f32 logits in logits_
  // Page-locked host staging (batch metadata up, sampled ids down): async copies, no bounce buffer.
  struct Pinned {
    int32_t* data = nullptr;  // count int32 elements
    int64_t count = 0;
    ~Pinned() { if (data) cudaFreeHost(data); }
    Result<int32_t*> get(int64_t n);
  };
  Status upload_batch(const ForwardBatch& b);
  Status run_layers(const ForwardBatch& b, int64_t n, int64_t rows, const KvCacheView& kv);  // embedding .. logits_ (rows)
  Status run_decode_graph(const ForwardBatch& b, int64_t n, const KvCacheView& kv);  // a CUDA graph per shape
  Status attention(const CudaLayerWeights& lw, int64_t layer, const KvCacheView& kv, int64_t n);
  // The Hopper prefill kernel over a's sequences (kv_lens summing to kv_tokens; fp8: hopper_vt_).
  Status hopper_prefill(const PagedAttentionArgs& a, int64_t kv_tokens);
  // The fused fp8 MoE decode step: the ffn norm routes and writes h also as per-token fp8 (moe_hq_) for
  // the expert GEMMs (silu_mul_fp8 for down); the next norm sums each token's k expert rows (y).
  struct MoeSlots {
    Tensor y;        // [n * k, hidden] bf16: each slot's expert output
    Tensor weights;  // [n, k] f32
  };
  Status ffn(const CudaLayerWeights& lw, int64_t n, MoeSlots* fused);
  bool moe_decode_path(const CudaLayerWeights& lw, int64_t n) const;
  bool moe_fused_path(const CudaLayerWeights& lw, int64_t n) const;
  Status moe_decode(const CudaLayerWeights& lw, int64_t n, int64_t k, MoeSlots* fused);
  Result<MoeRouteArgs> moe_route_args(const CudaLayerWeights& lw, int64_t n, int64_t k);
  int64_t moe_top_k() const { return options_.moe_top_k > 0 ? options_.moe_top_k : config_.num_experts_per_tok; }

  ModelConfig config_;
  CudaDecoderWeights w_;
  Gemm gemm_;
  CudaSampler sampler_;
  ModelOptions options_;
  DeviceTensor inv_freq_;
  Scratch meta_, residual_, h_, x_, qkv_, q_, attn_, gate_up_, act_, rows_, logits_, moe_a_, moe_b_, moe_c_, moe_d_;
  Scratch act_scale_;  // [rows] f32: per-row scales of the fp8 SwiGLU output (silu_mul_fp8_cuda)
  Scratch moe_hq_, moe_hs_;  // fused fp8 MoE decode: the ffn norm's output as per-token e4m3 and its scales
  // Switches, on unless 0: KILN_MOE_FUSED (MoeSlots), KILN_FUSED_ACT_QUANT (fp8 prefill: silu_mul_fp8, MoE x once),
  // KILN_SPLIT_ATTENTION (mixed steps' decodes), KILN_HOPPER_VT, KILN_CUDA_GRAPHS, KILN_HOPPER_PREFILL.
  bool moe_fused_ = true, fused_act_quant_ = true, split_attention_ = true, use_hopper_vt_ = true, use_graphs_ = true,
       use_hopper_ = true;
  Tensor ids_, positions_, slots_, cu_, kv_lens_, tables_;
  int64_t decode_seqs_ = 0;  // leading single-token sequences; prompt_cu_: the others' cu_seqlens from 0
  std::vector<int32_t> prompt_cu_;
  Tensor prompt_cu_dev_;
  int64_t kv_tokens_ = 0, decode_kv_tokens_ = 0;  // sums of the step's kv_lens: all, the leading decodes'
  Scratch hopper_vt_;  // fp8 prefill attention: V transposed per KV head (hopper_prefill_workspace_bytes)
  std::vector<int32_t> host_meta_;
  Pinned meta_staging_, ids_staging_;
  cudaEvent_t upload_done_ = nullptr;  // the last metadata upload has left meta_staging_
  Scratch sampled_;
  cudaStream_t stream_ = nullptr;
  // MoE decode steps of up to moe_decode_slots_ (token, expert) slots take moe_decode_gemm_cuda (-1: by dtype;
  // H100: bf16 up to 32, 30.6 vs 26.6 ms grouped at 32 tokens; fp8, the wgmma row, kMoeDecodeMaxSlots).
  int64_t moe_decode_slots_ = -1;
  DeviceTensor moe_x_fp8_;  // fp8 experts: the MoE decode GEMM's x workspace (fixed: graphs capture it)
  DeviceTensor identity_rows_;  // [kMoeDecodeMaxSlots] int32 0, 1, 2, ...
  int64_t batch_ = 0;       // sequences in the current step
  // (tokens, table width, cache, scratch generation, GEMM workspace generation) -> decode graph
  std::map<std::tuple<int64_t, int64_t, const void*, int64_t, int64_t>, cudaGraphExec_t> graphs_;
};

Status CudaLlamaModel::upload_batch(const ForwardBatch& b) {
  const int64_t n = static_cast<int64_t>(b.token_ids.size()), batch = static_cast<int64_t>(b.kv_lens.size());
  for (int32_t id : b.token_ids)
    if (id < 0 || id >= config_.vocab_size) return out_of_range("token id " + std::to_string(id) + " outside the vocabulary");
  host_meta_.clear();
  // Leading single-token sequences (decodes first): in steps with prompt tokens their attention takes the
  // decode kernel, the rest the prefill kernel, whose cu_seqlens (rebased to 0) ride along as part seven.
  decode_seqs_ = 0;
  while (decode_seqs_ < batch && b.cu_seqlens_q[static_cast<size_t>(decode_seqs_) + 1] - b.cu_seqlens_q[static_cast<size_t>(decode_seqs_)] == 1)
    ++decode_seqs_;
  kv_tokens_ = decode_kv_tokens_ = 0;
  for (int64_t i = 0; i < batch; ++i) {
    kv_tokens_ += b.kv_lens[static_cast<size_t>(i)];
    if (i < decode_seqs_) decode_kv_tokens_ += b.kv_lens[static_cast<size_t>(i)];
  }
  prompt_cu_.clear();
  for (int64_t i = decode_seqs_; i <= batch; ++i)
    prompt_cu_.push_back(b.cu_seqlens_q[static_cast<size_t>(i)] - b.cu_seqlens_q[static_cast<size_t>(decode_seqs_)]);
  const std::vector<int32_t>* parts[] = {&b.token_ids, &b.positions, &b.slot_mapping, &b.cu_seqlens_q, &b.kv_lens, &b.block_tables,
                                         &prompt_cu_};
  std::vector<int64_t> offsets;
  for (const auto* p : parts) {
    offsets.push_back(static_cast<int64_t>(host_meta_.size()));
    host_meta_.insert(host_meta_.end(), p->begin(), p->end());
  }
  KILN_ASSIGN_OR_RETURN(Tensor all, meta_.get(DType::kInt32, {static_cast<int64_t>(host_meta_.size())}));
  KILN_RETURN_IF_ERROR(cuda_status(cudaEventSynchronize(upload_done_), "upload wait"));  // staging is free again
  KILN_ASSIGN_OR_RETURN(int32_t* staging, meta_staging_.get(static_cast<int64_t>(host_meta_.size())));
  std::memcpy(staging, host_meta_.data(), host_meta_.size() * 4);
  KILN_RETURN_IF_ERROR(cuda_status(cudaMemcpyAsync(all.data, staging, host_meta_.size() * 4, cudaMemcpyHostToDevice, stream_), "upload batch"));
  KILN_RETURN_IF_ERROR(cuda_status(cudaEventRecord(upload_done_, stream_), "upload event"));
  auto at = [&](int i, std::initializer_list<int64_t> shape) {
    return Tensor::view(all.ptr<int32_t>() + offsets[static_cast<size_t>(i)], DType::kInt32, shape, Device::kCuda);
  };
  ids_ = at(0, {n});
  positions_ = at(1, {n});
  slots_ = at(2, {n});
  cu_ = at(3, {batch + 1});
  kv_lens_ = at(4, {batch});
  tables_ = at(5, {batch, b.max_blocks_per_seq});
  prompt_cu_dev_ = at(6, {batch - decode_seqs_ + 1});
  return ok_status();
}

Status CudaLlamaModel::attention(const CudaLayerWeights& lw, int64_t layer, const KvCacheView& kv, int64_t n) {
  const ModelConfig& c = config_;
  const int64_t d = c.head_dim, hq = c.num_q_heads, hkv = c.num_kv_heads, width = (hq + 2 * hkv) * d;
  KILN_ASSIGN_OR_RETURN(Tensor qkv, qkv_.get(DType::kBF16, {n, width}));
  KILN_ASSIGN_OR_RETURN(Tensor h, h_.get(DType::kBF16, {n, c.hidden_size}));
  KILN_RETURN_IF_ERROR(gemm_.run({h, lw.qkv.tensor, lw.qkv_bias.tensor, qkv, lw.qkv_scale.tensor}, stream_));
  const Tensor q = head_view(qkv, 0, hq, d), k = head_view(qkv, hq * d, hkv, d), v = head_view(qkv, (hq + hkv) * d, hkv, d);
  const Tensor& kc = kv.k[static_cast<size_t>(layer)];
  const Tensor& vc = kv.v[static_cast<size_t>(layer)];
  KILN_ASSIGN_OR_RETURN(Tensor qc, q_.get(DType::kBF16, {n, hq, d}));  // rotated q, dense for attention
  KILN_RETURN_IF_ERROR(rope_kv_write_cuda({q, k, v, positions_, inv_freq_.tensor, slots_, kc, vc, lw.k_scale, lw.v_scale, qc,
                                           options_.hadamard_keys(d)}, stream_));
  KILN_ASSIGN_OR_RETURN(Tensor attn, attn_.get(DType::kBF16, {n, hq, d}));
  PagedAttentionArgs pa{qc, kc, vc, cu_, kv_lens_, tables_, attn, 1.0f / std::sqrt(static_cast<float>(d)), c.sliding_window,
                        lw.k_scale, lw.v_scale};
  // Steps with prompt tokens (n > batch) take the Hopper wgmma kernel where it applies.
  if (n > batch_ && use_hopper_ && hopper_prefill_supported(pa)) {
    if (decode_seqs_ > 0 && split_attention_) {
      // Mixed step: the leading decode tokens take the decode kernel (the prefill kernel would give
      // each its own 128-row query tile), the prompt chunks after them the Hopper kernel.
      const int64_t dq = decode_seqs_;
      PagedAttentionArgs dec = pa, pre = pa;
      dec.q = qc.slice0(0, dq);
      dec.out = attn.slice0(0, dq);
      dec.cu_seqlens_q = cu_.slice0(0, dq + 1);
      dec.kv_lens = kv_lens_.slice0(0, dq);
      dec.block_tables = tables_.slice0(0, dq);
      pre.q = qc.slice0(dq, n);
      pre.out = attn.slice0(dq, n);
      pre.cu_seqlens_q = prompt_cu_dev_;
      pre.kv_lens = kv_lens_.slice0(dq, batch_);
      pre.block_tables = tables_.slice0(dq, batch_);
      KILN_RETURN_IF_ERROR(paged_attention_cuda(dec, stream_));
      KILN_RETURN_IF_ERROR(hopper_prefill(pre, kv_tokens_ - decode_kv_tokens_));
    } else {
      KILN_RETURN_IF_ERROR(hopper_prefill(pa, kv_tokens_));
    }
  } else {
    KILN_RETURN_IF_ERROR(paged_attention_cuda(pa, stream_));
  }
  KILN_ASSIGN_OR_RETURN(Tensor x, x_.get(DType::kBF16, {n, c.hidden_size}));
  return gemm_.run({Tensor::view(attn.data, DType::kBF16, {n, hq * d}, Device::kCuda), lw.o_proj.tensor, {}, x, lw.o_proj_scale.tensor}, stream_);
}

Status CudaLlamaModel::hopper_prefill(const PagedAttentionArgs& a, int64_t kv_tokens) {
  HopperPrefillOptions o;
  const int64_t bytes = use_hopper_vt_ ? hopper_prefill_workspace_bytes(a, kv_tokens) : 0;
  if (bytes > 0) {  // one buffer for every layer: they run in order on the stream
    KILN_ASSIGN_OR_RETURN(Tensor ws, hopper_vt_.get(DType::kInt8, {bytes}));
    o.workspace = ws.data;
    o.workspace_bytes = bytes;
  }
  return prefill_attention_hopper_cuda(a, o, stream_);
}

Status CudaLlamaModel::ffn(const CudaLayerWeights& lw, int64_t n, MoeSlots* fused) {
  const ModelConfig& c = config_;
  KILN_ASSIGN_OR_RETURN(Tensor h, h_.get(DType::kBF16, {n, c.hidden_size}));
  KILN_ASSIGN_OR_RETURN(Tensor x, x_.get(DType::kBF16, {n, c.hidden_size}));
  const int64_t inter = c.intermediate_size;
  if (lw.experts.empty()) {
    KILN_ASSIGN_OR_RETURN(Tensor gu, gate_up_.get(DType::kBF16, {n, 2 * inter}));
    KILN_ASSIGN_OR_RETURN(Tensor act, act_.get(DType::kBF16, {n, inter}));
    KILN_RETURN_IF_ERROR(gemm_.run({h, lw.gate_up.tensor, {}, gu, lw.gate_up_scale.tensor}, stream_));
    if (fused_act_quant_ && lw.down.tensor.dtype == DType::kFp8E4M3 && n > kGemmSkinnyMaxMFp8) {
      // fp8 prefill: SwiGLU straight to per-token fp8 (no bf16 act, no quantization pass in the GEMM)
      KILN_ASSIGN_OR_RETURN(Tensor aq, act_.get(DType::kFp8E4M3, {n, inter}));
      KILN_ASSIGN_OR_RETURN(Tensor as, act_scale_.get(DType::kF32, {n}));
      KILN_RETURN_IF_ERROR(silu_mul_fp8_cuda({gu, aq, as}, stream_));
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
  KILN_ASSIGN_OR_RETURN(std::vector<int32_t> host_offsets, moe_offsets_to_host(offsets, stream_));
  const int64_t rows = host_offsets[static_cast<size_t>(e)];  // n * k plus the alignment gaps
  KILN_ASSIGN_OR_RETURN(Tensor gu, moe_c_.get(DType::kBF16, {rows, 2 * inter}));
  KILN_ASSIGN_OR_RETURN(Tensor yp, moe_d_.get(DType::kBF16, {rows, c.hidden_size}));
  int32_t min_rows = std::numeric_limits<int32_t>::max();
  for (size_t i = 0; i + 1 < host_offsets.size(); ++i)
    if (host_offsets[i + 1] > host_offsets[i]) min_rows = std::min(min_rows, host_offsets[i + 1] - host_offsets[i]);
  if (fp8 && (min_rows > kGemmSkinnyMaxMFp8 || n * k >= 1024)) {  // no expert in the decode-kernel range: x, SwiGLU fp8
    KILN_ASSIGN_OR_RETURN(Tensor aq, act_.get(DType::kFp8E4M3, {rows, std::max(inter, c.hidden_size)}));
    const Tensor xq = Tensor::view(aq.data, DType::kFp8E4M3, {rows, c.hidden_size}, Device::kCuda);  // read before aq's write
    KILN_ASSIGN_OR_RETURN(Tensor scales, act_scale_.get(DType::kF32, {rows}));  // x's, then the SwiGLU output's
    KILN_RETURN_IF_ERROR(quantize_fp8_cuda({xp.slice0(0, rows), xq, scales}, stream_));
    KILN_RETURN_IF_ERROR(moe_grouped_gemm_cuda(gemm_, {xq, lw.expert_gate_up, host_offsets, gu, lw.expert_gate_up_scale, scales}, stream_));
    aq = Tensor::view(aq.data, DType::kFp8E4M3, {rows, inter}, Device::kCuda);
    KILN_RETURN_IF_ERROR(silu_mul_fp8_cuda({gu, aq, scales}, stream_));
    KILN_RETURN_IF_ERROR(moe_grouped_gemm_cuda(gemm_, {aq, lw.expert_down, host_offsets, yp, lw.expert_down_scale, scales}, stream_));
    return moe_unpermute_cuda({yp, weights, inverse, x}, stream_);
  }
  KILN_RETURN_IF_ERROR(moe_grouped_gemm_cuda(gemm_, {xp.slice0(0, rows), lw.expert_gate_up, host_offsets, gu, lw.expert_gate_up_scale}, stream_));
  KILN_ASSIGN_OR_RETURN(Tensor act, act_.get(DType::kBF16, {rows, inter}));
  KILN_RETURN_IF_ERROR(silu_mul_cuda({gu, act}, stream_));
  KILN_RETURN_IF_ERROR(moe_grouped_gemm_cuda(gemm_, {act, lw.expert_down, host_offsets, yp, lw.expert_down_scale}, stream_));
  return moe_unpermute_cuda({yp, weights, inverse, x}, stream_);
}

Result<int32_t*> CudaLlamaModel::Pinned::get(int64_t n) {
  if (n > count) {
    if (data) cudaFreeHost(data);
    data = nullptr, count = 0;
    const int64_t want = std::max<int64_t>(n + n / 2, 4096);
    KILN_RETURN_IF_ERROR(cuda_status(cudaMallocHost(reinterpret_cast<void**>(&data), static_cast<size_t>(want) * 4), "pinned staging"));
    count = want;
  }
  return data;
}

Status CudaLlamaModel::forward_device(const ForwardBatch& b, const KvCacheView& kv) {
  const ModelConfig& c = config_;
  const int64_t n = static_cast<int64_t>(b.token_ids.size()), batch = static_cast<int64_t>(b.kv_lens.size());
  const int64_t rows = static_cast<int64_t>(b.logits_rows.size());
  if (n == 0 || b.positions.size() != b.token_ids.size() || b.slot_mapping.size() != b.token_ids.size() ||
      static_cast<int64_t>(kv.k.size()) != c.num_layers || kv.k[0].device != Device::kCuda)
    return invalid_argument("forward: empty batch, inconsistent sizes, or a KV cache not on the GPU");
  KILN_RETURN_IF_ERROR(upload_batch(b));
  batch_ = batch;
  bool decode = n == batch && rows == n && (!c.num_experts || moe_decode_path(w_.layers[0], n));
  for (int64_t r = 0; decode && r < rows; ++r) decode = b.logits_rows[static_cast<size_t>(r)] == r;
  if (decode && use_graphs_) return run_decode_graph(b, n, kv);
  return run_layers(b, n, rows, kv);
}

// Few (token, expert) slots: the expert GEMMs read the routing ids on the device, so there is no
// host round trip for the expert offsets and the step can be captured in a CUDA graph.
bool CudaLlamaModel::moe_decode_path(const CudaLayerWeights& lw, int64_t n) const {
  const int64_t k = options_.moe_top_k > 0 ? options_.moe_top_k : config_.num_experts_per_tok;
  if (moe_decode_slots_ == 0 || lw.gate_up_ptrs.tensor.empty() || n * k > static_cast<int64_t>(identity_rows_.tensor.numel()))
    return false;
  const bool fp8 = lw.experts[0].gate_up.tensor.dtype == DType::kFp8E4M3;
  if (n * k > (moe_decode_slots_ >= 0 ? moe_decode_slots_ : fp8 && !moe_x_fp8_.tensor.empty() ? kMoeDecodeMaxSlots : 32))
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
    KILN_ASSIGN_OR_RETURN(Tensor hq, moe_hq_.get(DType::kFp8E4M3, {n, c.hidden_size}));  // written by the ffn norm
    KILN_ASSIGN_OR_RETURN(Tensor hs, moe_hs_.get(DType::kF32, {n}));
    KILN_ASSIGN_OR_RETURN(Tensor aq, act_.get(DType::kFp8E4M3, {n * k, inter}));
    KILN_ASSIGN_OR_RETURN(Tensor as, act_scale_.get(DType::kF32, {n * k}));
    MoeDecodeGemmArgs gate_up{hq, ids, lw.gate_up_ptrs.tensor, lw.gate_up_scale_ptrs.tensor, wt, 2 * inter, gu};
    gate_up.x_scale = hs;
    KILN_RETURN_IF_ERROR(moe_decode_gemm_cuda(gate_up, stream_));
    KILN_RETURN_IF_ERROR(silu_mul_fp8_cuda({gu, aq, as}, stream_));
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

Status CudaLlamaModel::forward(const ForwardBatch& b, const KvCacheView& kv, Tensor logits) {
  const ModelConfig& c = config_;
  const int64_t rows = static_cast<int64_t>(b.logits_rows.size());
  if (logits.shape[0] != rows || logits.shape[1] != c.vocab_size || logits.dtype != DType::kF32)
    return invalid_argument("forward: logits must be f32 [" + std::to_string(rows) + ", " + std::to_string(c.vocab_size) + "]");
  KILN_RETURN_IF_ERROR(forward_device(b, kv));
  KILN_ASSIGN_OR_RETURN(Tensor dl, logits_.get(DType::kF32, {rows, c.vocab_size}));
  if (logits.device == Device::kCuda) {
    return cuda_status(cudaMemcpyAsync(logits.data, dl.data, static_cast<size_t>(dl.nbytes()), cudaMemcpyDeviceToDevice, stream_), "logits");
  }
  KILN_RETURN_IF_ERROR(cuda_status(cudaMemcpyAsync(logits.data, dl.data, static_cast<size_t>(dl.nbytes()), cudaMemcpyDeviceToHost, stream_), "logits"));
  return cuda_status(cudaStreamSynchronize(stream_), "forward");
}

Status CudaLlamaModel::forward_sample(const ForwardBatch& b, const KvCacheView& kv, const std::vector<SamplingParams>& params,
                                      const std::vector<uint64_t>& steps, const std::vector<std::pair<int32_t, int32_t>>& banned,
                                      std::vector<int32_t>* ids) {
  const int64_t rows = static_cast<int64_t>(b.logits_rows.size());
  if (static_cast<int64_t>(params.size()) != rows || static_cast<int64_t>(steps.size()) != rows)
    return invalid_argument("forward_sample: one sampling parameter set and step per logits row");
  KILN_RETURN_IF_ERROR(forward_device(b, kv));
  ids->assign(static_cast<size_t>(rows), -1);
  if (rows == 0) return cuda_status(cudaStreamSynchronize(stream_), "forward");
  KILN_ASSIGN_OR_RETURN(Tensor dl, logits_.get(DType::kF32, {rows, config_.vocab_size}));
  KILN_ASSIGN_OR_RETURN(Tensor dev_ids, sampled_.get(DType::kInt32, {rows}));
  SampleArgs args{dl, params, steps, dev_ids, banned};
  KILN_RETURN_IF_ERROR(sampler_.sample(args, stream_));
  KILN_ASSIGN_OR_RETURN(int32_t* staging, ids_staging_.get(rows));
  KILN_RETURN_IF_ERROR(cuda_status(cudaMemcpyAsync(staging, dev_ids.data, static_cast<size_t>(rows) * 4, cudaMemcpyDeviceToHost, stream_), "ids"));
  KILN_RETURN_IF_ERROR(cuda_status(cudaStreamSynchronize(stream_), "forward"));
  std::memcpy(ids->data(), staging, static_cast<size_t>(rows) * 4);
  return ok_status();
}

Status CudaLlamaModel::run_decode_graph(const ForwardBatch& b, int64_t n, const KvCacheView& kv) {
  // Scratch buffers and the GEMM's fp8 activation workspace grow on demand: a graph captured
  // before a growth would replay freed addresses, so both generations are in the key.
  const auto key = std::make_tuple(n, static_cast<int64_t>(b.max_blocks_per_seq), kv.k[0].data, g_scratch_generation,
                                   gemm_.workspace_generation());
  auto it = graphs_.find(key);
  if (it != graphs_.end()) return cuda_status(cudaGraphLaunch(it->second, stream_), "graph launch");
  // Graphs of older generations hold freed addresses: drop them.
  for (auto g = graphs_.begin(); g != graphs_.end();) {
    if (std::get<3>(g->first) == std::get<3>(key) && std::get<4>(g->first) == std::get<4>(key)) {
      ++g;
      continue;
    }
    cudaGraphExecDestroy(g->second);
    g = graphs_.erase(g);
  }
  // First step of this shape: run eagerly (sizes every buffer), then capture the same work.
  KILN_RETURN_IF_ERROR(run_layers(b, n, n, kv));
  const int64_t generation = g_scratch_generation, gemm_generation = gemm_.workspace_generation();
  KILN_RETURN_IF_ERROR(cuda_status(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "capture"));
  const Status captured = run_layers(b, n, n, kv);
  cudaGraph_t graph = nullptr;
  const cudaError_t end = cudaStreamEndCapture(stream_, &graph);
  if (!captured.ok() || end != cudaSuccess || generation != g_scratch_generation ||
      gemm_generation != gemm_.workspace_generation()) {
    if (graph) cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    use_graphs_ = false;  // this model cannot be captured: stay eager (the eager result stands)
    log_warn("cuda graphs off: capture failed (", captured.ok() ? cudaGetErrorString(end) : captured.message(), ")");
    return ok_status();
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (inst != cudaSuccess) {
    use_graphs_ = false;
    log_warn("cuda graphs off: instantiate failed (", cudaGetErrorString(inst), ")");
    return ok_status();
  }
  graphs_[std::make_tuple(n, static_cast<int64_t>(b.max_blocks_per_seq), kv.k[0].data, generation, gemm_generation)] = exec;
  return ok_status();
}

Status CudaLlamaModel::run_layers(const ForwardBatch& b, int64_t n, int64_t rows, const KvCacheView& kv) {
  const ModelConfig& c = config_;
  const int64_t hidden = c.hidden_size;
  KILN_ASSIGN_OR_RETURN(Tensor residual, residual_.get(DType::kBF16, {n, hidden}));
  KILN_ASSIGN_OR_RETURN(Tensor h, h_.get(DType::kBF16, {n, hidden}));
  KILN_ASSIGN_OR_RETURN(Tensor x, x_.get(DType::kBF16, {n, hidden}));
  KILN_RETURN_IF_ERROR(embedding_cuda({ids_, w_.embed.tensor, residual}, stream_));
  KILN_RETURN_IF_ERROR(rmsnorm_cuda({residual, {}, w_.layers[0].attn_norm.tensor, h, c.rms_norm_eps}, stream_));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const CudaLayerWeights& lw = w_.layers[static_cast<size_t>(l)];
    KILN_RETURN_IF_ERROR(attention(lw, l, kv, n));
    const bool fused = moe_fused_path(lw, n);
    RmsNormArgs ffn_norm{x, residual, lw.ffn_norm.tensor, h, c.rms_norm_eps};
    MoeRouteArgs route;
    if (fused) {  // + per-token fp8 h and the router
      KILN_ASSIGN_OR_RETURN(ffn_norm.out_q, moe_hq_.get(DType::kFp8E4M3, {n, hidden}));
      KILN_ASSIGN_OR_RETURN(ffn_norm.out_scale, moe_hs_.get(DType::kF32, {n}));
      KILN_ASSIGN_OR_RETURN(route, moe_route_args(lw, n, moe_top_k()));
      ffn_norm.route = &route;
    }
    KILN_RETURN_IF_ERROR(rmsnorm_cuda(ffn_norm, stream_));
    MoeSlots slots;
    KILN_RETURN_IF_ERROR(ffn(lw, n, fused ? &slots : nullptr));
    const Tensor& next = l + 1 < c.num_layers ? w_.layers[static_cast<size_t>(l + 1)].attn_norm.tensor : w_.norm.tensor;
    RmsNormArgs next_norm{x, residual, next, h, c.rms_norm_eps};
    if (fused) next_norm.x = slots.y, next_norm.slot_weights = slots.weights;
    KILN_RETURN_IF_ERROR(rmsnorm_cuda(next_norm, stream_));
  }
  KILN_ASSIGN_OR_RETURN(Tensor sel, rows_.get(DType::kBF16, {rows, hidden}));
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t row = b.logits_rows[static_cast<size_t>(r)];
    if (row < 0 || row >= n) return invalid_argument("forward: logits row out of range");
    KILN_RETURN_IF_ERROR(cuda_status(cudaMemcpyAsync(sel.ptr<uint16_t>() + r * hidden, h.ptr<uint16_t>() + row * hidden,
                                                     static_cast<size_t>(hidden) * 2, cudaMemcpyDeviceToDevice, stream_), "row gather"));
  }
  KILN_ASSIGN_OR_RETURN(Tensor dl, logits_.get(DType::kF32, {rows, c.vocab_size}));
  return gemm_.run({sel, w_.lm_head_view(), {}, dl}, stream_);
}

Result<KvCacheView> CudaLlamaModel::allocate_kv_cache(int64_t num_blocks, int64_t block_size) {
  const ModelConfig& c = config_;
  auto storage = std::make_shared<std::vector<DeviceTensor>>();
  KvCacheView view;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      KILN_ASSIGN_OR_RETURN(DeviceTensor t, DeviceTensor::empty(kv_dtype(), {num_blocks, block_size, c.num_kv_heads, c.head_dim}));
      (kv == 0 ? view.k : view.v).push_back(t.tensor);
      storage->push_back(std::move(t));
    }
  }
  view.owner = storage;
  return view;
}

int64_t CudaLlamaModel::max_kv_blocks(int64_t block_size, double memory_fraction) const {
  size_t free_bytes = 0, total = 0;
  if (cudaMemGetInfo(&free_bytes, &total) != cudaSuccess) return 0;
  const ModelConfig& c = config_;
  const int64_t per_block = 2 * c.num_layers * dtype_bytes(kv_dtype(), block_size * c.num_kv_heads * c.head_dim);
  const double reserve = 2.0 * (1ll << 30);  // activations, cuBLAS workspace
  const double usable = std::max(0.0, static_cast<double>(free_bytes) * memory_fraction - reserve);
  return static_cast<int64_t>(usable / static_cast<double>(per_block));
}

}  // namespace

Result<std::unique_ptr<Model>> create_cuda_model(LoadedModel&& loaded, const ModelOptions& options) {
  if (!cuda_available()) return unimplemented("--device cuda: no usable CUDA device (" + cuda_device_summary() + ")");
  log_info("cuda: ", cuda_device_summary());
  CudaDecoderWeights w;
  if (options.dummy_weights) {
    KILN_ASSIGN_OR_RETURN(w, dummy_decoder_weights(loaded.config, 1234, options));
  } else {
    KILN_ASSIGN_OR_RETURN(DecoderWeights host, build_decoder_weights(loaded, options));
    KILN_ASSIGN_OR_RETURN(w, upload_decoder_weights(host));
  }
  KILN_ASSIGN_OR_RETURN(Gemm gemm, Gemm::create());
  KILN_ASSIGN_OR_RETURN(CudaSampler sampler, CudaSampler::create());
  auto model = std::make_unique<CudaLlamaModel>(loaded.config, std::move(w), std::move(gemm), std::move(sampler), options);
  KILN_RETURN_IF_ERROR(model->init());
  return std::unique_ptr<Model>(std::move(model));
}

}  // namespace kiln
#endif
