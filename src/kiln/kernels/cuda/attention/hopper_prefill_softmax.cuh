// The consumer warpgroups' online softmax over a tile of scores in registers, and P's packing into
// wgmma A fragments (included by hopper_prefill_consumer.cuh). Per thread two rows (g and g + 8 of
// its warp's 16) and, per 8 columns of a wgmma m64nN accumulator, 4 floats: d[4j + 2h + e] = (row
// g + 8h, column 8j + 2t + e).
#pragma once

namespace kiln::cuda::hopper {

// Per-thread softmax state of its two rows.
struct RowState {
  float m[2], l[2];  // running max (score units) and thread-partial sum
  float c[2];        // score -> log2 domain multiplier (softmax scale, fp8 Q and K scales)
  int limit[2];      // last key the row sees (causal position, or kv_len - 1)
  int pos[2];        // the row's position, for the sliding window
};

// Masks keys [key0, key0 + kN) of s[kN / 2] against the rows' limits and window.
template <int kN>
__device__ __forceinline__ void mask_tile(float (&s)[kN / 2], int key0, const RowState& st, int window, int t) {
#pragma unroll
  for (int j = 0; j < kN / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int key = key0 + 8 * j + 2 * t + (e & 1), h = e >> 1;
      if (key > st.limit[h] || (window > 0 && key + window <= st.pos[h])) s[4 * j + e] = -INFINITY;
    }
}

// Row h's running max after tile s (kTree: 4 independent chains), moved only past kLazy (log2
// units); rescale[h] = the factor for O's row h (1 if unmoved).
template <int kN, bool kTree>
__device__ __forceinline__ void update_row_max(const float (&s)[kN / 2], RowState& st, float (&rescale)[2], int h,
                                               float kLazy) {
  float mx = st.m[h];
  if constexpr (kTree) {
    float a[4];
#pragma unroll
    for (int c = 0; c < 4; ++c) a[c] = fmaxf(s[4 * c + 2 * h], s[4 * c + 2 * h + 1]);
#pragma unroll
    for (int j = 4; j < kN / 8; ++j) a[j % 4] = fmaxf(a[j % 4], fmaxf(s[4 * j + 2 * h], s[4 * j + 2 * h + 1]));
    mx = fmaxf(mx, fmaxf(fmaxf(a[0], a[1]), fmaxf(a[2], a[3])));
  } else {
#pragma unroll
    for (int j = 0; j < kN / 8; ++j) mx = fmaxf(mx, fmaxf(s[4 * j + 2 * h], s[4 * j + 2 * h + 1]));
  }
  mx = quad_max(mx);
  const bool move = (mx - st.m[h]) * st.c[h] > kLazy;  // false while both are -inf (NaN)
  rescale[h] = move ? exp2_approx((st.m[h] - mx) * st.c[h]) : 1.f;
  st.m[h] = move ? mx : st.m[h];
}

// Online softmax over one tile of scores: s becomes P = 2^(c * (s - m) + kBias); the max moves
// lazily (only when it grows by more than kLazy in log2 units, so P <= 2^(kLazy + kBias)),
// rescale[h] = factor for O's row h (1 if unmoved; 0 on a first real max). A row with no unmasked
// key yet keeps m = -inf and gets P = 0. Column group j (columns 8j + 2t, 8j + 2t + 1) takes
// exp2_poly when bit j % 8 of kPolyMask is set (0: all on MUFU.EX2).
// kTree: max and sums in 4 independent chains per row; kNoSum: no row sums (st.l untouched: the
// tensor cores sum P, kFeatRowSum).
template <int kN, int kPolyMask, bool kProbeNoExp = false, bool kTree = false, bool kNoSum = false>
__device__ __forceinline__ void softmax_tile(float (&s)[kN / 2], RowState& st, float (&rescale)[2], float kBias,
                                             float kLazy) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    update_row_max<kN, kTree>(s, st, rescale, h, kLazy);
    const float base = (st.m[h] == -INFINITY ? 0.f : st.m[h] * st.c[h]) - kBias;
    float sum[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int j = 0; j < kN / 8; ++j) {
      const float x0 = fmaf(s[4 * j + 2 * h], st.c[h], -base), x1 = fmaf(s[4 * j + 2 * h + 1], st.c[h], -base);
      if constexpr (kProbeNoExp) {  // bench probe: the softmax without its exponentials (wrong results)
        s[4 * j + 2 * h] = x0;
        s[4 * j + 2 * h + 1] = x1;
      } else if ((kPolyMask >> (j % 8)) & 1) {
        s[4 * j + 2 * h] = exp2_poly(x0);
        s[4 * j + 2 * h + 1] = exp2_poly(x1);
      } else {
        s[4 * j + 2 * h] = exp2_approx(x0);
        s[4 * j + 2 * h + 1] = exp2_approx(x1);
      }
      if constexpr (!kNoSum) {
        const int c = kTree ? 2 * (j % 2) : 0;
        sum[c] += s[4 * j + 2 * h];
        sum[c + 1] += s[4 * j + 2 * h + 1];
      }
    }
    if constexpr (!kNoSum) st.l[h] = st.l[h] * rescale[h] + ((sum[0] + sum[1]) + (sum[2] + sum[3]));
  }
}

