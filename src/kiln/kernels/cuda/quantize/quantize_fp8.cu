// FP8 e4m3 quantization of bf16 rows on the GPU (see quantize.h): the same arithmetic as
// quantize_fp8_cpu (amax with NaN ignored, scale = amax / 448 or 1, IEEE division, RNE
// saturating conversion), so the bits match. Per row: one block per row, amax then quantize (the
// second read of the row hits L1/L2); rows of at most 256 elements (k % 8 == 0: per-head Q rows of
// the Hopper fp8 prefill attention) take a group of k / 8 threads each instead, one 16-byte vector
// a thread, amax by shuffles. Per tensor: row amax -> atomicMax on the f32 bits (amax >= 0
// orders like its bits) -> scale -> quantize.
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <string>

#include "kiln/kernels/cuda/common/cuda_check.h"
#include "kiln/kernels/cuda/common/reduce.cuh"
#include "kiln/kernels/cuda/quantize/fp8_row.cuh"
#include "kiln/kernels/quantize.h"

namespace kiln {
namespace {

constexpr int kThreads = 256;
constexpr float kFp8E4M3Max = 448.0f;

struct QuantizeParams {
  const __nv_bfloat16* src;  // [rows, k], row stride lds
  uint8_t* q;                // [rows, k], row stride ldq
  float* scale;              // [rows] or [1]
  int64_t rows, k, lds, ldq;
};

__device__ __forceinline__ float scale_for(float amax) { return amax > 0.0f ? amax / kFp8E4M3Max : 1.0f; }

__device__ __forceinline__ uint8_t to_fp8(float v) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
}

// max |src[r, :]| over the block (every thread gets it). kVec: 8 bf16 per 16-byte load.
template <bool kVec>
__device__ float row_amax(const __nv_bfloat16* row, int64_t k) {
  float m = 0.0f;
  if constexpr (kVec) {
    for (int64_t c = threadIdx.x * 8; c < k; c += kThreads * 8) {
      const uint4 u = *reinterpret_cast<const uint4*>(row + c);
      const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 f = __bfloat1622float2(h[i]);
        m = fmaxf(m, fmaxf(fabsf(f.x), fabsf(f.y)));
      }
    }
  } else {
    for (int64_t c = threadIdx.x; c < k; c += kThreads) m = fmaxf(m, fabsf(__bfloat162float(row[c])));
  }
  m = cuda::warp_max(m);
  __shared__ float partial[kThreads / 32];
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = m;
  __syncthreads();
  m = 0.0f;
#pragma unroll
  for (int i = 0; i < kThreads / 32; ++i) m = fmaxf(m, partial[i]);
  return m;
}

template <bool kVec>
__device__ void quantize_row(const __nv_bfloat16* row, uint8_t* q, int64_t k, float s) {
  if constexpr (kVec) {
    for (int64_t c = threadIdx.x * 8; c < k; c += kThreads * 8) {
      *reinterpret_cast<uint2*>(q + c) = cuda::fp8row::quantize8(*reinterpret_cast<const uint4*>(row + c), s);
    }
  } else {
    for (int64_t c = threadIdx.x; c < k; c += kThreads) q[c] = to_fp8(__bfloat162float(row[c]) / s);
  }
}

// Per row: scale[r] and q[r, :] (grid: one block per row).
template <bool kVec>
__global__ void __launch_bounds__(kThreads) quantize_rows_kernel(const __grid_constant__ QuantizeParams p) {
  const int64_t r = blockIdx.x;
  const __nv_bfloat16* row = p.src + r * p.lds;
  const float s = scale_for(row_amax<kVec>(row, p.k));
  if (threadIdx.x == 0) p.scale[r] = s;
  quantize_row<kVec>(row, p.q + r * p.ldq, p.k, s);
}

// Per row, short rows (k <= 256, k % 8 == 0, 16-byte aligned): a group of kGroup >= k / 8 lanes
// (a power of two) per row, one 8-element vector a lane; kThreads / kGroup rows a block.
template <int kGroup>
__global__ void __launch_bounds__(kThreads) quantize_short_rows_kernel(const __grid_constant__ QuantizeParams p) {
  const int lane = threadIdx.x % kGroup;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * (kThreads / kGroup) + threadIdx.x / kGroup;
  const bool active = r < p.rows && 8 * lane < p.k;
  uint4 u = make_uint4(0, 0, 0, 0);
  if (active) u = *reinterpret_cast<const uint4*>(p.src + r * p.lds + 8 * lane);
  float m = cuda::fp8row::abs_max8(u);
#pragma unroll
  for (int o = kGroup / 2; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o, kGroup));
  if (!active) return;
  const float s = scale_for(m);
  if (lane == 0) p.scale[r] = s;
  *reinterpret_cast<uint2*>(p.q + r * p.ldq + 8 * lane) = cuda::fp8row::quantize8(u, s);
}

