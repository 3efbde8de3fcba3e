// Warp and block reductions (sum, max) over f32, with algorithmic names.
#pragma once
#include <cuda_runtime.h>

namespace kiln::cuda {

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// op over the whole block (blockDim.x a multiple of 32, <= 1024) with warp_op and identity for the
// lanes past the warps; every thread gets the result.
template <float (*kWarpOp)(float)>
__device__ __forceinline__ float block_reduce(float v, float identity) {
  __shared__ float partial[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, num_warps = blockDim.x >> 5;
  v = kWarpOp(v);
  __syncthreads();  // partial[] may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < num_warps ? partial[lane] : identity;
  return kWarpOp(v);
}
__device__ __forceinline__ float block_sum(float v) { return block_reduce<warp_sum>(v, 0.f); }
__device__ __forceinline__ float block_max(float v) { return block_reduce<warp_max>(v, -INFINITY); }

}  // namespace kiln::cuda
