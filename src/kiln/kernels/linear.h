// Linear layer: y = x @ w^T (+ bias), fp32 accumulation. The weight keeps the Hugging Face
// [out_features, in_features] layout. Variants (CPU): x f32; w f32 | f16 | bf16; y f32.
#pragma once
#include "kiln/core/status.h"
#include "kiln/core/tensor.h"

namespace kiln {

struct LinearArgs {
  Tensor x;     // [m, k] f32
  Tensor w;     // [n, k]
  Tensor bias;  // [n] or empty
  Tensor y;     // [m, n] f32
};

Status linear_cpu(const LinearArgs& args);

}  // namespace kiln
