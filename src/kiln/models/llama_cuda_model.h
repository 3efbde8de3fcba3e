// CudaLlamaModel's declaration, shared by its files (llama_cuda.cc: batch upload, attention,
// layers, graphs, cache; llama_cuda_moe.cc: the feed-forward block and the MoE paths). Internal to
// the CUDA build; the public entry point is llama_cuda.h's create_cuda_model.
#pragma once
#ifdef KILN_WITH_CUDA
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <string>
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

namespace kiln::cuda_llama {

inline Status cuda_status(cudaError_t e, const char* what) {
  return e == cudaSuccess ? ok_status() : internal_error(std::string(what) + ": " + cudaGetErrorString(e));
}

// Bumped whenever a scratch buffer that decode graphs read moves: they hold its old address.
extern int64_t g_scratch_generation;

// A device buffer that only grows.
struct Scratch {
  DeviceBuffer buf;
  bool in_graphs = true;  // false: never read by a decode graph, so a growth leaves them valid
  Result<Tensor> get(DType dtype, std::initializer_list<int64_t> shape) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    const int64_t bytes = dtype_bytes(dtype, std::max<int64_t>(n, 1));
    if (buf.size() < bytes) {
      buf = DeviceBuffer{};
      KILN_ASSIGN_OR_RETURN(buf, DeviceBuffer::alloc(bytes + bytes / 4));
      if (in_graphs) ++g_scratch_generation;
      std::string dims;
      for (int64_t d : shape) dims += (dims.empty() ? "" : " x ") + std::to_string(d);
      log_debug("scratch grows to ", bytes + bytes / 4, " bytes for ", dtype_name(dtype), " [", dims,
                "] (generation ", g_scratch_generation, ")");
    }
    return Tensor::view(buf.data(), dtype, shape, Device::kCuda);
  }
};

// A strided view of columns [col, col + heads * d) of a [n, width] matrix as [n, heads, d].
inline Tensor head_view(const Tensor& m, int64_t col, int64_t heads, int64_t d) {
  Tensor t = Tensor::view(static_cast<char*>(m.data) + dtype_bytes(m.dtype, col), m.dtype, {m.shape[0], heads, d}, Device::kCuda);
  t.strides[0] = m.strides[0];
  return t;
}

