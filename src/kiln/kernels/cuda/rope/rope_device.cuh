// RoPE's device pieces shared by the RoPE + KV-write kernels (rope_kv_write.cu) and decode
// attention with RoPE fused in (attention/decode_rope.cuh), so that both produce the same bits:
// the angle table, the rotate-half rotation of 8-element pieces, fp8 quantization of 8 floats.
#pragma once
#include <cuda_fp8.h>

#include <cstdint>

namespace kiln::cuda::rope {

// cos_s[i], sin_s[i] for i in [0, half) of the angle pos * inv_freq[i] (fp32 product, sin / cos in
// double, as the CPU reference), threads i0, i0 + stride, ... of the caller. The caller syncs.
__device__ __forceinline__ void angle_table(float pos, const float* inv_freq, int half, float* cos_s, float* sin_s,
                                            int i0, int stride) {
  for (int i = i0; i < half; i += stride) {
    const float angle = pos * inv_freq[i];
    double s, c;
    sincos(static_cast<double>(angle), &s, &c);
    cos_s[i] = static_cast<float>(c);
    sin_s[i] = static_cast<float>(s);
  }
}

// x1 = x[i..i+8), x2 = x[half + i..): (x1, x2) <- (x1 cos - x2 sin, x2 cos + x1 sin), as explicit
// fmas in the order of the CPU reference's rotate_fma (no contraction left to the compiler, so
// every kernel that rotates gets the same bits).
__device__ __forceinline__ void rotate_pair(float (&x1)[8], float (&x2)[8], const float* cos_t, const float* sin_t) {
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const float a = x1[i], b = x2[i];
    x1[i] = __fmaf_rn(a, cos_t[i], -__fmul_rn(b, sin_t[i]));
    x2[i] = __fmaf_rn(b, cos_t[i], __fmul_rn(a, sin_t[i]));
  }
}

// One head held by L lanes, E elements each (lane l holds [l E, l E + E); E L = head_dim), in
// place: RoPE (a pair (i, i + d/2) sits in lanes l and l ^ L/2), then the orthonormal
// Walsh-Hadamard transform (stages of stride >= E are lane shuffles), then the 1 / sqrt(d) product
// `norm`. The same f32 operations in the same order as the CPU (rotate_fma, hadamard.h's stages):
// the quantized cache bytes match. mask: the head's lanes.
template <int E, int L>
__device__ __forceinline__ void rope_hadamard(float (&x)[E], int lane, unsigned mask, const float* cos_s,
                                              const float* sin_s, float norm) {
  const bool first = lane < L / 2;
#pragma unroll
  for (int j = 0; j < E; ++j) {
    const float cs = cos_s[(lane % (L / 2)) * E + j], sn = sin_s[(lane % (L / 2)) * E + j];
    const float other = __shfl_xor_sync(mask, x[j], L / 2);
    const float a = first ? x[j] : other, b = first ? other : x[j];
    x[j] = first ? __fmaf_rn(a, cs, -__fmul_rn(b, sn)) : __fmaf_rn(b, cs, __fmul_rn(a, sn));
  }
  // Walsh-Hadamard stages len = 1, 2, ...: (u, v) -> (u + v, u - v), u the lower element.
#pragma unroll
  for (int len = 1; len < E; len <<= 1)
#pragma unroll
    for (int j = 0; j < E; ++j)
      if ((j & len) == 0) {
        const float u = x[j], v = x[j + len];
        x[j] = __fadd_rn(u, v);
        x[j + len] = __fsub_rn(u, v);
      }
#pragma unroll
  for (int lanes = 1; lanes < L; lanes <<= 1) {  // len = lanes * E
    const bool lower = (lane & lanes) == 0;
#pragma unroll
    for (int j = 0; j < E; ++j) {
      const float other = __shfl_xor_sync(mask, x[j], lanes);
      x[j] = lower ? __fadd_rn(x[j], other) : __fsub_rn(other, x[j]);
    }
  }
#pragma unroll
  for (int j = 0; j < E; ++j) x[j] = __fmul_rn(x[j], norm);
}

// One value -> fp8 e4m3 of x / scale (IEEE division, round to nearest even, saturating).
__device__ __forceinline__ uint32_t quantize_fp8(float x, float scale) {
  return __nv_cvt_float_to_fp8(__fdiv_rn(x, scale), __NV_SATFINITE, __NV_E4M3);
}

// 8 floats -> 8 fp8 e4m3 of x / scale (IEEE division, round to nearest even, saturating).
__device__ __forceinline__ uint2 quantize_fp8x8(const float (&x)[8], float scale) {
  uint32_t w[2] = {0, 0};
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const uint32_t byte = quantize_fp8(x[i], scale);
    w[i / 4] |= byte << (8 * (i % 4));
  }
  return make_uint2(w[0], w[1]);
}

}  // namespace kiln::cuda::rope
