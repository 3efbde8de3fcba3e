// SwiGLU of 8-element bf16 vectors with the bits of silu_mul_cuda (f32 silu(g) * u rounded to
// bf16, silu(g) = g / (1 + expf(-g)) with an IEEE division), in two builds:
//   kFast = false: the expression itself; nvcc's division carries a range check (FCHK) and a
//                  slow-path call per element (~8 instructions plus the branch scaffolding).
//   kFast = true:  the same division's fast path written out (rcp.approx, one Newton step, one
//                  correction: 6 instructions, no branch). It is what the division computes
//                  whenever |g| is in [2^-90, 64): 1 + expf(-g) is then in [1, 2^93), so nothing
//                  over- or underflows (checked over every bf16 g on the device by
//                  tests/kernels/moe_silu_mul_fp8_cuda_test.cu). g = 0, tiny, large, inf or NaN
//                  take kFast = false: callers test a whole vector with in_fast_range8.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

namespace kiln::cuda::swiglu {

// |g| bounds of the fast division as bf16 bit patterns (sign cleared): 2^-90 and 64.
inline constexpr uint32_t kFastMinBits = 0x1280;  // 2^-90
inline constexpr uint32_t kFastEndBits = 0x4280;  // 64 (excluded); inf and NaN lie above

__device__ __forceinline__ float rcp_approx(float d) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(d));
  return y;
}

template <bool kFast>
__device__ __forceinline__ float silu(float g) {
  if constexpr (kFast) {
    const float d = 1.0f + expf(-g);  // contracted into one fma with expf's last multiply, as in silu_mul_cuda
    float y = rcp_approx(d);
    y = __fmaf_rn(y, __fmaf_rn(-d, y, 1.0f), y);
    const float q = __fmul_rn(g, y);
    return __fmaf_rn(y, __fmaf_rn(-d, q, g), q);
  } else {
    return g / (1.0f + expf(-g));
  }
}

// Running max / min of |g| over 16-bit lanes (the bf16 bit patterns with the sign cleared).
struct RangeAcc {
  uint32_t hi = 0, lo = 0xffffffffu;
};
__device__ __forceinline__ void range_add8(RangeAcc& a, const uint4& g) {
  const uint32_t w[4] = {g.x, g.y, g.z, g.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint32_t m = w[i] & 0x7fff7fffu;
    a.hi = __vmaxu2(a.hi, m);
    a.lo = __vminu2(a.lo, m);
  }
}
__device__ __forceinline__ bool in_fast_range(const RangeAcc& a) {
  return max(a.hi & 0xffffu, a.hi >> 16) < kFastEndBits && min(a.lo & 0xffffu, a.lo >> 16) >= kFastMinBits;
}

// 8 SwiGLU outputs rounded to bf16 (what silu_mul_cuda stores), as 4 bf16 pairs. kFast only when
// every g of the vector is in the fast range.
template <bool kFast>
__device__ __forceinline__ uint4 swiglu8(const uint4& g, const uint4& u) {
  const __nv_bfloat162* gh = reinterpret_cast<const __nv_bfloat162*>(&g);
  const __nv_bfloat162* uh = reinterpret_cast<const __nv_bfloat162*>(&u);
  uint4 out;
  __nv_bfloat162* oh = reinterpret_cast<__nv_bfloat162*>(&out);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 gf = __bfloat1622float2(gh[i]), uf = __bfloat1622float2(uh[i]);
    oh[i] = __floats2bfloat162_rn(silu<kFast>(gf.x) * uf.x, silu<kFast>(gf.y) * uf.y);
  }
  return out;
}

// max(m, |v|) over 4 bf16 pairs, on the bf16x2 max unit (NaN ignored, as fmaxf does).
__device__ __forceinline__ __nv_bfloat162 abs_max8(const uint4& v, __nv_bfloat162 m) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
  for (int i = 0; i < 4; ++i) m = __hmax2(m, __habs2(h[i]));
  return m;
}

}  // namespace kiln::cuda::swiglu
