// SwiGLU activation: out[t, i] = silu(gate_up[t, i]) * gate_up[t, inter + i], where gate_up holds
// the gate and up projections side by side (one fused GEMM). Variants (CPU): f32.
#pragma once
#include "kiln/core/status.h"
#include "kiln/core/tensor.h"

namespace kiln {

struct SiluMulArgs {
  Tensor gate_up;  // [num_tokens, 2 * inter] f32
  Tensor out;      // [num_tokens, inter] f32
};

Status silu_mul_cpu(const SiluMulArgs& args);

}  // namespace kiln
