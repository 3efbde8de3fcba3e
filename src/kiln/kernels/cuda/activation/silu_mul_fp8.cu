// CUDA silu_mul_fp8 (kernels/silu_mul_fp8.h): one block of kThreads threads per row, the row's
// SwiGLU values held in registers between the amax and the quantization (kVecs 8-element vectors
// per thread). Arithmetic of silu_mul_cuda (f32 silu, bf16 store) then gemm_fp8_activations'
// per-token quantizer (amax of the bf16 values, scale = amax / 448 or 1, IEEE division,
// RNE-saturating e4m3). Variants: 256 threads x kVecs = 1, 2, 4, 8 (inter <= 2048 * kVecs), and for
// few rows (decode: a handful of blocks, latency-bound) 1024 threads x kVecs = 1, 2.
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <array>
#include <iterator>
#include <string>

#include "kiln/kernels/cuda/common/cuda_check.h"
#include "kiln/kernels/cuda/common/pdl.cuh"
#include "kiln/kernels/cuda/common/reduce.cuh"
#include "kiln/kernels/cuda/quantize/fp8_row.cuh"
#include "kiln/kernels/silu_mul_fp8.h"

namespace kiln {
namespace {

using bf16 = __nv_bfloat16;
using cuda::fp8row::abs_max8;
using cuda::fp8row::quantize8;
using cuda::fp8row::scale_for;
constexpr int kFewRows = 128;  // up to this many rows the 1024-thread rows run

struct Params {
  const bf16* gate_up;  // [rows, 2 * inter], row stride gu_stride
  uint8_t* q;           // [rows, inter], row stride inter
  float* scale;         // [rows]
  int64_t gu_stride, inter;
};

__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }

// 8 SwiGLU outputs, rounded to bf16 (kept as bf16 pairs: what silu_mul_cuda would store).
__device__ __forceinline__ uint4 swiglu8(const uint4& g, const uint4& u) {
  const __nv_bfloat162* gh = reinterpret_cast<const __nv_bfloat162*>(&g);
  const __nv_bfloat162* uh = reinterpret_cast<const __nv_bfloat162*>(&u);
  uint4 out;
  __nv_bfloat162* oh = reinterpret_cast<__nv_bfloat162*>(&out);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 gf = __bfloat1622float2(gh[i]), uf = __bfloat1622float2(uh[i]);
    oh[i] = __floats2bfloat162_rn(silu(gf.x) * uf.x, silu(gf.y) * uf.y);
  }
  return out;
}

template <int kThreads, int kVecs>
__global__ void __launch_bounds__(kThreads) silu_mul_fp8_kernel(const __grid_constant__ Params p) {
  cuda::pdl_wait();
  cuda::pdl_trigger();
  const int64_t r = blockIdx.x;
  const bf16* gate = p.gate_up + r * p.gu_stride;
  const bf16* up = gate + p.inter;
  uint4 g[kVecs], u[kVecs];
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {  // all loads first
    const int64_t c = (static_cast<int64_t>(i) * kThreads + threadIdx.x) * 8;
    if (c < p.inter) {
      g[i] = *reinterpret_cast<const uint4*>(gate + c);
      u[i] = *reinterpret_cast<const uint4*>(up + c);
    }
  }
  float m = 0.0f;
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    const int64_t c = (static_cast<int64_t>(i) * kThreads + threadIdx.x) * 8;
    if (c < p.inter) {
      g[i] = swiglu8(g[i], u[i]);
      m = fmaxf(m, abs_max8(g[i]));
    }
  }
  const float s = scale_for(cuda::fp8row::block_amax<kThreads>(m));
  if (threadIdx.x == 0) p.scale[r] = s;
  uint8_t* out = p.q + r * p.inter;
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    const int64_t c = (static_cast<int64_t>(i) * kThreads + threadIdx.x) * 8;
    if (c < p.inter) *reinterpret_cast<uint2*>(out + c) = quantize8(g[i], s);
  }
}

