// In-place epilogue for GEMM outputs that cuBLASLt could not scale itself (internal to
// kernels/cuda/gemm): y[i, j] = y[i, j] * row_scale[i or 0] * col_scale[j or 0] (+ bias[j]), each
// factor optional. Used by the fp8 prefill GEMM where cuBLASLt refuses to apply the scales itself
// (and when GemmOptions::fp8_native_scales is off). CUDA-free header.
#pragma once
#include <cstdint>

#include "kiln/core/status.h"
#include "kiln/core/tensor.h"

struct CUstream_st;

namespace kiln {

struct GemmEpilogueArgs {
  Tensor y;                 // [m, n] bf16 | f32, device, rows may be strided; rewritten
  const float* row_scale;   // [m] or [1] f32 device or nullptr
  const float* col_scale;   // [n] or [1] f32 device or nullptr
  bool col_scale_per_tensor = false;
  Tensor bias;              // [n] in y's dtype, or empty
  bool row_scale_per_tensor = false;
};
Status gemm_epilogue_cuda(const GemmEpilogueArgs& args, CUstream_st* stream);

}  // namespace kiln
