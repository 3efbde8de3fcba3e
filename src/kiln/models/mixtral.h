// Mixtral's sparse MoE feed-forward: router softmax, top-k experts per token (renormalized),
// each expert a SwiGLU MLP over the tokens routed to it, outputs summed with the router weights.
#pragma once
#include "kiln/models/decoder_weights.h"

namespace kiln {

// h: [num_tokens, hidden] f32 -> out: [num_tokens, hidden] f32.
// fp8_activations: expert inputs rounded to fp8 per token (ModelOptions::fp8_activations).
Status mixtral_moe_cpu(const LayerWeights& lw, int64_t top_k, bool renormalize, const Tensor& h, Tensor out,
                       bool fp8_activations = false);

}  // namespace kiln
