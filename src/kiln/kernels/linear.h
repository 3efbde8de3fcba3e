// Linear layer: y = x @ w^T (+ bias), fp32 accumulation. The weight keeps the Hugging Face
// [out_features, in_features] layout. Variants (CPU): x f32; w f32 | f16 | bf16 | fp8 e4m3 (with
// w_scale); y f32.
#pragma once
#include "kiln/core/status.h"
#include "kiln/core/tensor.h"

namespace kiln {

struct LinearArgs {
  Tensor x;     // [m, k] f32
  Tensor w;     // [n, k]
  Tensor bias;  // [n] or empty
  Tensor y;     // [m, n] f32
  // fp8 (e4m3) weights only: dequantization scales, w_real[n, k] = float(w[n, k]) * w_scale[n]
  // ([n] f32, per output channel) or * w_scale[0] ([1] f32, per tensor). Empty otherwise.
  Tensor w_scale;
};

Status linear_cpu(const LinearArgs& args);

}  // namespace kiln
