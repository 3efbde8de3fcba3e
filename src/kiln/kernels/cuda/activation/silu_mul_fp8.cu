// CUDA silu_mul_fp8 (kernels/silu_mul_fp8.h): one block of kThreads threads per row, the row's
// SwiGLU values held in registers between the amax and the quantization (kVecs 8-element vectors
// per thread). Arithmetic of silu_mul_cuda (f32 silu, bf16 store) then gemm_fp8_activations'
// per-token quantizer (amax of the bf16 values, scale = amax / 448 or 1, IEEE division,
// RNE-saturating e4m3), bit for bit, with the two divisions of the common case written out
// branch-free (swiglu_exact.cuh, fp8_row_divisor.cuh): ~26 instructions per element instead of
// ~42, which is what held prefill rows at ~2.0 TB/s (the SMs issued instructions, not loads).
// Variants: 256 threads x kVecs = 4, 8 for many rows, 1024 x 1, 2 for few rows (decode: a handful
// of blocks, latency-bound).
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <array>
#include <iterator>
#include <string>

#include "kiln/kernels/cuda/activation/fp8_row_divisor.cuh"
#include "kiln/kernels/cuda/activation/swiglu_exact.cuh"
#include "kiln/kernels/cuda/common/cuda_check.h"
#include "kiln/kernels/cuda/common/pdl.cuh"
#include "kiln/kernels/cuda/common/reduce.cuh"
#include "kiln/kernels/cuda/quantize/fp8_row.cuh"
#include "kiln/kernels/silu_mul_fp8.h"

namespace kiln {
namespace {

using bf16 = __nv_bfloat16;
using cuda::fp8row::divide;
using cuda::fp8row::RowDivisor;
using cuda::fp8row::row_divisor;
using cuda::fp8row::scale_for;
constexpr int kFewRows = 128;  // up to this many rows the 1024-thread rows run

struct Params {
  const bf16* gate_up;  // [rows, 2 * inter], row stride gu_stride
  uint8_t* q;           // [rows, inter], row stride inter
  float* scale;         // [rows]
  int64_t gu_stride, inter;
  // dequant (SiluMulFp8Dequant; the kDequant kernels)
  const int32_t* groups;  // [groups, 3]: expert, begin, end
  const float* row_scale;
  const int64_t* col_scale_ptrs;
  int64_t rows_per_group;
  int trigger_early;  // SiluMulFp8Args::trigger_early
};

// ---- one thread's slice of a row: vectors c = i * kThreads + threadIdx.x, i < kVecs ----------

// The slice's gate and up vectors, all loads issued before any use.
template <int kThreads, int kVecs>
__device__ __forceinline__ void load_slice(const uint4* gate, const uint4* up, int nvec, uint4 (&g)[kVecs],
                                           uint4 (&u)[kVecs]) {
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    const int c = i * kThreads + threadIdx.x;
    if (c < nvec) {
      g[i] = gate[c];
      u[i] = up[c];
    }
  }
}

// SwiGLU of the slice into v; returns max |v|.
template <int kThreads, int kVecs, bool kFast>
__device__ __forceinline__ float swiglu_slice(const uint4 (&g)[kVecs], const uint4 (&u)[kVecs], int nvec,
                                              uint4 (&v)[kVecs]) {
  __nv_bfloat162 m = __float2bfloat162_rn(0.0f);
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    if (i * kThreads + static_cast<int>(threadIdx.x) < nvec) {
      v[i] = cuda::swiglu::swiglu8<kFast>(g[i], u[i]);
      m = cuda::swiglu::abs_max8(v[i], m);
    }
  }
  const float2 mf = __bfloat1622float2(m);
  return fmaxf(mf.x, mf.y);
}

