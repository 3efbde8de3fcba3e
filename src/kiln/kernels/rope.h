// Rotary position embedding (Hugging Face rotate-half layout: pairs (i, i + head_dim/2)) applied
// to q and k in place, fused with writing k and v into the paged KV cache.
// Frequencies come from rope_inv_freq(), which applies linear or Llama 3.1 scaling.
#pragma once
#include <vector>

#include "kiln/core/status.h"
#include "kiln/core/tensor.h"
#include "kiln/models/model_config.h"

namespace kiln {

// inv_freq[i] for i in [0, rotary_dim/2), with the config's rope scaling applied.
std::vector<float> rope_inv_freq(int64_t rotary_dim, float theta, const RopeScaling& scaling);

struct RopeKvWriteArgs {
  Tensor q;             // [num_tokens, num_q_heads, head_dim] f32, rotated in place
  Tensor k;             // [num_tokens, num_kv_heads, head_dim] f32, rotated in place
  Tensor v;             // [num_tokens, num_kv_heads, head_dim] f32
  Tensor positions;     // [num_tokens] int32
  Tensor inv_freq;      // [head_dim / 2] f32
  Tensor slot_mapping;  // [num_tokens] int32: block * block_size + offset; < 0 = do not write
  Tensor k_cache;       // [num_blocks, block_size, num_kv_heads, head_dim] f32 or fp8 e4m3
  Tensor v_cache;       // [num_blocks, block_size, num_kv_heads, head_dim] same dtype as k_cache
  // fp8 (e4m3) caches: the cache stores fp8(x / scale) (round to nearest even, saturating at
  // +-448); readers multiply by the same scale. Per tensor (one K and one V scale per layer).
  float k_scale = 1.0f, v_scale = 1.0f;
  // Optional [num_tokens, num_q_heads, head_dim] contiguous, q's dtype: the rotated q goes here and
  // q is left as it was (the GPU model reads q from the fused qkv output and attention wants it dense).
  Tensor q_out;
  // After RoPE, multiply every q and k head by the orthonormal Walsh-Hadamard matrix (hadamard.h;
  // head_dim a power of two): q . k is unchanged, but K's few large channels are spread over the
  // head before it is stored, so an fp8 cache rounds it with much less damage to the scores.
  // Applies to what is written back (q or q_out, k) and to the cache.
  bool hadamard_qk = false;
};

Status rope_kv_write_cpu(const RopeKvWriteArgs& args);

// ---- CUDA (kernels/cuda/rope/rope_kv_write.cu) ---------------------------------------------
// The same operation on device tensors: q, k, v bf16; k_cache, v_cache bf16, or fp8 e4m3 quantized
// from the f32 rotated k (and v) exactly as the CPU reference's fp8 path (bit-exact for the same
// inputs); math in f32, angles' cos/sin in double as the CPU reference; positions, slot_mapping
// int32, inv_freq f32, all on the device. q, k and v may be views with a token stride (e.g. slices of a fused qkv output)
// but heads must be contiguous; head_dim % 16 == 0. Slots outside the cache are skipped (no
// error from the device: callers own the slot mapping on the host). hadamard_qk: fp8 caches only
// (a row of the variant table), bit-exact to the CPU as well. The kernels read positions,
// slot_mapping and inv_freq before their PDL wait: those must not come from a kernel still
// running (the model uploads them with a copy before the step).
}  // namespace kiln
#include <span>
struct CUstream_st;  // cudaStream_t, without the CUDA headers
namespace kiln {

struct RopeKvWriteCudaVariant {
  DType act;    // q, k, v
  DType cache;  // k_cache, v_cache
  bool hadamard_qk;
  Status (*launch)(const RopeKvWriteArgs& args, CUstream_st* stream);
};
std::span<const RopeKvWriteCudaVariant> rope_kv_write_cuda_variants();
Status rope_kv_write_cuda(const RopeKvWriteArgs& args, CUstream_st* stream);

}  // namespace kiln
