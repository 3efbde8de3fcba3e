// fp8 V tiles [keys, head_dim] (as TMA loads them from the cache) -> Vt [head_dim, keys] in shared
// memory, K-major for the PV wgmma (fp8 wgmma wants both operands K-major). Three versions, all with
// the same Vt layout and key permutation: transpose_v (any fp8 head_dim, word loads / stores),
// transpose_v_fast (d128, precomputed addresses, 16-byte stores) and transpose_v_ldsm (d128,
// ldmatrix.trans / stmatrix). Run by the producer warpgroup (128 threads).
#pragma once
#include <cstdint>

#include "kiln/kernels/cuda/attention/hopper_device.cuh"

namespace kiln::cuda::hopper {

// 16 words w[k] (key k: 4 bytes = d i = 0..3) -> out[i][t]: the 4 key bytes of d i for keys
// 2t + (0, 1, 8, 9) (the P fragment's column order within 16 keys), 32 byte permutes.
__device__ __forceinline__ void permute_words_16x4(const uint32_t (&w)[16], uint32_t (&out)[4][4]) {
#pragma unroll
  for (int t = 0; t < 4; ++t) {
    const uint32_t w0 = w[2 * t], w1 = w[2 * t + 1], w2 = w[2 * t + 8], w3 = w[2 * t + 9];
    const uint32_t lo01 = __byte_perm(w0, w1, 0x5140), lo23 = __byte_perm(w2, w3, 0x5140);
    const uint32_t hi01 = __byte_perm(w0, w1, 0x7362), hi23 = __byte_perm(w2, w3, 0x7362);
    out[0][t] = __byte_perm(lo01, lo23, 0x5410);
    out[1][t] = __byte_perm(lo01, lo23, 0x7632);
    out[2][t] = __byte_perm(hi01, hi23, 0x5410);
    out[3][t] = __byte_perm(hi01, hi23, 0x7632);
  }
}

// fp8 d128, the producer warpgroup (128 threads): raw V tile [128 keys, 128 B] (TMA 128-byte swizzle)
// -> Vt [128 d, 128 key columns] (same swizzle), keys permuted within each 16 as in transpose_v.
// Thread (warp, lane q) takes d quad 4q .. 4q + 3 of key groups h = ((q >> 1) & 3) ^ (2 warp + u),
// u = 0, 1: 16 word loads (one per key; banks 4 ((q >> 2) ^ key % 8) + q % 4, all 32 distinct), 32
// byte permutes, 4 16-byte stores (rows 4q + i, chunk h ^ 4 (q & 1) ^ i: the 8 rows of a quarter warp
// hit 8 distinct chunks). `ld[j]` = ((q >> 2) ^ j) << 4 | 4 (q % 4), per thread; keys >= `valid`
// (kv_len - first key of the tile) become 0 (their cache slots may hold anything, NaN included).
template <bool kMask>
__device__ __forceinline__ void transpose_v_fast_units(uint32_t raw, uint32_t vt, const uint32_t (&ld)[8], int q,
                                                       int warp, int valid) {
#pragma unroll
  for (int u = 0; u < 2; ++u) {
    const int h = ((q >> 1) & 3) ^ (2 * warp + u);
    const uint32_t src = raw + h * 2048;
    uint32_t w[16];
#pragma unroll
    for (int k = 0; k < 16; ++k) {
      asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(w[k]) : "r"(src + ld[k & 7] + 128 * k));
      if (kMask && 16 * h + k >= valid) w[k] = 0u;
    }
    uint32_t out[4][4];  // [row i][key quad t]
    permute_words_16x4(w, out);
    const uint32_t z = static_cast<uint32_t>(h ^ (4 * (q & 1)));
    const uint32_t dst = vt + 512 * q;
#pragma unroll
    for (int i = 0; i < 4; ++i)
      asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"r"(dst + ((z ^ i) << 4) + 128 * i),
                   "r"(out[i][0]), "r"(out[i][1]), "r"(out[i][2]), "r"(out[i][3])
                   : "memory");
  }
}
__device__ __forceinline__ void transpose_v_fast(uint32_t raw, uint32_t vt, const uint32_t (&ld)[8], int q, int warp,
                                                 int valid) {
  if (valid >= 128)
    transpose_v_fast_units<false>(raw, vt, ld, q, warp, valid);
  else
    transpose_v_fast_units<true>(raw, vt, ld, q, warp, valid);
}