// The same with the fast division when all the slice's g allow it (nearly always).
template <int kThreads, int kVecs>
__device__ __forceinline__ float swiglu_slice(const uint4 (&g)[kVecs], const uint4 (&u)[kVecs], int nvec,
                                              uint4 (&v)[kVecs]) {
  cuda::swiglu::RangeAcc range;
#pragma unroll
  for (int i = 0; i < kVecs; ++i)
    if (i * kThreads + static_cast<int>(threadIdx.x) < nvec) cuda::swiglu::range_add8(range, g[i]);
  return cuda::swiglu::in_fast_range(range) ? swiglu_slice<kThreads, kVecs, true>(g, u, nvec, v)
                                            : swiglu_slice<kThreads, kVecs, false>(g, u, nvec, v);
}

// 8 bf16 -> 8 e4m3 bytes in order, each x / d.s.
template <bool kFast>
__device__ __forceinline__ uint2 quantize8(const uint4& v, const RowDivisor& d) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
  uint32_t pair[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    const float2 q = make_float2(divide<kFast>(f.x, d), divide<kFast>(f.y, d));
    pair[i] = __nv_cvt_float2_to_fp8x2(q, __NV_SATFINITE, __NV_E4M3);
  }
  return make_uint2(__byte_perm(pair[0], pair[1], 0x5410), __byte_perm(pair[2], pair[3], 0x5410));
}

template <int kThreads, int kVecs, bool kFast>
__device__ __forceinline__ void store_slice(const uint4 (&v)[kVecs], const RowDivisor& d, int nvec, uint8_t* out) {
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    const int c = i * kThreads + threadIdx.x;
    if (c < nvec) reinterpret_cast<uint2*>(out)[c] = quantize8<kFast>(v[i], d);
  }
}

// Quantizes the slice by the row's scale s into out ([inter] e4m3) and thread 0 writes s.
template <int kThreads, int kVecs>
__device__ __forceinline__ void quantize_slice(const uint4 (&v)[kVecs], float s, int nvec, uint8_t* out, float* scale) {
  if (threadIdx.x == 0) *scale = s;
  const RowDivisor d = row_divisor(s);
  if (d.fast) store_slice<kThreads, kVecs, true>(v, d, nvec, out);
  else store_slice<kThreads, kVecs, false>(v, d, nvec, out);
}

// 8 bf16 v -> bf16(v * rs * cs[i]) (f32 products in that order, round to nearest even).
__device__ __forceinline__ uint4 dequant8(const uint4& v, float rs, const float* cs) {
  const float4 c0 = reinterpret_cast<const float4*>(cs)[0], c1 = reinterpret_cast<const float4*>(cs)[1];
  const float c[8] = {c0.x, c0.y, c0.z, c0.w, c1.x, c1.y, c1.z, c1.w};
  uint4 out;
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
  __nv_bfloat162* o = reinterpret_cast<__nv_bfloat162*>(&out);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    o[i] = __floats2bfloat162_rn(f.x * rs * c[2 * i], f.y * rs * c[2 * i + 1]);
  }
  return out;
}

// ---- the kernel ------------------------------------------------------------------------------
// kDequant: row blockIdx.x of the padded groups (SiluMulFp8Dequant), scaled after the loads.
template <int kThreads, int kVecs, bool kDequant>
__global__ void __launch_bounds__(kThreads) silu_mul_fp8_row_kernel(const __grid_constant__ Params p) {
  if (p.trigger_early) cuda::pdl_trigger();
  cuda::pdl_wait();
  if (!p.trigger_early) cuda::pdl_trigger();
  const int64_t r = blockIdx.x;
  const int nvec = static_cast<int>(p.inter / 8);
  const uint4* gate = reinterpret_cast<const uint4*>(p.gate_up + r * p.gu_stride);
  uint4 g[kVecs], u[kVecs], v[kVecs];
  if constexpr (kDequant) {
    const int32_t* grp = p.groups + 3 * (r / p.rows_per_group);
    const int64_t rr = r % p.rows_per_group;
    const int32_t begin = grp[1];
    if (rr >= grp[2] - begin) return;  // padding of the group: not a row
    load_slice<kThreads, kVecs>(gate, gate + nvec, nvec, g, u);
    const float rs = p.row_scale[begin + rr];
    const float* cs = reinterpret_cast<const float*>(p.col_scale_ptrs[grp[0]]);
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      const int c = i * kThreads + threadIdx.x;
      if (c < nvec) {
        g[i] = dequant8(g[i], rs, cs + c * 8);
        u[i] = dequant8(u[i], rs, cs + p.inter + c * 8);
      }
    }
  } else {
    load_slice<kThreads, kVecs>(gate, gate + nvec, nvec, g, u);
  }
  const float m = swiglu_slice<kThreads, kVecs>(g, u, nvec, v);
  const float s = scale_for(cuda::fp8row::block_amax<kThreads>(m));
  quantize_slice<kThreads, kVecs>(v, s, nvec, p.q + r * p.inter, p.scale + r);
}

