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

// ---- CUDA (kernels/cuda/norm/rmsnorm.cu) ---------------------------------------------------
// The same operation on device tensors: x, residual and out bf16, weight bf16, math in f32. The
// residual sum is stored in bf16 and the norm is taken of that stored value. hidden % 8 == 0,
// hidden <= 32768, rows 16-byte aligned. One table row per shipped variant; tests iterate it.
}  // namespace kiln
#include <span>
struct CUstream_st;  // cudaStream_t, without the CUDA headers
namespace kiln {

struct RmsNormCudaVariant {
  DType act;      // x, residual, out
  DType weight;
  bool residual;  // fused residual add
  Status (*launch)(const RmsNormArgs& args, CUstream_st* stream);
};
std::span<const RmsNormCudaVariant> rmsnorm_cuda_variants();
Status rmsnorm_cuda(const RmsNormArgs& args, CUstream_st* stream);

}  // namespace kiln