// softmax_tile + pack_p for fp8 with the row sums on the tensor cores (kFeatEx2H2): the same max
// update, then P = 2^(c (s - m) + kBias) two at a time by exp2_e4m3x2, straight into the e4m3 A
// fragments pa (pack_p's order); s keeps the scores.
template <int kN, bool kTree>
__device__ __forceinline__ void softmax_pack_h2(const float (&s)[kN / 2], RowState& st, float (&rescale)[2],
                                                float kBias, float kLazy, uint32_t (&pa)[kN / 32][4]) {
  float base[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    update_row_max<kN, kTree>(s, st, rescale, h, kLazy);
    base[h] = (st.m[h] == -INFINITY ? 0.f : st.m[h] * st.c[h]) - kBias;
  }
  auto e2 = [&](int i, int h) {  // elements i, i + 1 (row h) -> e4m3x2
    return static_cast<uint32_t>(exp2_e4m3x2(fmaf(s[i], st.c[h], -base[h]), fmaf(s[i + 1], st.c[h], -base[h])));
  };
#pragma unroll
  for (int kk = 0; kk < kN / 32; ++kk) {
    const int i = 16 * kk;
    pa[kk][0] = e2(i + 0, 0) | (e2(i + 4, 0) << 16);
    pa[kk][1] = e2(i + 2, 1) | (e2(i + 6, 1) << 16);
    pa[kk][2] = e2(i + 8, 0) | (e2(i + 12, 0) << 16);
    pa[kk][3] = e2(i + 10, 1) | (e2(i + 14, 1) << 16);
  }
}

// fp8 tiles after the first, kFeatNoMax: P packed into pn (pack_p's order) against the running max
// as it stands, s kept; when a byte of some lane's P reaches 0x7E (P >= 432 or NaN: the row's max
// grew by more than kLazy, or the row has none yet) the warp takes the max update and packs the tile
// again. rescale: 1 unless the max moved.
template <int kN, bool kTree>
__device__ __forceinline__ void softmax_pack_nomax(const float (&s)[kN / 2], RowState& st, float (&rescale)[2],
                                                   float kBias, float kLazy, uint32_t (&pn)[kN / 32][4]) {
  auto pack = [&](float base0, float base1) {
    auto e = [&](int i, int h) { return exp2_approx(fmaf(s[i], st.c[h], -(h ? base1 : base0))); };
#pragma unroll
    for (int kk = 0; kk < kN / 32; ++kk) {
      const int i = 16 * kk;
      pn[kk][0] = pack_e4m3(e(i + 0, 0), e(i + 1, 0), e(i + 4, 0), e(i + 5, 0));
      pn[kk][1] = pack_e4m3(e(i + 2, 1), e(i + 3, 1), e(i + 6, 1), e(i + 7, 1));
      pn[kk][2] = pack_e4m3(e(i + 8, 0), e(i + 9, 0), e(i + 12, 0), e(i + 13, 0));
      pn[kk][3] = pack_e4m3(e(i + 10, 1), e(i + 11, 1), e(i + 14, 1), e(i + 15, 1));
    }
  };
  rescale[0] = rescale[1] = 1.f;
  pack(st.m[0] * st.c[0] - kBias, st.m[1] * st.c[1] - kBias);  // a max of -inf gives +inf / NaN: caught below
  uint32_t band = 0;  // bytes <= 0x7F: + 2 sets bit 7 exactly for 0x7E (448) and 0x7F (NaN), no carries
#pragma unroll
  for (int kk = 0; kk < kN / 32; ++kk)
#pragma unroll
    for (int w = 0; w < 4; ++w) band |= pn[kk][w] + 0x02020202u;
  if (__any_sync(0xffffffffu, (band & 0x80808080u) != 0)) {
    float base[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      update_row_max<kN, kTree>(s, st, rescale, h, kLazy);
      base[h] = (st.m[h] == -INFINITY ? 0.f : st.m[h] * st.c[h]) - kBias;
    }
    pack(base[0], base[1]);
  }
}

// bf16 tiles after the first, kFeatNoMax, every row of the warp with a max: s becomes P = 2^(c s -
// c m) against the running max as it stands (the row sums added to st.l), no max computed. A row
// whose max has grown by more than kLazy shows up as a P > 2^kLazy once P is packed (fix_p_bf16).
template <int kN, bool kNoSum>
__device__ __forceinline__ void exp_tile_bf16(float (&s)[kN / 2], RowState& st) {
  float sum[2][2] = {{0.f, 0.f}, {0.f, 0.f}};
  const float base[2] = {st.m[0] * st.c[0], st.m[1] * st.c[1]};
#pragma unroll
  for (int j = 0; j < kN / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int h = e >> 1;
      s[4 * j + e] = exp2_approx(fmaf(s[4 * j + e], st.c[h], -base[h]));
      if constexpr (!kNoSum) sum[h][j % 2] += s[4 * j + e];
    }
  if constexpr (!kNoSum) {
#pragma unroll
    for (int h = 0; h < 2; ++h) st.l[h] += sum[h][0] + sum[h][1];
  }
}

