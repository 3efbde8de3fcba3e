// x / scale for a whole row in 3 FMA-pipe instructions per element instead of an IEEE division
// (__fdiv_rn: ~8 instructions and a slow-path branch), with the same bits. Markstein's correction:
// with r = RN(1 / s) (one __frcp_rn per row), q0 = RN(x * r), e = q0 * s - x (exact, one fma) and
// q = RN(q0 - e * r) is the correctly rounded x / s, hence __fdiv_rn(x, s), as long as nothing
// over- or underflows: the per-row quantizer's domain |x| <= amax = ~448 * s keeps |q| <= ~448, and
// s in [2^-60, 2^60] keeps x * r and e normal where |q| >= 2^-11 (smaller q are e4m3 zeros either
// way; checked on the host over every bf16 x for 4000 scales and on the device by
// tests/kernels/moe_silu_mul_fp8_cuda_test.cu). e = fma(q0, s, -x), not fma(-q0, s, x), so that
// x = -0 gives -0 (e = +0, q = -0 + -0) as the division does. Rows outside the range divide.
#pragma once
#include <cuda_runtime.h>

namespace kiln::cuda::fp8row {

struct RowDivisor {
  float s;    // the row's scale (> 0)
  float r;    // RN(1 / s)
  bool fast;  // s in [2^-60, 2^60]: divide() may use r
};

__device__ __forceinline__ RowDivisor row_divisor(float s) {
  return {s, __frcp_rn(s), s >= 0x1p-60f && s <= 0x1p60f};
}

// x / d.s, correctly rounded, for |x| <= ~448 * d.s. kFast: d.fast holds (the caller branches once
// per row, so the loop carries no per-element branch).
template <bool kFast>
__device__ __forceinline__ float divide(float x, const RowDivisor& d) {
  if constexpr (kFast) {
    const float q0 = __fmul_rn(x, d.r);
    const float e = __fmaf_rn(q0, d.s, -x);
    return __fmaf_rn(e, -d.r, q0);
  } else {
    return __fdiv_rn(x, d.s);
  }
}

}  // namespace kiln::cuda::fp8row
