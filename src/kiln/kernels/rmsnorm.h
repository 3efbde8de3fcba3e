// RMSNorm, optionally fused with the residual add that precedes it in a pre-norm decoder:
//   if residual: residual += x; out = rmsnorm(residual) * weight   (residual updated in place)
//   else:        out = rmsnorm(x) * weight
// Variants (CPU): f32 activations, f32/f16/bf16 weight.
#pragma once
#include "kiln/core/status.h"
#include "kiln/core/tensor.h"

namespace kiln {

struct RmsNormArgs {
  Tensor x;         // [num_tokens, hidden] f32
  Tensor residual;  // [num_tokens, hidden] f32, or empty
  Tensor weight;    // [hidden]
  Tensor out;       // [num_tokens, hidden] f32 (may alias x)
  float eps = 1e-5f;
};

Status rmsnorm_cpu(const RmsNormArgs& args);

}  // namespace kiln
