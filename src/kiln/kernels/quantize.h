// FP8 (e4m3) quantization of linear-layer weights: w [n, k] -> q [n, k] fp8 e4m3 and scales, with
// w ~= float(q[r, c]) * scale[r] (per output channel, scale [n]) or * scale[0] (per tensor, [1]).
// scale = amax / 448 over the row (or the whole matrix); an all-zero row gets scale 1. Each value
// is rounded to nearest even and saturated (core/dtype.h f32_to_fp8_e4m3), so the CPU result is
// the reference that the GPU quantizer reproduces bit for bit.
#pragma once
#include "kiln/core/status.h"
#include "kiln/core/tensor.h"

namespace kiln {

struct Fp8Weights {
  HostTensor q;      // [n, k] fp8 e4m3
  HostTensor scale;  // [n] f32, or [1] f32 when per_tensor
};

// w: [n, k] f32, f16 or bf16, host memory (rows may be strided).
Result<Fp8Weights> quantize_fp8_weights_cpu(const Tensor& w, bool per_tensor);

// out[r, c] = float(q[r, c]) * scale[r or 0], converted to out's dtype (f32, f16 or bf16): the CPU
// models' fp8 weights (same numbers as the GPU's fp8 GEMM inputs, computed in the compute dtype).
Status dequantize_fp8_weights_cpu(const Tensor& q, const Tensor& scale, const Tensor& out);

}  // namespace kiln
