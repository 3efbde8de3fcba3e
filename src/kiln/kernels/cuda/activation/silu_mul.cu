// CUDA SiLU-and-multiply over the fused [n, 2 * inter] gate_up layout: a flat grid over 16-byte
// output vectors, kUnroll per thread with all loads issued first; the SiLU division's fast path
// (swiglu_exact.cuh, the same bits) for vectors whose |g| allow it. Variants: bf16.
#include <cuda_bf16.h>

#include <string>

#include "kiln/kernels/activation.h"
#include "kiln/kernels/cuda/activation/swiglu_exact.cuh"
#include "kiln/kernels/cuda/common/bf16.cuh"
#include "kiln/kernels/cuda/common/cuda_check.h"
#include "kiln/kernels/cuda/common/kernel_args.h"
#include "kiln/kernels/cuda/common/pdl.cuh"

namespace kiln {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kThreads = 256;
constexpr int kUnroll = 2;

struct SiluMulParams {
  const bf16* gate_up;  // [rows, 2 * inter], row stride gu_stride
  bf16* out;            // [rows, inter], row stride out_stride
  int64_t gu_stride, out_stride;
  int64_t total_vecs;   // rows * vecs_per_row
  int64_t inter;
  int vecs_per_row;     // inter / 8
};

__global__ void __launch_bounds__(kThreads) silu_mul_kernel(const __grid_constant__ SiluMulParams p) {
  cuda::pdl_wait();  // inputs come from the kernel before (programmatic dependent launch)
  cuda::pdl_trigger();
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kThreads * kUnroll + threadIdx.x;
  uint4 gv[kUnroll], uv[kUnroll];
  int64_t row[kUnroll];
  int col[kUnroll];
#pragma unroll
  for (int j = 0; j < kUnroll; ++j) {
    const int64_t v = first + j * kThreads;
    row[j] = v / p.vecs_per_row;
    col[j] = static_cast<int>(v - row[j] * p.vecs_per_row);
    if (v < p.total_vecs) {
      const bf16* g = p.gate_up + row[j] * p.gu_stride + col[j] * cuda::kBf16PerVec;
      gv[j] = *reinterpret_cast<const uint4*>(g);
      uv[j] = *reinterpret_cast<const uint4*>(g + p.inter);
    }
  }
#pragma unroll
  for (int j = 0; j < kUnroll; ++j) {
    if (first + j * kThreads >= p.total_vecs) continue;
    cuda::swiglu::RangeAcc range;
    cuda::swiglu::range_add8(range, gv[j]);
    const uint4 o = cuda::swiglu::in_fast_range(range) ? cuda::swiglu::swiglu8<true>(gv[j], uv[j])
                                                       : cuda::swiglu::swiglu8<false>(gv[j], uv[j]);
    *reinterpret_cast<uint4*>(p.out + row[j] * p.out_stride + col[j] * cuda::kBf16PerVec) = o;
  }
}

Status launch_silu_mul(const SiluMulArgs& a, CUstream_st* stream) {
  constexpr const char* kName = "silu_mul_cuda";
  KILN_ASSIGN_OR_RETURN(const cuda::RowsView gu, cuda::device_rows(a.gate_up, DType::kBF16, kName, "gate_up"));
  KILN_ASSIGN_OR_RETURN(const cuda::RowsView out, cuda::device_rows(a.out, DType::kBF16, kName, "out"));
  if (gu.rows != out.rows || gu.cols != 2 * out.cols)
    return invalid_argument("silu_mul_cuda: gate_up " + a.gate_up.shape_string() + " is not [n, 2 * inter] for out " +
                            a.out.shape_string());
  const int64_t inter = out.cols;
  if (inter % cuda::kBf16PerVec != 0)
    return unimplemented("silu_mul_cuda: inter " + std::to_string(inter) + " (supported: multiples of 8)");
  if (gu.stride % 8 || out.stride % 8 || !cuda::aligned16(a.gate_up.data) || !cuda::aligned16(a.out.data))
    return invalid_argument("silu_mul_cuda: rows must be 16-byte aligned");
  SiluMulParams p{};
  p.gate_up = static_cast<const bf16*>(a.gate_up.data);
  p.out = static_cast<bf16*>(a.out.data);
  p.gu_stride = gu.stride;
  p.out_stride = out.stride;
  p.inter = inter;
  p.vecs_per_row = static_cast<int>(inter / cuda::kBf16PerVec);
  p.total_vecs = out.rows * p.vecs_per_row;
  if (p.total_vecs == 0) return ok_status();
  const int64_t blocks = (p.total_vecs + kThreads * kUnroll - 1) / (kThreads * kUnroll);
  if (blocks > 0x7fffffff) return out_of_range("silu_mul_cuda: tensor too large");
  KILN_CUDA_CHECK(cuda::launch_pdl(silu_mul_kernel, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0, stream, p));
  return ok_status();
}

constexpr SiluMulCudaVariant kVariants[] = {
    {DType::kBF16, &launch_silu_mul},
};

}  // namespace

std::span<const SiluMulCudaVariant> silu_mul_cuda_variants() { return kVariants; }

Status silu_mul_cuda(const SiluMulArgs& a, CUstream_st* stream) {
  for (const auto& v : kVariants)
    if (v.act == a.gate_up.dtype && v.act == a.out.dtype) return v.launch(a, stream);
  std::string supported;
  for (const auto& v : kVariants) supported += std::string(supported.empty() ? "" : ", ") + std::string(dtype_name(v.act));
  return unimplemented("silu_mul_cuda: gate_up " + std::string(dtype_name(a.gate_up.dtype)) + " out " +
                       std::string(dtype_name(a.out.dtype)) + " (supported: " + supported + ")");
}

}  // namespace kiln