// fp8 d128, the producer warpgroup: the same transpose as transpose_v_fast (same Vt layout and key
// permutation) by ldmatrix.trans / stmatrix, 512 bytes per warp instruction instead of 128 / 512.
// Unit h of warp w: keys 16h .. 16h + 15 x d bytes 32w .. 32w + 31. ldmatrix.x4.trans of the 8x8 b16
// blocks (keys 16h + 8 (m & 1) + 0..7, d bytes 32w + 16 (m >> 1) + 0..15), m = lane / 8 (their 8 row
// addresses hit 8 distinct 16-byte chunks: conflict-free), gives lane (q = lane / 4, t = lane % 4)
// r[m] = {V[k][d], V[k][d + 1], V[k + 1][d], V[k + 1][d + 1]}, k = 16h + 2t + 8 (m & 1), d = 32w + 16
// (m >> 1) + 2q; one byte permute per output word gives Vt[d (+1)][keys 16h + 2t + {0, 1, 8, 9}] =
// word t of chunk h: exactly the 8x8 b16 blocks stmatrix.x4 stores (rows d = 32w + 16 (m >> 1) + 2r +
// (m & 1) for lane 8m + r; 2-way conflicted). `ld_off` / `st_off` / `st_x`: per lane, see produce().
// Keys >= `valid` become 0.
template <bool kMask>
__device__ __forceinline__ void transpose_v_ldsm_units(uint32_t raw, uint32_t vt, uint32_t ld_off, uint32_t st_off,
                                                       uint32_t st_x, int t, int valid) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    uint32_t r[4][4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int h = 4 * half + u;
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                   : "=r"(r[u][0]), "=r"(r[u][1]), "=r"(r[u][2]), "=r"(r[u][3])
                   : "r"(raw + ld_off + h * 2048));
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const int h = 4 * half + u;
      uint32_t o0 = __byte_perm(r[u][0], r[u][1], 0x6420), o1 = __byte_perm(r[u][0], r[u][1], 0x7531);
      uint32_t o2 = __byte_perm(r[u][2], r[u][3], 0x6420), o3 = __byte_perm(r[u][2], r[u][3], 0x7531);
      if constexpr (kMask) {
        const int k = 16 * h + 2 * t;
        const uint32_t keep = (k < valid ? 0xffu : 0u) | (k + 1 < valid ? 0xff00u : 0u) |
                              (k + 8 < valid ? 0xff0000u : 0u) | (k + 9 < valid ? 0xff000000u : 0u);
        o0 &= keep, o1 &= keep, o2 &= keep, o3 &= keep;
      }
      asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(
                       vt + st_off + ((static_cast<uint32_t>(h) ^ st_x) << 4)),
                   "r"(o0), "r"(o1), "r"(o2), "r"(o3)
                   : "memory");
    }
  }
}
__device__ __forceinline__ void transpose_v_ldsm(uint32_t raw, uint32_t vt, uint32_t ld_off, uint32_t st_off,
                                                 uint32_t st_x, int t, int valid) {
  if (valid >= 128)
    transpose_v_ldsm_units<false>(raw, vt, ld_off, st_off, st_x, t, valid);
  else
    transpose_v_ldsm_units<true>(raw, vt, ld_off, st_off, st_x, t, valid);
}

// fp8: V tile [kBlockN keys, kHeadDim] (as loaded) -> Vt [kHeadDim, kBlockN keys], K-major for the
// PV wgmma. Within each 16 keys, column 4t + i of Vt holds key 2t + (i & 1) + 8 (i >> 1): the key
// order in which the S accumulators of thread t sit in the e4m3 A fragment of P, so P needs no
// shuffle. Keys >= kv_len become 0 (their cache slots may hold anything, NaN included).
// A thread moves 4 keys x 4 columns (4 word loads, 4 word stores). Lane (t = lane % 4, b = lane / 4)
// of item (dqb, r) takes columns 4 (8 dqb + b) .. +3 of key group h16 = b ^ r: with d128's 128-byte
// rows the loads of a warp hit 32 different banks (the swizzle XORs the 16-byte chunk with key % 8 =
// 2t + c, the word is b % 4; d64's 64-byte rows: 2-way), and so do the stores (Vt chunk h16 ^
// (column % 8) = b ^ r ^ 4 (b & 1) ^ e, the word is t). The old mapping stored 4-way conflicted.
template <typename C, int kHeadDim>
__device__ __forceinline__ void transpose_v(const uint8_t* __restrict__ raw, uint8_t* __restrict__ vt, int key0, int kv_len,
                                            int tid) {
  constexpr int kItems = kHeadDim / 32 * 8;  // (32-column block, key-group rotation r)
  constexpr int kBatch = 2;                   // items whose loads are in flight together
  static_assert(kItems % (4 * kBatch) == 0 && C::kBlockN == 128 && C::kPanels == 1);
  const int warp = tid / 32, lane = tid % 32, t = lane % 4, b = lane / 4;
#pragma unroll 1
  for (int k0 = 0; k0 < kItems / 4; k0 += kBatch) {
    uint32_t w[kBatch][4];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int item = warp + 4 * (k0 + u), d0 = 4 * (8 * (item / 8) + b), h16 = b ^ (item % 8);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int key = 16 * h16 + 2 * t + (i & 1) + 8 * (i >> 1);
        const uint32_t v =
            *reinterpret_cast<const uint32_t*>(raw + swizzled<C::kRowBytes>(key, d0 / 16) + d0 % 16);
        w[u][i] = key0 + key < kv_len ? v : 0u;
      }
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int item = warp + 4 * (k0 + u), d0 = 4 * (8 * (item / 8) + b), h16 = b ^ (item % 8);
      const uint32_t lo01 = __byte_perm(w[u][0], w[u][1], 0x5140), lo23 = __byte_perm(w[u][2], w[u][3], 0x5140);
      const uint32_t hi01 = __byte_perm(w[u][0], w[u][1], 0x7362), hi23 = __byte_perm(w[u][2], w[u][3], 0x7362);
      const uint32_t out[4] = {__byte_perm(lo01, lo23, 0x5410), __byte_perm(lo01, lo23, 0x7632),
                               __byte_perm(hi01, hi23, 0x5410), __byte_perm(hi01, hi23, 0x7632)};
#pragma unroll
      for (int e = 0; e < 4; ++e) *reinterpret_cast<uint32_t*>(vt + swizzled<128>(d0 + e, h16) + 4 * t) = out[e];
    }
  }
}

}  // namespace kiln::cuda::hopper
