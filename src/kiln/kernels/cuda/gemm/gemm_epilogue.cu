// The in-place GEMM output epilogue (see gemm_epilogue.h): blocks over rows, threads over columns.
#include <cuda_bf16.h>

#include <algorithm>

#include "kiln/kernels/cuda/common/cuda_check.h"
#include "kiln/kernels/cuda/gemm/gemm_epilogue.h"

namespace kiln {
namespace {

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ void from_f32(float& d, float v) { d = v; }
__device__ __forceinline__ void from_f32(__nv_bfloat16& d, float v) { d = __float2bfloat16(v); }

template <typename Y>
__global__ void gemm_epilogue_kernel(Y* y, int64_t m, int64_t n, int64_t ldy, const float* row_scale,
                                     const float* col_scale, bool per_tensor, const Y* bias, bool row_per_tensor) {
  const float col0 = col_scale && per_tensor ? col_scale[0] : 1.0f;
  for (int64_t i = blockIdx.x; i < m; i += gridDim.x) {  // rows per block, columns per thread: no division
    const float rs = row_scale ? row_scale[row_per_tensor ? 0 : i] : 1.0f;
    Y* row = y + i * ldy;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      float v = to_f32(row[j]) * rs;
      v *= col_scale && !per_tensor ? col_scale[j] : col0;
      if (bias) v += to_f32(bias[j]);
      from_f32(row[j], v);
    }
  }
}

}  // namespace

Status gemm_epilogue_cuda(const GemmEpilogueArgs& a, CUstream_st* stream) {
  if (a.y.ndim != 2 || a.y.device != Device::kCuda || (a.y.dtype != DType::kBF16 && a.y.dtype != DType::kF32) ||
      (a.y.shape[1] > 1 && a.y.strides[1] != 1))
    return invalid_argument("gemm_epilogue_cuda: y must be a [m, n] bf16 | f32 device matrix, got " + a.y.shape_string());
  if (!a.bias.empty() && (a.bias.dtype != a.y.dtype || a.bias.numel() != a.y.shape[1]))
    return invalid_argument("gemm_epilogue_cuda: bias must be [n] in y's dtype");
  const int64_t m = a.y.shape[0], n = a.y.shape[1];
  if (m == 0 || n == 0) return ok_status();
  const int64_t blocks = std::min<int64_t>(m, 132 * 16);
  if (a.y.dtype == DType::kBF16)
    gemm_epilogue_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
        a.y.ptr<__nv_bfloat16>(), m, n, a.y.strides[0], a.row_scale, a.col_scale, a.col_scale_per_tensor,
        a.bias.empty() ? nullptr : a.bias.ptr<__nv_bfloat16>(), a.row_scale_per_tensor);
  else
    gemm_epilogue_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
        a.y.ptr<float>(), m, n, a.y.strides[0], a.row_scale, a.col_scale, a.col_scale_per_tensor,
        a.bias.empty() ? nullptr : a.bias.ptr<float>(), a.row_scale_per_tensor);
  KILN_CUDA_CHECK_LAUNCH();
  return ok_status();
}

}  // namespace kiln
