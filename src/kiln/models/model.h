// Model: the decoder forward pass over a batch of sequences and a paged KV cache, plus the
// registry that builds the right model for a loaded checkpoint.
#pragma once
#include <memory>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/core/tensor.h"
#include "kiln/io/model_loader.h"
#include "kiln/kernels/hadamard.h"
#include "kiln/kernels/sampling.h"
#include "kiln/models/model_config.h"

namespace kiln {

// One step's worth of tokens from several sequences, grouped by sequence.
struct ForwardBatch {
  std::vector<int32_t> token_ids;      // [num_tokens]
  std::vector<int32_t> positions;      // [num_tokens]
  std::vector<int32_t> cu_seqlens_q;   // [batch + 1]
  std::vector<int32_t> kv_lens;        // [batch]: cached tokens after this step (new ones included)
  std::vector<int32_t> block_tables;   // [batch, max_blocks_per_seq]
  int32_t max_blocks_per_seq = 0;
  std::vector<int32_t> slot_mapping;   // [num_tokens]: where each token's K/V goes
  std::vector<int32_t> logits_rows;    // token rows whose logits are wanted (e.g. last of each seq)
};

// Per-layer K and V caches: [num_blocks, block_size, num_kv_heads, head_dim], on the model's
// device. `owner` keeps the memory alive when the view came from Model::allocate_kv_cache.
struct KvCacheView {
  std::vector<Tensor> k, v;
  std::shared_ptr<void> owner;
};

class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelConfig& config() const = 0;
  // logits: [batch.logits_rows.size(), vocab] f32, host memory.
  virtual Status forward(const ForwardBatch& batch, const KvCacheView& kv, Tensor logits) = 0;
  virtual Device device() const { return Device::kCpu; }
  // A paged KV cache on the model's device (host memory for CPU models).
  virtual Result<KvCacheView> allocate_kv_cache(int64_t num_blocks, int64_t block_size);
  // How many blocks fit in the memory left on the device (CPU: a fixed budget of host memory).
  virtual int64_t max_kv_blocks(int64_t block_size, double memory_fraction) const;
  // Bytes of one KV cache block (K and V of every layer) in the model's cache dtype (default f32).
  virtual int64_t kv_block_bytes(int64_t block_size) const;
  // GPU models sample on the device: the forward pass, then one token per logits row drawn with
  // params[r] and steps[r] (kernels/sampling.h: the ids sample_cpu would pick), and only the ids
  // come back to the host: no logits copy. Callers use it when no row needs the logits on the host
  // (logprobs, penalties, logit bias). The default (CPU models): unimplemented.
  virtual bool samples_on_device() const { return false; }
  // banned: (row, token) pairs sampled as -inf (SampleArgs::banned).
  virtual Status forward_sample(const ForwardBatch& batch, const KvCacheView& kv, const std::vector<SamplingParams>& params,
                                const std::vector<uint64_t>& steps, const std::vector<std::pair<int32_t, int32_t>>& banned,
                                std::vector<int32_t>* ids);
};

// resource_exhausted naming the cache when num_blocks blocks of K and V for every layer in dtype
// do not fit in host memory (CPU models check before allocating).
Status check_kv_cache_fits(const ModelConfig& c, DType dtype, int64_t num_blocks, int64_t block_size);

// Options applied when the model is built.
struct ModelOptions {
  int64_t moe_top_k = 0;  // > 0: route each token to this many experts instead of the config's
  Device device = Device::kCpu;
  bool dummy_weights = false;  // random weights from the config alone (vLLM's --load-format dummy)
  // Linear-layer weights (q/k/v/o, gate/up/down, experts) in fp8 e4m3: quantized at load with
  // one scale per output channel (fp8_per_tensor: one per matrix), unless the checkpoint is
  // already fp8 (its weight_scale is used as stored). Embeddings, norms, the MoE router and the
  // LM head keep the compute dtype. CPU models dequantize the fp8 values back to the compute
  // dtype (same numbers, no speed gain): the reference for the GPU path and for `kiln eval kl`.
  bool fp8_weights = false;
  bool fp8_per_tensor = false;
  // CPU models with fp8 weights: round the input of every fp8 linear layer to fp8 per token
  // (fp8_round_trip_cpu) as the GPU's fp8 prefill GEMMs do (the GPU decode GEMMs, m <= 16, keep
  // bf16 activations). For reproducing GPU prefill numerics in tests and `kiln eval kl`.
  bool fp8_activations = false;
  // KV cache in fp8 e4m3 (--kv-cache-dtype fp8) with static per-tensor scales: K and V are
  // stored as fp8(x / scale). kv_cache_scale applies to every layer unless the checkpoint has
  // per-layer self_attn.k_scale / v_scale (vLLM's layout).
  bool fp8_kv_cache = false;
  float kv_cache_scale = 1.0f;
  // fp8 KV cache: q and k heads are Walsh-Hadamard transformed after RoPE (RopeKvWriteArgs::
  // hadamard_qk; scores unchanged, K's outlier channels spread before fp8 rounding) when head_dim
  // is a power of two. --kv-cache-key-rotation none turns it off.
  bool fp8_kv_hadamard = true;
  bool hadamard_keys(int64_t head_dim) const {
    return fp8_kv_cache && fp8_kv_hadamard && is_power_of_two(head_dim);
  }
};

// Builds the CPU model for loaded.config.arch; takes ownership of the weights.
Result<std::unique_ptr<Model>> create_model(LoadedModel&& loaded, const ModelOptions& options = {});

}  // namespace kiln