// ---- variants --------------------------------------------------------------------------------
struct Variant {
  SiluMulFp8CudaVariant info;
  void (*kernel)(const Params);
};
// <threads, vecs, max inter, max rows>. Dispatch takes the first row that fits. H100
// (bench/silu_mul_fp8_bench.cu, one call, before = the kernel with IEEE divisions):
//   2 rows of 14336 (Mixtral decode)     1024 x 2   3.8 us (before 4.6)
//   32 rows of 14336                     1024 x 2   3.9 us (before 4.9)
//   4096 rows of 14336 (Mixtral prefill) 256 x 8    99.3 us, 2.96 TB/s (before 141.9 us, 2.07)
//   4096 rows of 8192 | 4096             256 x 4    2.89 | 2.75 TB/s (256 x 8: 2.67 | 1.90)
// Tried and dropped: a persistent schedule (a block per SM walking rows, each row bulk-copied
// (TMA) into shared memory up to 3 rows ahead): 2.70 TB/s (512 x 4) and 2.78 (1024 x 2) at 4096 x
// 14336, 2.38 (256 x 2, 3 blocks per SM) at 4096 x 4096: once the arithmetic is short, two
// 256-thread blocks per SM, each with its row's loads in flight, hide the latency better.
// The dequant rows (MoE after MoeBatchedGemm) repeat the shapes with the scaling pass.
constexpr Variant kVariants[] = {
    {{1024, 1, 8192, kFewRows, false}, &silu_mul_fp8_row_kernel<1024, 1, false>},
    {{1024, 2, 16384, kFewRows, false}, &silu_mul_fp8_row_kernel<1024, 2, false>},
    {{256, 4, 8192, 0, false}, &silu_mul_fp8_row_kernel<256, 4, false>},
    {{256, 8, 16384, 0, false}, &silu_mul_fp8_row_kernel<256, 8, false>},
    {{1024, 1, 8192, kFewRows, true}, &silu_mul_fp8_row_kernel<1024, 1, true>},
    {{1024, 2, 16384, kFewRows, true}, &silu_mul_fp8_row_kernel<1024, 2, true>},
    {{256, 4, 8192, 0, true}, &silu_mul_fp8_row_kernel<256, 4, true>},
    {{256, 8, 16384, 0, true}, &silu_mul_fp8_row_kernel<256, 8, true>},
};

Status launch(const SiluMulFp8Args& a, size_t index, CUstream_st* stream) {
  const Variant& v = kVariants[index];
  const SiluMulFp8Dequant& dq = a.dequant;
  const Params p{static_cast<const bf16*>(a.gate_up.data), static_cast<uint8_t*>(a.q.data),
                 static_cast<float*>(a.scale.data), a.gate_up.strides[0], a.q.shape[1],
                 static_cast<const int32_t*>(dq.groups.data), static_cast<const float*>(dq.row_scale.data),
                 static_cast<const int64_t*>(dq.col_scale_ptrs.data), dq.rows_per_group, a.trigger_early ? 1 : 0};
  KILN_CUDA_CHECK(cuda::launch_pdl(v.kernel, dim3(static_cast<unsigned>(a.q.shape[0])),
                                   dim3(static_cast<unsigned>(v.info.threads)), 0, stream, p));
  KILN_CUDA_CHECK_LAUNCH();
  return ok_status();
}

