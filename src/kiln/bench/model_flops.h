// ModelFlops: the floating-point work of serving requests on a decoder, for model FLOPs
// utilisation (MFU): matmul FLOPs (2 per multiply-add) of the linear layers every token runs
// (MoE: the top-k experts only), the LM head for each token that produces logits (the last
// prompt token and every generated token but the last), and causal attention (QK^T and PV over
// the positions each token sees; a sliding window caps them). Norms, RoPE and softmax are left
// out, as in the usual MFU accounting.
#pragma once
#include <cstdint>

#include "kiln/models/model_config.h"

namespace kiln::bench {

struct RequestFlops {
  double prefill = 0;  // the prompt's forward pass (one logits row)
  double decode = 0;   // output_tokens - 1 decode steps
};

// Linear-layer FLOPs per token, LM head excluded.
double linear_flops_per_token(const ModelConfig& c, int64_t moe_top_k = 0);
// Attention FLOPs of one new token at position pos (it sees min(pos + 1, window) keys).
double attention_flops(const ModelConfig& c, int64_t pos);
RequestFlops request_flops(const ModelConfig& c, int64_t prompt_tokens, int64_t output_tokens, int64_t moe_top_k = 0);

}  // namespace kiln::bench