struct Variant {
  SiluMulFp8CudaVariant info;
  void (*kernel)(const Params);
};
// <threads, vecs, max inter>. The first row that fits is taken; the 1024-thread rows only for
// <= kFewRows rows. H100, Mixtral decode (2 rows of 14336): 256 x 8 took 9.0 us per call (ncu).
constexpr Variant kVariants[] = {
    {{1024, 1, 8192}, &silu_mul_fp8_kernel<1024, 1>},
    {{1024, 2, 16384}, &silu_mul_fp8_kernel<1024, 2>},
    {{256, 1, 2048}, &silu_mul_fp8_kernel<256, 1>},
    {{256, 2, 4096}, &silu_mul_fp8_kernel<256, 2>},
    {{256, 4, 8192}, &silu_mul_fp8_kernel<256, 4>},
    {{256, 8, 16384}, &silu_mul_fp8_kernel<256, 8>},
};

}  // namespace

std::span<const SiluMulFp8CudaVariant> silu_mul_fp8_cuda_variants() {
  static const auto kInfo = [] {
    std::array<SiluMulFp8CudaVariant, std::size(kVariants)> t{};
    for (size_t i = 0; i < t.size(); ++i) t[i] = kVariants[i].info;
    return t;
  }();
  return kInfo;
}

Status silu_mul_fp8_cuda(const SiluMulFp8Args& a, CUstream_st* stream) {
  const Tensor &gu = a.gate_up, &q = a.q, &sc = a.scale;
  if (gu.ndim != 2 || q.ndim != 2 || gu.dtype != DType::kBF16 || q.dtype != DType::kFp8E4M3 || sc.dtype != DType::kF32 ||
      gu.device != Device::kCuda || q.device != Device::kCuda || sc.device != Device::kCuda ||
      gu.shape[0] != q.shape[0] || gu.shape[1] != 2 * q.shape[1] || sc.numel() != q.shape[0] || !sc.is_contiguous())
    return invalid_argument("silu_mul_fp8_cuda: want gate_up [rows, 2 * inter] bf16, q [rows, inter] fp8 e4m3, scale "
                            "[rows] f32, all on the device; got gate_up " + gu.shape_string() + ", q " + q.shape_string() +
                            ", scale " + sc.shape_string());
  const int64_t rows = q.shape[0], inter = q.shape[1];
  if (rows == 0) return ok_status();
  if (inter % 8 != 0 || (gu.strides[1] != 1) || gu.strides[0] % 8 != 0 || reinterpret_cast<uintptr_t>(gu.data) % 16 != 0 ||
      !q.is_contiguous() || reinterpret_cast<uintptr_t>(q.data) % 8 != 0)
    return unimplemented("silu_mul_fp8_cuda: inter " + std::to_string(inter) +
                         " (want a multiple of 8 with 16-byte aligned gate_up rows and contiguous q)");
  if (rows > 0x7fffffff) return out_of_range("silu_mul_fp8_cuda: too many rows");
  const Variant* v = nullptr;
  for (const Variant& c : kVariants)
    if (!v && inter <= c.info.max_inter && (c.info.threads < 1024 || rows <= kFewRows)) v = &c;
  if (!v) return unimplemented("silu_mul_fp8_cuda: inter " + std::to_string(inter) + " (supported: up to 16384)");
  const Params p{static_cast<const bf16*>(gu.data), static_cast<uint8_t*>(q.data), static_cast<float*>(sc.data),
                 gu.strides[0], inter};
  KILN_CUDA_CHECK(cuda::launch_pdl(v->kernel, dim3(static_cast<unsigned>(rows)), dim3(static_cast<unsigned>(v->info.threads)), 0,
                                   stream, p));
  KILN_CUDA_CHECK_LAUNCH();
  return ok_status();
}

}  // namespace kiln