// The arguments' shapes and layout, or why not.
Status check_args(const SiluMulFp8Args& a) {
  const Tensor &gu = a.gate_up, &q = a.q, &sc = a.scale;
  if (gu.ndim != 2 || q.ndim != 2 || gu.dtype != DType::kBF16 || q.dtype != DType::kFp8E4M3 || sc.dtype != DType::kF32 ||
      gu.device != Device::kCuda || q.device != Device::kCuda || sc.device != Device::kCuda ||
      gu.shape[0] != q.shape[0] || gu.shape[1] != 2 * q.shape[1] || sc.numel() != q.shape[0] || !sc.is_contiguous())
    return invalid_argument("silu_mul_fp8_cuda: want gate_up [rows, 2 * inter] bf16, q [rows, inter] fp8 e4m3, scale "
                            "[rows] f32, all on the device; got gate_up " + gu.shape_string() + ", q " + q.shape_string() +
                            ", scale " + sc.shape_string());
  const int64_t inter = q.shape[1];
  if (inter % 8 != 0 || (gu.strides[1] != 1) || gu.strides[0] % 8 != 0 || reinterpret_cast<uintptr_t>(gu.data) % 16 != 0 ||
      !q.is_contiguous() || reinterpret_cast<uintptr_t>(q.data) % 8 != 0)
    return unimplemented("silu_mul_fp8_cuda: inter " + std::to_string(inter) +
                         " (want a multiple of 8 with 16-byte aligned gate_up rows and contiguous q)");
  if (q.shape[0] > 0x7fffffff) return out_of_range("silu_mul_fp8_cuda: too many rows");
  const SiluMulFp8Dequant& dq = a.dequant;
  if (dq.rows_per_group > 0) {
    auto on_device = [](const Tensor& t, DType d) { return t.device == Device::kCuda && t.dtype == d && t.data && t.is_contiguous(); };
    if (!on_device(dq.groups, DType::kInt32) || !on_device(dq.row_scale, DType::kF32) ||
        !on_device(dq.col_scale_ptrs, DType::kInt64) || dq.groups.ndim != 2 || dq.groups.shape[1] != 3 ||
        q.shape[0] != dq.groups.shape[0] * dq.rows_per_group)
      return invalid_argument("silu_mul_fp8_cuda: dequant wants device groups [groups, 3] int32, row_scale f32, "
                              "col_scale_ptrs [experts] int64 and rows = groups x rows_per_group; got " +
                              std::to_string(q.shape[0]) + " rows, groups " + dq.groups.shape_string() + " of " +
                              std::to_string(dq.rows_per_group));
  }
  return ok_status();
}

bool fits(const SiluMulFp8CudaVariant& v, const SiluMulFp8Args& a) {
  const int64_t rows = a.q.shape[0], inter = a.q.shape[1];
  return inter <= v.max_inter && (v.max_rows == 0 || rows <= v.max_rows) && v.dequant == (a.dequant.rows_per_group > 0);
}

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
  KILN_RETURN_IF_ERROR(check_args(a));
  const int64_t rows = a.q.shape[0], inter = a.q.shape[1];
  if (rows == 0) return ok_status();
  for (size_t i = 0; i < std::size(kVariants); ++i)
    if (fits(kVariants[i].info, a)) return launch(a, i, stream);
  return unimplemented("silu_mul_fp8_cuda: inter " + std::to_string(inter) + " (supported: up to 16384)");
}

Status silu_mul_fp8_cuda_variant(const SiluMulFp8Args& a, size_t variant, CUstream_st* stream) {
  KILN_RETURN_IF_ERROR(check_args(a));
  if (variant >= std::size(kVariants)) return out_of_range("silu_mul_fp8_cuda_variant: no row " + std::to_string(variant));
  const int64_t rows = a.q.shape[0], inter = a.q.shape[1];
  if (!fits(kVariants[variant].info, a))
    return unimplemented("silu_mul_fp8_cuda_variant: row " + std::to_string(variant) + " does not take " +
                         std::to_string(rows) + " rows of " + std::to_string(inter));
  if (rows == 0) return ok_status();
  return launch(a, variant, stream);
}

}  // namespace kiln