class CudaLlamaModel : public Model {
 public:
  CudaLlamaModel(ModelConfig c, CudaDecoderWeights w, Gemm gemm, CudaSampler sampler, const ModelOptions& o)
      : config_(std::move(c)), w_(std::move(w)), gemm_(std::move(gemm)), sampler_(std::move(sampler)), options_(o) {}
  ~CudaLlamaModel() override {
    for (auto& [key, g] : graphs_) cudaGraphExecDestroy(g.exec);
    if (stream_) cudaStreamDestroy(stream_);
    if (upload_done_) cudaEventDestroy(upload_done_);
    if (offsets_ready_) cudaEventDestroy(offsets_ready_);
  }
  // Decode graphs held now, and captured since creation (tests).
  int64_t num_graphs() const { return static_cast<int64_t>(graphs_.size()); }
  int64_t graph_captures() const { return graph_captures_; }
  // Nodes of the last captured decode graph that are not kernels (copies, memsets, allocations):
  // each one cuts the chain of programmatic dependent launches.
  int64_t last_graph_other_nodes() const { return last_graph_other_nodes_; }
  // Layers launched (or captured into a decode graph) with RoPE inside decode attention
  // (KILN_FUSED_ROPE) so far; graph replays are not counted.
  int64_t fused_rope_layers() const { return fused_rope_layers_; }
  Status init() {
    KILN_RETURN_IF_ERROR(cuda_status(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "stream"));
    KILN_RETURN_IF_ERROR(cuda_status(cudaEventCreateWithFlags(&upload_done_, cudaEventDisableTiming), "event"));
    KILN_RETURN_IF_ERROR(cuda_status(cudaEventCreateWithFlags(&offsets_ready_, cudaEventDisableTiming), "event"));
    auto on = [](const char* name) { const char* v = std::getenv(name); return !(v && std::string(v) == "0"); };
    use_graphs_ = on("KILN_CUDA_GRAPHS");
    hopper_vt_.in_graphs = false;  // prefill attention only; it grows with the prompts' keys
    pad_decode_ = on("KILN_CUDA_GRAPH_PAD");
    if (const char* v = std::getenv("KILN_CUDA_GRAPH_CAP")) max_graphs_ = std::max<int64_t>(1, std::atoll(v));
    use_hopper_ = on("KILN_HOPPER_PREFILL");
    fused_act_quant_ = on("KILN_FUSED_ACT_QUANT");
    use_hopper_vt_ = on("KILN_HOPPER_VT");
    moe_fused_ = on("KILN_MOE_FUSED");
    split_attention_ = on("KILN_SPLIT_ATTENTION");
    // KILN_FUSED_ROPE: 0 = never, 1 (default) = bf16 caches, 2 = fp8 caches too. H100, batch-1
    // decode, tok/s, KILN_FUSED_ROPE=0 -> 2 in one call: Llama-3-8B fp8 weights, bf16 KV 270.1 ->
    // 278.8; fp8 KV (rotated keys) 272.9 -> 269.4; Mixtral fp8 + fp8 KV 170.9 -> 170.4. With the
    // fp8 writer warp's loads batched (69235f1): 269.6 -> 269.1, 175.6 -> 175.4, keys not rotated
    // 266.7 -> 269.7 (three rounds): no gain, so the fp8 caches keep the RoPE kernel by default.
    if (const char* v = std::getenv("KILN_FUSED_ROPE"); v && *v) fused_rope_ = std::clamp(std::atoi(v), 0, 2);
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
    KILN_RETURN_IF_ERROR(init_moe_lanes());
    const auto inv = rope_inv_freq(config_.head_dim, config_.rope_theta, config_.rope_scaling);
    KILN_ASSIGN_OR_RETURN(inv_freq_, to_device(Tensor::view(const_cast<float*>(inv.data()), DType::kF32,
                                                            {static_cast<int64_t>(inv.size())})));
    return ok_status();
  }
  const ModelConfig& config() const override { return config_; }
  Device device() const override { return Device::kCuda; }
  Result<KvCacheView> allocate_kv_cache(int64_t num_blocks, int64_t block_size) override;
  int64_t max_kv_blocks(int64_t block_size, double memory_fraction) const override;
  int64_t kv_block_bytes(int64_t block_size) const override;
  DType kv_dtype() const { return options_.fp8_kv_cache ? DType::kFp8E4M3 : DType::kBF16; }
  Status forward(const ForwardBatch& batch, const KvCacheView& kv, Tensor logits) override;
  bool samples_on_device() const override { return true; }
  Status forward_sample(const ForwardBatch& batch, const KvCacheView& kv, const std::vector<SamplingParams>& params,
                        const std::vector<uint64_t>& steps, const std::vector<std::pair<int32_t, int32_t>>& banned,
                        std::vector<int32_t>* ids) override;