template <int kGroup>
Status launch_short(const QuantizeParams& p, cudaStream_t stream) {
  constexpr int64_t kRows = kThreads / kGroup;
  quantize_short_rows_kernel<kGroup><<<static_cast<unsigned>((p.rows + kRows - 1) / kRows), kThreads, 0, stream>>>(p);
  KILN_CUDA_CHECK_LAUNCH();
  return ok_status();
}

// Per tensor, pass 1: scale[0] (zeroed before) = max over rows of amax, as f32 bits.
template <bool kVec>
__global__ void __launch_bounds__(kThreads) tensor_amax_kernel(const __grid_constant__ QuantizeParams p) {
  const float m = row_amax<kVec>(p.src + static_cast<int64_t>(blockIdx.x) * p.lds, p.k);
  if (threadIdx.x == 0) atomicMax(reinterpret_cast<unsigned int*>(p.scale), __float_as_uint(m));
}

// Per tensor, pass 2: the amax bits become the scale.
__global__ void tensor_scale_kernel(float* scale) { scale[0] = scale_for(__uint_as_float(*reinterpret_cast<unsigned int*>(scale))); }

// Per tensor, pass 3: every row with scale[0].
template <bool kVec>
__global__ void __launch_bounds__(kThreads) tensor_quantize_kernel(const __grid_constant__ QuantizeParams p) {
  const int64_t r = blockIdx.x;
  quantize_row<kVec>(p.src + r * p.lds, p.q + r * p.ldq, p.k, *p.scale);
}

template <bool kVec>
Status launch(const QuantizeParams& p, bool per_tensor, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.rows));
  if (!per_tensor) {
    quantize_rows_kernel<kVec><<<grid, kThreads, 0, stream>>>(p);
    KILN_CUDA_CHECK_LAUNCH();
    return ok_status();
  }
  KILN_CUDA_CHECK(cudaMemsetAsync(p.scale, 0, sizeof(float), stream));
  tensor_amax_kernel<kVec><<<grid, kThreads, 0, stream>>>(p);
  KILN_CUDA_CHECK_LAUNCH();
  tensor_scale_kernel<<<1, 1, 0, stream>>>(p.scale);
  KILN_CUDA_CHECK_LAUNCH();
  tensor_quantize_kernel<kVec><<<grid, kThreads, 0, stream>>>(p);
  KILN_CUDA_CHECK_LAUNCH();
  return ok_status();
}

}  // namespace

Status quantize_fp8_cuda(const Fp8QuantizeArgs& a, CUstream_st* stream) {
  const Tensor& s = a.src;
  if (s.ndim != 2 || s.device != Device::kCuda || s.dtype != DType::kBF16 || a.q.ndim != 2 ||
      a.q.device != Device::kCuda || a.q.dtype != DType::kFp8E4M3 || a.q.shape[0] != s.shape[0] ||
      a.q.shape[1] != s.shape[1] || a.scale.device != Device::kCuda || a.scale.dtype != DType::kF32 ||
      (a.scale.numel() != 1 && a.scale.numel() != s.shape[0]) || !a.scale.is_contiguous())
    return invalid_argument("quantize_fp8_cuda: want src [rows, k] bf16, q [rows, k] fp8 e4m3, scale [rows] or [1] f32, "
                            "all on the device; got src " + s.shape_string() + ", q " + a.q.shape_string() + ", scale " +
                            a.scale.shape_string());
  const int64_t rows = s.shape[0], k = s.shape[1];
  if (rows == 0) return ok_status();
  if (k > 0 && (s.strides[1] != 1 || a.q.strides[1] != 1))
    return invalid_argument("quantize_fp8_cuda: rows must be contiguous");
  if (rows > 0x7fffffff) return invalid_argument("quantize_fp8_cuda: too many rows");
  const QuantizeParams p{static_cast<const __nv_bfloat16*>(s.data), static_cast<uint8_t*>(a.q.data),
                         static_cast<float*>(a.scale.data), rows, k, s.strides[0], a.q.strides[0]};
  const bool per_tensor = a.scale.numel() == 1 && rows != 1;
  const bool vec = k % 8 == 0 && p.lds % 8 == 0 && p.ldq % 8 == 0 && reinterpret_cast<uintptr_t>(s.data) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(a.q.data) % 8 == 0;
  if (vec && !per_tensor && k > 0 && k <= 256) {
    if (k <= 64) return launch_short<8>(p, stream);
    if (k <= 128) return launch_short<16>(p, stream);
    return launch_short<32>(p, stream);
  }
  return vec ? launch<true>(p, per_tensor, stream) : launch<false>(p, per_tensor, stream);
}

}  // namespace kiln
