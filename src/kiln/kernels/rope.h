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
  Tensor k_cache;       // [num_blocks, block_size, num_kv_heads, head_dim] f32
  Tensor v_cache;       // [num_blocks, block_size, num_kv_heads, head_dim] f32
};

Status rope_kv_write_cpu(const RopeKvWriteArgs& args);

}  // namespace kiln