 private:
  Status forward_device(const ForwardBatch& b, const KvCacheView& kv);  // to the logits_rows' f32 logits in logits_
  // The grouped MoE path's lanes (moe_grouped_gemm_cuda): KILN_MOE_LANES streams (default
  // kMoeLanes) for MoE models, lane 0 = (gemm_, stream_); one lane otherwise.
  Status init_moe_lanes();
  MoeGemmLanes moe_lanes() const { return moe_lanes_.view(); }
  // Page-locked host staging (batch metadata up, sampled ids down): async copies, no bounce buffer.
  struct Pinned {
    int32_t* data = nullptr;  // count int32 elements
    int64_t count = 0;
    ~Pinned() { if (data) cudaFreeHost(data); }
    Result<int32_t*> get(int64_t n);
  };
  // width: the block tables' width on the device (>= b.max_blocks_per_seq; graph_table_width for graphs).
  Status upload_batch(const ForwardBatch& b, int32_t width);
  Status run_layers(const ForwardBatch& b, int64_t n, int64_t rows, const KvCacheView& kv);  // embedding .. logits_ (rows)
  Status run_decode_graph(const ForwardBatch& b, int64_t n, const KvCacheView& kv);  // a CUDA graph per shape
  // h_fp8: the norm before wrote h also as per-token e4m3 (moe_hq_ / moe_hs_), which the qkv GEMM takes.
  Status attention(const CudaLayerWeights& lw, int64_t layer, const KvCacheView& kv, int64_t n, bool h_fp8);
  // h of n tokens as per-token e4m3 (moe_hq_) and its scales (moe_hs_): what the norms write with
  // out_q for the GEMMs after them (qkv, gate_up, the fused MoE experts).
  struct HFp8 {
    Tensor q, scale;
  };
  Result<HFp8> hq_views(int64_t n) {
    KILN_ASSIGN_OR_RETURN(Tensor q, moe_hq_.get(DType::kFp8E4M3, {n, config_.hidden_size}));
    KILN_ASSIGN_OR_RETURN(Tensor scale, moe_hs_.get(DType::kF32, {n}));
    return HFp8{q, scale};
  }
  // Whether Gemm::run on w at n rows would quantize x per token itself (so the kernel that
  // produces x can hand it over quantized, with the same bits, and the GEMM skips that pass).
  bool x_fp8(const Tensor& w, int64_t n) const { return fused_act_quant_ && gemm_.quantizes_x_per_token(n, w, DType::kBF16); }
  // The Hopper prefill kernel over a's sequences (kv_lens summing to kv_tokens; fp8: hopper_vt_).
  Status hopper_prefill(const PagedAttentionArgs& a, int64_t kv_tokens);
  // paged_attention_cuda with decode_ws_ as the split-K workspace of decode batches.
  Status paged_attention(const PagedAttentionArgs& a);
  DecodeWorkspaceFn decode_workspace();  // decode_ws_, zeroed when it grows
  // Attention of a layer whose RoPE + KV write ran already (pa.q: the rotated q of n tokens).
  Status attend(const PagedAttentionArgs& pa, int64_t n);
  // The fused fp8 MoE decode step: the ffn norm routes and writes h also as per-token fp8 (moe_hq_) for
  // the expert GEMMs (silu_mul_fp8 for down); the next norm sums each token's k expert rows (y).
  struct MoeSlots {
    Tensor y;        // [n * k, hidden] bf16: each slot's expert output
    Tensor weights;  // [n, k] f32
  };
  Status ffn(const CudaLayerWeights& lw, int64_t n, MoeSlots* fused, bool h_fp8);  // h_fp8: as for attention
  bool moe_decode_path(const CudaLayerWeights& lw, int64_t n) const;
  // The grouped path's fp8 experts as two batched GEMMs (MoeBatchedGemm) over a layout whose
  // padding stays within kMoeBatchedMaxPadPercent of the rows.
  bool moe_batched_ready(const CudaLayerWeights& lw) const;
  Status pretune_moe_batched();
  struct MoeBatchedIo {
    Tensor xq, x_scale;             // the permuted rows in e4m3 (n + 64 rows to spare) and their scales
    Tensor ids, weights, inverse;   // the router's and the permute's device tensors
    const MoeBatchedLayout* layout;
    int64_t rows;                   // permuted rows (the offsets' last)
  };
  Status moe_batched(const MoeBatchedIo& io, const CudaLayerWeights& lw, Tensor x);
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
  Scratch moe_e_, moe_f_;  // the batched MoE path's SwiGLU output (e4m3, padded rows) and its scales
  // A norm's output as per-token e4m3 and its scales: the fused fp8 MoE decode's experts, and the
  // fp8 qkv / gate_up GEMMs that quantize x per token (x_fp8).
  Scratch moe_hq_, moe_hs_;
  // Switches, on unless 0: KILN_MOE_FUSED (MoeSlots), KILN_FUSED_ACT_QUANT (fp8 x quantized by its producer:
  // silu_mul_fp8, the norms' out_q; MoE x once),
  // KILN_SPLIT_ATTENTION (mixed steps' decodes), KILN_HOPPER_VT, KILN_CUDA_GRAPHS, KILN_HOPPER_PREFILL,
  // KILN_FUSED_ROPE (decode steps: RoPE + KV write inside decode attention, decode_attention_rope_cuda;
  // see init).
  bool pad_decode_ = true;  // decode graphs at graph_tokens(n) tokens (KILN_CUDA_GRAPH_PAD=0: exact)
  bool moe_fused_ = true, fused_act_quant_ = true, split_attention_ = true, use_hopper_vt_ = true, use_graphs_ = true,
       use_hopper_ = true;
  int fused_rope_ = 1;  // KILN_FUSED_ROPE (see init)
  int64_t fused_rope_layers_ = 0;
  Tensor ids_, positions_, slots_, cu_, kv_lens_, tables_;
  int64_t decode_seqs_ = 0;  // leading single-token sequences; prompt_cu_: the others' cu_seqlens from 0
  std::vector<int32_t> prompt_cu_;
  Tensor prompt_cu_dev_;
  int64_t kv_tokens_ = 0, decode_kv_tokens_ = 0;  // sums of the step's kv_lens: all, the leading decodes'
  Scratch hopper_vt_;  // fp8 prefill attention: V transposed per KV head (hopper_prefill_workspace_bytes)
  // Split-K decode attention's workspace, its counters zeroed when it grows (every launch leaves
  // them zero): no allocation or memset node between RoPE, attention and o_proj in a decode graph.
  Scratch decode_ws_;
  std::vector<int32_t> host_meta_, padded_tables_;
  Pinned meta_staging_, ids_staging_, offsets_staging_;
  cudaEvent_t upload_done_ = nullptr;  // the last metadata upload has left meta_staging_
  cudaEvent_t offsets_ready_ = nullptr;  // the grouped MoE path's expert offsets are in offsets_staging_
  Scratch sampled_;
  cudaStream_t stream_ = nullptr;
  MoeLaneSet moe_lanes_;  // the grouped MoE path's lanes; lane 0 is (gemm_, stream_)
  // MoE decode steps of up to moe_decode_slots_ (token, expert) slots take moe_decode_gemm_cuda (-1: by dtype;
  // H100: bf16 up to 32, 30.6 vs 26.6 ms grouped at 32 tokens; fp8, the wgmma rows, kMoeFp8DecodeSlots).
  int64_t moe_decode_slots_ = -1;
  // fp8 experts: the decode GEMM up to 512 slots (all of kMoeDecodeMaxSlots), then the grouped
  // path (cuBLASLt per expert). H100, Mixtral fp8, `bench latency` (2026-11-24), grouped ->
  // decode GEMM: decode step batch 128 (256 slots) 27.3 -> 21.5 ms, batch 192 (384) 25.8 -> 23.8
  // ms; prefill 128 tokens 24.9 -> 20.9 ms. Up to 384 until the 96-slot rows (from 208 tokens:
  // an expert's 65-96 slots in one pass, not two of 64): batch 224 26.7 -> 25.5 ms, batch 256
  // 29.0 -> 26.1 ms, 256-token prefill 27.3 -> 26.7 ms (with 64-slot passes: 32.6 and 30.5).
  static constexpr int64_t kMoeFp8DecodeSlots = 512;
  // Lanes of the grouped MoE path (KILN_MOE_LANES overrides, 1..kMoeMaxLanes): see init_moe_lanes
  // and moe_grouped_gemm_cuda. H100, Mixtral fp8 experts, moe_grouped_bench, us for lanes 1 / 2 /
  // 3 / 4: 1024 tokens gate_up 549 / 512 / 527 / 542, down 398 / 300 / 303 / 311; 2048 tokens
  // gate_up 925 / 919 / 947 / 947, down 622 / 508 / 487 / 530. Serving A (Mixtral fp8 + fp8 KV,
  // 15 req/s) p90 e2e 1717.5 -> 1622.4 ms with 2 lanes.
  static constexpr int kMoeLanes = 2, kMoeMaxLanes = 8;
  // The batched MoE path, off unless KILN_MOE_BATCHED=1 (=force: at any padding, for tests): fp8
  // experts with per-channel scales, x quantized before the offsets reach the host (>= 1024 slots),
  // one entry per expert, padded rows <= kMoeBatchedMaxPadPercent of the rows. Off by default: on
  // the H100 its GEMMs beat the lanes on even routing (moe_grouped_bench, 1024 tokens: gate_up 480
  // -> 418 us, down 294 -> 207 us), but Mixtral with dummy weights routes unevenly (the largest
  // expert 2-4x the mean) and takes it in few layers: a 2 x 1024 prefill step 61.5 -> 59.9 ms, the
  // 1K prefill and Serving A unchanged (2026-11-24, perf.md). Not shown to pay where it is judged;
  // on it costs ~1 s of plan timing at start (pretune_moe_batched).
  MoeBatchedGemm moe_batched_gemm_;
  bool moe_batched_ = false, moe_batched_force_ = false;
  static constexpr int64_t kMoeBatchedMaxPadPercent = 125;
  // kiln's one-launch grouped GEMM (moe_grouped_wgmma_cuda, sm_90) on the fp8 grouped path, for the
  // experts' GEMMs it takes: 0 none (default), 1 down, 2 gate_up and down (KILN_MOE_WGMMA). Needs
  // per-channel expert scales; otherwise, and off Hopper, the lanes. Off by default: on the H100
  // (2026-11-24, perf.md) down alone was neutral end to end (1K prefill 35.4 vs 35.5-36.3 ms,
  // Serving A p90 1624.9 vs 1626.9 ms) and gate_up slower than the lanes (1K prefill +3 ms): its
  // 128-row tiles pad ~260-row experts by ~40%.
  int moe_wgmma_ = 0;
  // The fused decode path's gate_up GEMM polls for the ids its norm writes (MoeDecodeGemmArgs::
  // ids_poll) for up to kMoeDecodeIdsPollSlots slots; KILN_MOE_IDS_POLL=0 turns it off.
  bool moe_ids_poll_ = true;
  bool moe_ids_poll(int64_t n) const;
  DeviceTensor moe_x_fp8_;  // fp8 experts: the MoE decode GEMM's x workspace (fixed: graphs capture it)
  DeviceTensor identity_rows_;  // [kMoeDecodeMaxSlots] int32 0, 1, 2, ...
  int64_t batch_ = 0;       // sequences in the current step
  // (tokens, table width, cache, scratch generation, GEMM workspace generation) -> decode graph and
  // the step it last ran; at most max_graphs_ of them (KILN_CUDA_GRAPH_CAP), the least recently
  // used one goes first: a long-running server sees many (tokens, width) pairs.
  struct DecodeGraph {
    cudaGraphExec_t exec = nullptr;
    int64_t last_use = 0;
  };
  std::map<std::tuple<int64_t, int64_t, const void*, int64_t, int64_t>, DecodeGraph> graphs_;
  int64_t max_graphs_ = 128, graph_clock_ = 0, graph_captures_ = 0, last_graph_other_nodes_ = -1;
};

}  // namespace kiln::cuda_llama
#endif  // KILN_WITH_CUDA
