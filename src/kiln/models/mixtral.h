// Mixtral's sparse MoE feed-forward: router softmax, top-k experts per token (renormalized),
// each expert a SwiGLU MLP over the tokens routed to it, outputs summed with the router weights.
#pragma once
#include <functional>

#include "kiln/models/decoder_weights.h"

namespace kiln {

// Calibration hook: each expert's gate_up input (down = false: the routed tokens' rows of h) and
// down input (down = true: SwiGLU's output), before any fp8 rounding.
using MoeExpertObserver = std::function<Status(int64_t expert, bool down, const Tensor& x)>;

// h: [num_tokens, hidden] f32 -> out: [num_tokens, hidden] f32.
// fp8_activations: expert inputs rounded to fp8 per token (ModelOptions::fp8_activations).
Status mixtral_moe_cpu(const LayerWeights& lw, int64_t top_k, bool renormalize, const Tensor& h, Tensor out,
                       bool fp8_activations = false, const MoeExpertObserver& observe = {});

}  // namespace kiln
