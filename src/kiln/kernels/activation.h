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

// ---- CUDA (kernels/cuda/activation/silu_mul.cu) --------------------------------------------
// The same operation on device tensors: gate_up and out bf16, math in f32. inter % 8 == 0, rows
// 16-byte aligned. One table row per shipped variant; tests iterate it.
}  // namespace kiln
#include <span>
struct CUstream_st;  // cudaStream_t, without the CUDA headers
namespace kiln {

struct SiluMulCudaVariant {
  DType act;  // gate_up and out
  Status (*launch)(const SiluMulArgs& args, CUstream_st* stream);
};
std::span<const SiluMulCudaVariant> silu_mul_cuda_variants();
Status silu_mul_cuda(const SiluMulArgs& args, CUstream_st* stream);

}  // namespace kiln
