// The fp8 prefill GEMM's activation quantizer (see gemm_fp8_activations.h). Variants: per token with
// kVecs = 1, 2, 4 16-byte vectors per thread (k <= 2048 * kVecs); per tensor (any k % 8 == 0).
// Same arithmetic as quantize_fp8_cpu: amax ignoring NaN (fmaxf), scale = amax / 448 or 1 for an
// all-zero row / tensor, q = RNE-saturating e4m3 of (x / scale) with IEEE division.
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <string>

#include "kiln/kernels/cuda/common/cuda_check.h"
#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/cuda/common/reduce.cuh"
#include "kiln/kernels/cuda/gemm/gemm_fp8_activations.h"
#include "kiln/kernels/cuda/quantize/fp8_row.cuh"

namespace kiln {
namespace {

using cuda::fp8row::abs_max8;
using cuda::fp8row::block_amax;
using cuda::fp8row::quantize8;
using cuda::fp8row::scale_for;

constexpr int kThreads = 256;
// Per thread: k <= 256 * 8 * 4 = 8192 per token. Longer rows go to quantize_fp8_cuda, measured
// faster there on H100 (m = 4096, k = 14336: 2450 GB/s against 1840 for 8 vectors per thread; at
// k = 4096 this kernel gives 2170 GB/s against 1710).
constexpr int kMaxVecs = 4;

struct ActParams {
  const __nv_bfloat16* src;  // [rows, k], row stride lds
  uint8_t* q;                // [rows, k], row stride ldq
  float* scale;              // [rows] or [1]
  uint32_t* amax;            // per tensor: the running amax as f32 bits
  int64_t rows, k, lds, ldq;
};

// Per token: one block per row; the row stays in registers between its amax and its quantization.
template <int kVecs>
__global__ void __launch_bounds__(kThreads) quantize_tokens_kernel(const __grid_constant__ ActParams p) {
  const int64_t r = blockIdx.x;
  const __nv_bfloat16* row = p.src + r * p.lds;
  uint4 v[kVecs];
  float m = 0.0f;
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    const int64_t c = (static_cast<int64_t>(i) * kThreads + threadIdx.x) * 8;
    if (c < p.k) {
      v[i] = *reinterpret_cast<const uint4*>(row + c);
      m = fmaxf(m, abs_max8(v[i]));
    }
  }
  const float s = scale_for(block_amax<kThreads>(m));
  if (threadIdx.x == 0) p.scale[r] = s;
  uint8_t* out = p.q + r * p.ldq;
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    const int64_t c = (static_cast<int64_t>(i) * kThreads + threadIdx.x) * 8;
    if (c < p.k) *reinterpret_cast<uint2*>(out + c) = quantize8(v[i], s);
  }
}

// Per tensor, pass 1: *amax (zeroed before) = max |x| as f32 bits (amax >= 0 orders like its bits).
__global__ void __launch_bounds__(kThreads) tensor_amax_kernel(const __grid_constant__ ActParams p) {
  float m = 0.0f;
  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    const __nv_bfloat16* row = p.src + r * p.lds;
    for (int64_t c = threadIdx.x * 8; c < p.k; c += kThreads * 8)
      m = fmaxf(m, abs_max8(*reinterpret_cast<const uint4*>(row + c)));
  }
  m = block_amax<kThreads>(m);
  if (threadIdx.x == 0) atomicMax(p.amax, __float_as_uint(m));
}

// Per tensor, pass 2: scale[0] and every row quantized with it.
__global__ void __launch_bounds__(kThreads) tensor_quantize_kernel(const __grid_constant__ ActParams p) {
  const float s = scale_for(__uint_as_float(*p.amax));
  if (blockIdx.x == 0 && threadIdx.x == 0) p.scale[0] = s;
  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    const __nv_bfloat16* row = p.src + r * p.lds;
    uint8_t* out = p.q + r * p.ldq;
    for (int64_t c = threadIdx.x * 8; c < p.k; c += kThreads * 8)
      *reinterpret_cast<uint2*>(out + c) = quantize8(*reinterpret_cast<const uint4*>(row + c), s);
  }
}

// The per-token variants, one line each: vectors per thread.
struct TokenVariant {
  int vecs;
  void (*kernel)(const ActParams);
};
const TokenVariant kTokenVariants[] = {
    {1, &quantize_tokens_kernel<1>},
    {2, &quantize_tokens_kernel<2>},
    {4, &quantize_tokens_kernel<kMaxVecs>},
};

}  // namespace

Status quantize_fp8_activations_cuda(const Fp8QuantizeArgs& a, uint32_t* amax_scratch, CUstream_st* stream) {
  const Tensor& s = a.src;
  if (s.ndim != 2 || a.q.ndim != 2 || s.dtype != DType::kBF16 || a.q.dtype != DType::kFp8E4M3 ||
      a.scale.dtype != DType::kF32 || s.device != Device::kCuda || a.q.device != Device::kCuda ||
      a.scale.device != Device::kCuda || a.q.shape[0] != s.shape[0] || a.q.shape[1] != s.shape[1])
    return invalid_argument("quantize_fp8_activations_cuda: want src [m, k] bf16, q [m, k] fp8 e4m3, scale f32, "
                            "all on the device; got src " + s.shape_string() + ", q " + a.q.shape_string());
  const int64_t rows = s.shape[0], k = s.shape[1];
  const bool per_tensor = a.scale.numel() == 1 && rows != 1;
  if (rows == 0 || k == 0) return ok_status();
  const bool vec = k % 8 == 0 && (s.strides[1] == 1 || k == 1) && (a.q.strides[1] == 1 || k == 1) &&
                   s.strides[0] % 8 == 0 && a.q.strides[0] % 8 == 0 && reinterpret_cast<uintptr_t>(s.data) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(a.q.data) % 8 == 0;
  const int vecs_needed = static_cast<int>((k / 8 + kThreads - 1) / kThreads);
  if (!vec || (!per_tensor && vecs_needed > kMaxVecs) || (per_tensor && !amax_scratch) || rows > 0x7fffffff)
    return quantize_fp8_cuda(a, stream);  // the general quantizer: same bits
  const ActParams p{static_cast<const __nv_bfloat16*>(s.data), static_cast<uint8_t*>(a.q.data),
                    static_cast<float*>(a.scale.data), amax_scratch, rows, k, s.strides[0], a.q.strides[0]};
  if (!per_tensor) {
    const TokenVariant* v = nullptr;
    for (const auto& t : kTokenVariants)
      if (!v && t.vecs >= vecs_needed) v = &t;
    v->kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(p);
    KILN_CUDA_CHECK_LAUNCH();
    return ok_status();
  }
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(rows, int64_t{cuda_sm_count()} * 8));
  KILN_CUDA_CHECK(cudaMemsetAsync(amax_scratch, 0, sizeof(uint32_t), stream));
  tensor_amax_kernel<<<blocks, kThreads, 0, stream>>>(p);
  KILN_CUDA_CHECK_LAUNCH();
  tensor_quantize_kernel<<<blocks, kThreads, 0, stream>>>(p);
  KILN_CUDA_CHECK_LAUNCH();
  return ok_status();
}

}  // namespace kiln
