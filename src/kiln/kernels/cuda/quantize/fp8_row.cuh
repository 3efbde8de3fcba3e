// Device pieces of the per-row (per-token) bf16 -> fp8 e4m3 quantization that the prefill
// quantizer (gemm/gemm_fp8_activations.cu), the fused SwiGLU quantizer
// (activation/silu_mul_fp8.cu) and the decode GEMMs' x pre-pass (gemm/skinny_x_fp8.cuh) share, so
// all three give the bits of quantize_fp8_cpu: amax with fmaxf(|x|) (NaN ignored), scale = amax /
// 448 or 1 for an all-zero row, q = RNE-saturating e4m3 of x / scale with IEEE division.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "kiln/kernels/cuda/common/reduce.cuh"

namespace kiln::cuda::fp8row {

inline constexpr float kE4M3Max = 448.0f;

__device__ __forceinline__ float scale_for(float amax) { return amax > 0.0f ? __fdiv_rn(amax, kE4M3Max) : 1.0f; }

// max |x| over 8 bf16 (a 16-byte vector).
__device__ __forceinline__ float abs_max8(const uint4& u) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
  float m = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    m = fmaxf(m, fmaxf(fabsf(f.x), fabsf(f.y)));
  }
  return m;
}

__device__ __forceinline__ uint32_t e4m3_of(float v) {
  return static_cast<uint32_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
}

// The block's largest of the threads' m (amaxes, >= 0) for a block of kThreads threads; every
// thread gets it.
template <int kThreads>
__device__ __forceinline__ float block_amax(float m) {
  __shared__ float partial[kThreads / 32];
  m = warp_max(m);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = m;
  __syncthreads();
  m = 0.0f;
#pragma unroll
  for (int i = 0; i < kThreads / 32; ++i) m = fmaxf(m, partial[i]);
  return m;
}

// 8 bf16 -> 8 e4m3 bytes in order, each x / s.
__device__ __forceinline__ uint2 quantize8(const uint4& u, float s) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
  uint32_t out[2] = {0, 0};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    out[i / 2] |= (e4m3_of(__fdiv_rn(f.x, s)) | e4m3_of(__fdiv_rn(f.y, s)) << 8) << (16 * (i % 2));
  }
  return make_uint2(out[0], out[1]);
}

}  // namespace kiln::cuda::fp8row