// After exp_tile_bf16 and pack_p: true when some lane of the warp packed a P >= 2^8 (a bf16 half >=
// 0x4380; halves <= 0x7FFF, so + 0x3C80 sets bit 15 exactly for those, without carries).
template <int kN>
__device__ __forceinline__ bool p_over_bf16(const uint32_t (&pa)[kN / 16][4]) {
  uint32_t band = 0;
#pragma unroll
  for (int kk = 0; kk < kN / 16; ++kk)
#pragma unroll
    for (int w = 0; w < 4; ++w) band |= pa[kk][w] + 0x3C803C80u;
  return __any_sync(0xffffffffu, (band & 0x80008000u) != 0);
}

// OR of all words of a fragment set (a value that depends on every one of them).
template <int kN, int kM>
__device__ __forceinline__ uint32_t or_words(const uint32_t (&r)[kN][kM]) {
  uint32_t x = 0;
#pragma unroll
  for (int i = 0; i < kN; ++i)
#pragma unroll
    for (int j = 0; j < kM; ++j) x |= r[i][j];
  return x;
}

template <int kD>
__device__ __forceinline__ void rescale_o(float (&o)[kD / 2], const float (&rescale)[2]) {
#pragma unroll
  for (int j = 0; j < kD / 8; ++j) {
    o[4 * j + 0] *= rescale[0];
    o[4 * j + 1] *= rescale[0];
    o[4 * j + 2] *= rescale[1];
    o[4 * j + 3] *= rescale[1];
  }
}

// P (the S accumulators) as wgmma A fragments, one [4] per k step. bf16 k16: a0 (g, 2t..), a1 (g+8,
// 2t..), a2 (g, 8+2t..), a3 (g+8, 8+2t..). e4m3 k32: a0 (g, 4t..4t+3), a1 (g+8, ..), a2 (g, 16+4t..),
// a3 (g+8, 16+4t..), filled with this thread's keys in accumulator order (transpose_v permutes V's
// keys to match).
template <bool kFp8, int kN>
__device__ __forceinline__ void pack_p(const float (&s)[kN / 2], uint32_t (&pa)[kN / (kFp8 ? 32 : 16)][4]) {
  if constexpr (!kFp8) {
#pragma unroll
    for (int kk = 0; kk < kN / 16; ++kk) {
      pa[kk][0] = pack_bf16(s[8 * kk + 0], s[8 * kk + 1]);
      pa[kk][1] = pack_bf16(s[8 * kk + 2], s[8 * kk + 3]);
      pa[kk][2] = pack_bf16(s[8 * kk + 4], s[8 * kk + 5]);
      pa[kk][3] = pack_bf16(s[8 * kk + 6], s[8 * kk + 7]);
    }
  } else {
#pragma unroll
    for (int kk = 0; kk < kN / 32; ++kk) {
      const float* x = s + 16 * kk;
      pa[kk][0] = pack_e4m3(x[0], x[1], x[4], x[5]);
      pa[kk][1] = pack_e4m3(x[2], x[3], x[6], x[7]);
      pa[kk][2] = pack_e4m3(x[8], x[9], x[12], x[13]);
      pa[kk][3] = pack_e4m3(x[10], x[11], x[14], x[15]);
    }
  }
}

// The rare case of p_over_bf16: a row whose largest P exceeds 2^kLazy moves its max onto that key
// (c m += log2 Pmax, the lazy rule of update_row_max), and its P, O and sums (st.l, and lsum of the
// tensor-core row sums: rows g, g + 8 at [0, 1], [2, 3]) scale by 1 / Pmax (all were relative to
// the old max); then P is packed again.
template <int kN, int kD>
__device__ __forceinline__ void fix_p_bf16(float (&s)[kN / 2], float (&o)[kD / 2], float (&lsum)[4], RowState& st,
                                          float kLazy, uint32_t (&pa)[kN / 16][4]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float mx = 0.f;
#pragma unroll
    for (int j = 0; j < kN / 8; ++j) mx = fmaxf(mx, fmaxf(s[4 * j + 2 * h], s[4 * j + 2 * h + 1]));
    mx = quad_max(mx);
    if (!(mx > exp2f(kLazy))) continue;
    const float f = __fdividef(1.f, mx);
    st.m[h] += __fdividef(__log2f(mx), st.c[h]);
    st.l[h] *= f;
    lsum[2 * h] *= f, lsum[2 * h + 1] *= f;
#pragma unroll
    for (int j = 0; j < kN / 8; ++j) s[4 * j + 2 * h] *= f, s[4 * j + 2 * h + 1] *= f;
#pragma unroll
    for (int j = 0; j < kD / 8; ++j) o[4 * j + 2 * h] *= f, o[4 * j + 2 * h + 1] *= f;
  }
  pack_p<false, kN>(s, pa);
}

}  // namespace kiln::cuda::hopper
