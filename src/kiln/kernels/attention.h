// Paged attention over a KV cache for a variable-length batch: each sequence b has q_len(b) new
// query tokens (rows cu_seqlens_q[b] .. cu_seqlens_q[b+1]) and kv_lens[b] cached tokens (the new
// ones included, already written). Causal: new token i of b sits at position
// kv_lens[b] - q_len(b) + i and sees keys [0, that position] (and, with a sliding window w, only
// the last w of them). Grouped-query: query head h reads kv head h / (num_q_heads / num_kv_heads).
// One entry point covers prefill (q_len > 1) and decode (q_len == 1).
#pragma once
#include "kiln/core/status.h"
#include "kiln/core/tensor.h"

namespace kiln {

struct PagedAttentionArgs {
  Tensor q;             // [num_tokens, num_q_heads, head_dim] f32
  Tensor k_cache;       // [num_blocks, block_size, num_kv_heads, head_dim] f32
  Tensor v_cache;       // [num_blocks, block_size, num_kv_heads, head_dim] f32
  Tensor cu_seqlens_q;  // [batch + 1] int32
  Tensor kv_lens;       // [batch] int32
  Tensor block_tables;  // [batch, max_blocks_per_seq] int32
  Tensor out;           // [num_tokens, num_q_heads, head_dim] f32
  float scale = 1.0f;   // usually 1/sqrt(head_dim)
  int64_t sliding_window = 0;  // 0 = unlimited
};

Status paged_attention_cpu(const PagedAttentionArgs& args);

}  // namespace kiln
