// CUDA random fill: a grid-stride loop over the counter hash of random_fill.h.
#include <algorithm>
#include <string>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kiln/kernels/random_fill.h"

namespace kiln {
namespace {

__device__ float device_value(uint64_t seed, uint64_t i, float scale, float offset) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + i;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  const float u = static_cast<float>(z >> 40) * (1.0f / 8388608.0f) - 1.0f;
  return offset + scale * u;
}

template <typename T>
__global__ void fill_kernel(T* out, int64_t n, uint64_t seed, float scale, float offset) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = device_value(seed, static_cast<uint64_t>(i), scale, offset);
    if constexpr (sizeof(T) == 4) out[i] = v;
    else out[i] = __float2bfloat16_rn(v);
  }
}

}  // namespace

Status random_fill_cuda(const RandomFillArgs& a, CUstream_st* stream) {
  const int64_t n = a.out.numel();
  if (n == 0) return ok_status();
  const int blocks = static_cast<int>(std::min<int64_t>((n + 255) / 256, 132 * 16));
  if (a.out.dtype == DType::kF32) {
    fill_kernel<float><<<blocks, 256, 0, stream>>>(a.out.ptr<float>(), n, a.seed, a.scale, a.offset);
  } else if (a.out.dtype == DType::kBF16) {
    fill_kernel<__nv_bfloat16><<<blocks, 256, 0, stream>>>(a.out.ptr<__nv_bfloat16>(), n, a.seed, a.scale, a.offset);
  } else {
    return unimplemented("random_fill_cuda: dtype " + std::string(dtype_name(a.out.dtype)) + " (supported: f32, bf16)");
  }
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return internal_error(std::string("random_fill_cuda: ") + cudaGetErrorString(e));
  return ok_status();
}

}  // namespace kiln
