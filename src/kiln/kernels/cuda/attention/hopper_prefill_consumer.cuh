// Consumer warpgroups of the Hopper prefill kernel (included by hopper_prefill_kernel.cuh): each
// owns 64 query rows; per thread two rows (g and g + 8 of its warp's 16) and, per 8 columns of a
// wgmma m64nN accumulator, 4 floats: d[4j + 2h + e] = (row g + 8h, column 8j + 2t + e).
#pragma once

#include "kiln/kernels/cuda/attention/hopper_prefill_softmax.cuh"

namespace kiln::cuda::hopper {

// S[64 x kBlockN] = Q_wg K^T (split Q: + Q_lo K^T), issued (not waited). q: the warpgroup's Q rows,
// k: the K tile (descriptor bases: smem_qk_desc of their addresses).
template <class C>
__device__ __forceinline__ void issue_qk(float (&s)[64], SmemDesc q, SmemDesc k_tile) {
  constexpr bool kFp8 = C::kElemBytes == 1;
  constexpr int kHeadDim = C::kPanels * C::kPanelElems;
  constexpr int kKSteps = kHeadDim / C::kKStep;
  static_assert(C::kBlockN == 128);
#pragma unroll
  for (int k = 0; k < kKSteps * (C::kSplitQ ? 2 : 1); ++k) {
    const int kk = k % kKSteps, panel = kk / C::kStepsPerPanel, col = (kk % C::kStepsPerPanel) * 32;
    const uint64_t a = q.at((k / kKSteps) * C::kQTileBytes + panel * C::kBlockM * C::kRowBytes + col);
    const uint64_t b = k_tile.at(panel * C::kBlockN * C::kRowBytes + col);
    if constexpr (kFp8)
      wgmma_ss_e4m3_n128(s, a, b, k > 0);
    else
      wgmma_ss_bf16_n128(s, a, b, k > 0);
  }
}
// Descriptor bases of the Q rows at q_wg / a K tile at k_tile (K-major, swizzled kRowBytes rows).
template <class C>
__device__ __forceinline__ SmemDesc smem_qk_desc(uint32_t addr) {
  return smem_desc_base<C::kRowBytes>(addr, 16, 8 * C::kRowBytes);
}
// Descriptor base of a V tile: fp8 Vt [kHeadDim, kBlockN keys] K-major; bf16 V [kBlockN keys,
// kHeadDim] in 64-column panels (MN-major: 8-key groups 1024 B apart, panels kBlockN * 128 B apart).
template <class C>
__device__ __forceinline__ SmemDesc smem_v_desc(uint32_t addr) {
  return smem_desc_base<128>(addr, C::kElemBytes == 1 ? 16 : C::kBlockN * 128, 1024);
}

// O[64 x kHeadDim] += P V, issued (not waited); v_tile: smem_v_desc of the V tile.
// C::kRowSum: also lsum[4] (rows g, g + 8 of the m64n8 fragment: every column holds the row sum)
// += P times the ones tile (`ones`: smem_v_desc of it).
template <class C, bool kFp8 = C::kElemBytes == 1, int kHeadDim = C::kPanels * C::kPanelElems>
__device__ __forceinline__ void issue_pv(float (&o)[kHeadDim / 2], const uint32_t (&pa)[kFp8 ? 4 : 8][4],
                                         SmemDesc v_tile, float (&lsum)[4], SmemDesc ones) {
#pragma unroll
  for (int kk = 0; kk < C::kBlockN / C::kKStep; ++kk) {
    if constexpr (kFp8) {
      const uint64_t b = v_tile.at(kk * 32);
      if constexpr (kHeadDim == 128)
        wgmma_rs_e4m3_n128(o, pa[kk], b);
      else
        wgmma_rs_e4m3_n64(o, pa[kk], b);
      if constexpr (C::kRowSum) wgmma_rs_e4m3_n8(lsum, pa[kk], ones.at(kk * 32));
    } else {
      const uint64_t b = v_tile.at(kk * 16 * 128);
      if constexpr (kHeadDim == 128)
        wgmma_rs_bf16_n128(o, pa[kk], b);
      else
        wgmma_rs_bf16_n64(o, pa[kk], b);
      // the 1 KB of ones holds 8 rows x 64 keys: any 16-key step of it is all ones
      if constexpr (C::kRowSum) wgmma_rs_bf16_n8k(lsum, pa[kk], ones.at((kk % 4) * 32));
    }
  }
}

// fp8: the warpgroup's 64 Q rows from bf16 global memory to e4m3 in the swizzled Q tile, each row
// with its own scale (amax / 448) written to `scales`. Rows past the sequence become 0.
template <class C, int kHeadDim, bool kProbeNoLoad = false>
__device__ __forceinline__ void quantize_q(const HopperPrefillParams& p, const Work& w, int wg, uint32_t q_tile,
                                           float* scales, int wtid) {
  const int r = wtid / 2, half = wtid % 2, row = 64 * wg + r, token = w.row0 + row;
  constexpr int kVec = kHeadDim / 16;  // 16-byte loads (8 bf16) per thread
  uint4 x[kVec];
  const bool valid = token < w.q_len;
  const uint4* src = reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(p.q) +
                                                    (static_cast<int64_t>(w.q_row + (valid ? token : 0)) *
                                                         p.num_q_heads +
                                                     w.head) * kHeadDim +
                                                    half * (kHeadDim / 2));
  float amax = 0.f;
#pragma unroll
  for (int i = 0; i < kVec; ++i) {
    if constexpr (kProbeNoLoad)  // bench probe: no global loads (every element 1.0)
      x[i] = make_uint4(0x3f803f80u, 0x3f803f80u, 0x3f803f80u, 0x3f803f80u);
    else
      x[i] = valid ? src[i] : make_uint4(0, 0, 0, 0);
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&x[i]);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 f = __bfloat1622float2(h[k]);
      amax = fmaxf(amax, fmaxf(fabsf(f.x), fabsf(f.y)));
    }
  }
  amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
  const float scale = amax > 0.f ? amax / 448.f : 1.f, inv = 1.f / scale;
  if (half == 0) scales[row] = scale;
#pragma unroll
  for (int c = 0; c < kVec / 2; ++c) {  // 16 fp8 per chunk = 2 loads
    uint32_t words[4], lo[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&x[2 * c + k / 2]) + 2 * (k % 2);
      const float2 a = __bfloat1622float2(h[0]), b = __bfloat1622float2(h[1]);
      words[k] = pack_e4m3(a.x * inv, a.y * inv, b.x * inv, b.y * inv);
      if constexpr (C::kSplitQ) {
        const float4 r = unpack_e4m3(words[k]);
        lo[k] = pack_e4m3(a.x * inv - r.x, a.y * inv - r.y, b.x * inv - r.z, b.y * inv - r.w);
      }
    }
    const int chunk = half * (kVec / 2) + c;
    asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"r"(q_tile + swizzled<C::kRowBytes>(row, chunk)),
                 "r"(words[0]), "r"(words[1]), "r"(words[2]), "r"(words[3]));
    if constexpr (C::kSplitQ)
      asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"r"(q_tile + C::kQTileBytes +
                                                                       swizzled<C::kRowBytes>(row, chunk)),
                   "r"(lo[0]), "r"(lo[1]), "r"(lo[2]), "r"(lo[3]));
  }
}

// One work of consumer warpgroup wg (64 rows). `it` / `n_work`: as for produce().
template <bool kFp8, int kHeadDim, class T>
__device__ __forceinline__ void consume(const HopperPrefillParams& p, const Work& w, uint8_t* smem_ptr, uint32_t smem,
                                        Bars<T::kKStages, T::kVStages> bars, int wg, int wtid, int it, int n_work) {
  using C = HopperConfig<kFp8, kHeadDim, T>;
  constexpr int KS = C::kKStages, VS = C::kVStages;
  constexpr int kSteps = C::kBlockN / C::kKStep;
  const int warp = wtid / 32, lane = wtid % 32, g = lane / 4, t = lane % 4;
  const int bar_id = 1 + wg;  // named barrier of this warpgroup
  float* scales = reinterpret_cast<float*>(smem_ptr + C::kScales);

  RowState st;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = w.row0 + 64 * wg + 16 * warp + g + 8 * h;
    st.pos[h] = p.causal ? w.q_pos0 + row : w.kv_len - 1;
    st.limit[h] = min(st.pos[h], w.kv_len - 1);
    st.m[h] = -INFINITY;
    st.l[h] = 0.f;
    st.c[h] = p.scale_log2;
  }
  const uint32_t q_wg = smem + C::kQ + 64 * wg * C::kRowBytes;
  if constexpr (kFp8 && !C::kQTma) {
    // This warpgroup's wgmma reads of the previous work's Q rows are complete (waited); its own rows.
    quantize_q<C, kHeadDim, (T::kProbe & 4) != 0>(p, w, wg, smem + C::kQ, scales, wtid);
    fence_async_smem();
    named_sync(bar_id, 128);
#pragma unroll
    for (int h = 0; h < 2; ++h) st.c[h] *= scales[64 * wg + 16 * warp + g + 8 * h];
  } else {
    if constexpr (C::kQTma) {  // the rows' scales (rows past the sequence: not stored, any finite value)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int token = w.row0 + 64 * wg + 16 * warp + g + 8 * h;
        st.c[h] *= token < w.q_len ? p.q_scales[static_cast<int64_t>(w.q_row + token) * p.num_q_heads + w.head] : 1.f;
      }
    }
    const uint32_t q_full = C::kQTma ? bars.q_half(wg) : bars.q();
    mbar_wait(q_full, n_work & 1);
  }
  // After the QK product of tile j has completed (bf16: both warpgroups free the tile; kQTma: each
  // its own rows).
  const uint32_t q_free = C::kQTma ? bars.q_half_empty(wg) : bars.q_empty();
  auto release_q = [&](int j) {
    if ((!kFp8 || C::kQTma) && j == w.n_tiles - 1 && lane == 0) mbar_arrive(q_free);
  };
  if ((!kFp8 || C::kQTma) && w.n_tiles == 0 && lane == 0) mbar_arrive(q_free);
  // A converged warp for the main loop: without it ptxas left the loop's wgmma descriptors in
  // vector registers (R2UR before each wgmma: 24 vs 8, uniform-datapath ops 24 vs 94) and kQTma ran
  // 2-5% below row 1 (then row 0) at 4K-16K.
  if constexpr (C::kQTma) __syncwarp();

  float o[kHeadDim / 2];
#pragma unroll
  for (int i = 0; i < kHeadDim / 2; ++i) o[i] = 0.f;
  float lsum[4] = {0.f, 0.f, 0.f, 0.f};  // kRowSum: the row sums, accumulated with O
  float s[C::kBlockN / 2];
  uint32_t pa[kSteps][4];
  float rescale[2];
  const int window = p.sliding_window;
  // A tile needs the mask when it holds a key past some row's limit or before some row's window.
  const int lim_min = p.causal ? min(w.q_pos0 + w.row0 + 64 * wg, w.kv_len - 1) : w.kv_len - 1;
  const int pos_max = p.causal ? w.q_pos0 + w.row0 + 64 * wg + 63 : w.kv_len - 1;
  auto needs_mask = [&](int key0) {
    return key0 + C::kBlockN - 1 > lim_min || (window > 0 && key0 + window <= pos_max);
  };
  // bf16: cache slots in [kv_len, next multiple of 16) come with the last box; zero those V rows so
  // that P = 0 times whatever they hold (NaN included) stays 0. fp8 does this in transpose_v.
  auto zero_v_tail = [&](uint32_t v_tile, int key0) {
    if constexpr (!kFp8) {
      const int from = w.kv_len - key0, to = min(C::kBlockN, (w.kv_len + 15) / 16 * 16 - key0);
      if (from >= to || from < 0) return;
      for (int i = wtid; i < (to - from) * C::kPanels * 8; i += 128) {
        const int row = from + i / (C::kPanels * 8), panel = (i / 8) % C::kPanels, chunk = i % 8;
        asm volatile("st.shared.v4.b32 [%0], {%1, %1, %1, %1};\n" ::"r"(v_tile + panel * C::kBlockN * 128 +
                                                                        swizzled<128>(row, chunk)),
                     "r"(0));
      }
      fence_async_smem();
      named_sync(bar_id, 128);
    }
  };
  // Ping-pong (FlashAttention-3): warpgroup wg issues its GEMMs after the other one has issued its
  // own, so one warpgroup's softmax runs while the other's GEMMs hold the tensor cores. Warpgroup 1
  // lets warpgroup 0 go first and skips its very last hand-over, so every bar.sync is matched
  // within each work (both warpgroups run the same works, so this holds across works too).
  const bool pingpong = !T::kSolo && p.pingpong && w.n_tiles > 0;
  auto turn_wait = [&] {
    if (pingpong) named_sync(4 + wg, 256);
  };
  auto turn_pass = [&](bool last) {
    if (pingpong && !(last && wg == 1)) named_arrive(4 + (wg ^ 1), 256);
  };
  if (pingpong && wg == 1) named_arrive(4, 256);
  auto v_tile_of = [&](int s_) { return smem + (kFp8 ? C::kVt + s_ * C::kVtBytes : C::kV + s_ * C::kTileBytes); };
  // Descriptor bases, built once: stage s of K / V is k_desc / v_desc plus s tiles.
  constexpr uint32_t kVStride = kFp8 ? C::kVtBytes : C::kTileBytes;
  const SmemDesc q_desc = smem_qk_desc<C>(q_wg), k_desc = smem_qk_desc<C>(smem + C::kK);
  const SmemDesc v_desc = smem_v_desc<C>(v_tile_of(0)), ones_desc = smem_v_desc<C>(smem + C::kOnes);
  // PV of the previous tile done: its V stage goes back to the producer, then O (and the row sums
  // of the kRowSum variants) take this tile's rescale.
  auto finish_pv = [&](int sv) {
    wgmma_wait<0>();
    pin(o);
    pin(pa);
    if constexpr (C::kRowSum) pin(lsum);
    if (lane == 0) mbar_arrive(bars.empty_v(sv));
    if (rescale[0] != 1.f || rescale[1] != 1.f) {
      rescale_o<kHeadDim>(o, rescale);
      if constexpr (C::kRowSum) {
        lsum[0] *= rescale[0], lsum[1] *= rescale[0];
        lsum[2] *= rescale[1], lsum[3] *= rescale[1];
      }
    }
  };

  if (w.n_tiles > 0) {
    const int sk = stage_of<KS>(it);
    mbar_wait(bars.full_k(sk), phase_of<KS>(it));
    turn_wait();
    wgmma_fence();
    issue_qk<C>(s, q_desc, k_desc.plus(sk * C::kTileBytes));
    wgmma_commit();
    turn_pass(false);
    wgmma_wait<0>();
    pin(s);
    if (lane == 0) mbar_arrive(bars.empty_k(sk));
    release_q(0);
    if (needs_mask(w.tile0)) mask_tile<C::kBlockN>(s, w.tile0, st, window, t);
    if constexpr (kFp8 && T::kEx2H2) {
      softmax_pack_h2<C::kBlockN, T::kTree>(s, st, rescale, C::kPBias, C::kLazyLog2, pa);
    } else {
      softmax_tile<C::kBlockN, kFp8 ? T::kPolyMask : 0, (T::kProbe & 2) != 0, T::kTree, C::kRowSum>(
          s, st, rescale, C::kPBias, C::kLazyLog2);
      pack_p<kFp8, C::kBlockN>(s, pa);
    }
  }
  // No-max rows: two tiles a loop trip, so P alternates between pa and pn without the copy of one
  // into the other (16 moves a tile); other rows: one (unrolled, the poly rows ran out of registers
  // for the wgmma pipeline, ptxas C7511).
  constexpr int kUnroll = C::kNoMax ? 2 : 1;
#pragma unroll kUnroll
  for (int j = 1; j < w.n_tiles; ++j) {
    const int ck = it + j, cv = it + j - 1;
    const int sk = stage_of<KS>(ck), sv = stage_of<VS>(cv);
    const int key0 = w.tile0 + j * C::kBlockN;
    mbar_wait(bars.full_k(sk), phase_of<KS>(ck));
    turn_wait();
    wgmma_fence();
    issue_qk<C>(s, q_desc, k_desc.plus(sk * C::kTileBytes));
    wgmma_commit();
    mbar_wait(bars.full_v(sv), phase_of<VS>(cv));
    zero_v_tail(v_tile_of(sv), key0 - C::kBlockN);
    issue_pv<C>(o, pa, v_desc.plus(sv * kVStride), lsum, ones_desc);
    wgmma_commit();
    turn_pass(false);
    wgmma_wait<1>();
    pin(s);
    if (lane == 0) mbar_arrive(bars.empty_k(sk));
    if constexpr (!C::kQTma) release_q(j);  // kQTma: after the loop (an arrive in it cost 2.5% at 8K)
    if (needs_mask(key0)) mask_tile<C::kBlockN>(s, key0, st, window, t);
    if constexpr (kFp8 && (T::kEx2H2 || C::kNoMax)) {
      static_assert(T::kOverlap, "f16x2 exponentials / no max: overlap rows only");
    } else if constexpr (!kFp8 && C::kNoMax) {
      // bf16 without the row max (the P check and the rare fix after pack_p below); a row of the
      // warp still without a max takes the full softmax.
      if (__any_sync(0xffffffffu, st.m[0] == -INFINITY || st.m[1] == -INFINITY)) {
        softmax_tile<C::kBlockN, 0, false, T::kTree, C::kRowSum>(s, st, rescale, C::kPBias, C::kLazyLog2);
      } else {
        exp_tile_bf16<C::kBlockN, C::kRowSum>(s, st);
        rescale[0] = rescale[1] = 1.f;
      }
      pin(s);
    } else {
      softmax_tile<C::kBlockN, kFp8 ? T::kPolyMask : 0, (T::kProbe & 2) != 0, T::kTree, C::kRowSum>(
          s, st, rescale, C::kPBias, C::kLazyLog2);
      pin(s);
    }
    if constexpr (kFp8 && T::kOverlap) {
      // fp8 overlap: P_j goes into a second fragment set while PV_{j-1} still reads pa; an arrive
      // that depends on every packed word keeps ptxas from hoisting the wait above the exponentials
      // (without it the SASS waited for PV first and ran all 64 MUFU.EX2 after it).
      uint32_t pn[kSteps][4];
      if constexpr (T::kEx2H2)
        softmax_pack_h2<C::kBlockN, T::kTree>(s, st, rescale, C::kPBias, C::kLazyLog2, pn);
      else if constexpr (C::kNoMax)
        softmax_pack_nomax<C::kBlockN, T::kTree>(s, st, rescale, C::kPBias, C::kLazyLog2, pn);
      else
        pack_p<kFp8, C::kBlockN>(s, pn);
      pin(pn);
      // kNoMax: the saturation vote reads every packed word already (tried as the anchor).
      if (!C::kNoMax && lane == 0 && or_words(pn) != 0xffffffffu) mbar_arrive(bars.anchor());
      finish_pv(sv);
#pragma unroll
      for (int kk = 0; kk < kSteps; ++kk)
#pragma unroll
        for (int e = 0; e < 4; ++e) pa[kk][e] = pn[kk][e];
      continue;
    }
    // ptxas hoists a wgmma wait above all the work it does not depend on, which would serialize the
    // softmax behind this warpgroup's PV product (seen in the SASS); it keeps the wait below an
    // mbarrier arrive, so one that depends on the row sums (l >= 0: the condition always holds) on
    // a barrier nobody waits for anchors the wait after the softmax.
    if (T::kOverlap && lane == 0 && !(st.l[0] + st.l[1] < 0.f)) mbar_arrive(bars.anchor());
    finish_pv(sv);
    pack_p<kFp8, C::kBlockN>(s, pa);
    if constexpr (!kFp8 && C::kNoMax) {
      if (p_over_bf16<C::kBlockN>(pa)) fix_p_bf16<C::kBlockN, kHeadDim>(s, o, lsum, st, C::kLazyLog2, pa);
    }
  }
  if constexpr (C::kQTma) {
    if (w.n_tiles > 1) release_q(w.n_tiles - 1);
  }
  if (w.n_tiles > 0) {
    const int cv = it + w.n_tiles - 1, sv = stage_of<VS>(cv);
    mbar_wait(bars.full_v(sv), phase_of<VS>(cv));
    zero_v_tail(v_tile_of(sv), w.tile0 + (w.n_tiles - 1) * C::kBlockN);
    turn_wait();
    wgmma_fence();
    issue_pv<C>(o, pa, v_desc.plus(sv * kVStride), lsum, ones_desc);
    wgmma_commit();
    turn_pass(true);
    wgmma_wait<0>();
    pin(o);
    if constexpr (C::kRowSum) pin(lsum);
    if (lane == 0) mbar_arrive(bars.empty_v(sv));
  }

  // Epilogue: O / l (times v_scale) as bf16 into this warpgroup's rows of the swizzled O tile
  // (64-column panels of 128-byte rows), then 16-byte coalesced stores of the rows in the sequence.
  // Persistent: the warpgroup's reads of its rows for the previous work come first.
  if constexpr (T::kPersistent) named_sync(bar_id, 128);
  const uint32_t o_tile = smem + C::kO;
  float inv[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float sum = C::kRowSum ? lsum[2 * h] : quad_sum(st.l[h]);
    inv[h] = sum > 0.f ? p.v_scale / sum : 0.f;
  }
#pragma unroll
  for (int j = 0; j < kHeadDim / 8; ++j)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = 64 * wg + 16 * warp + g + 8 * h;
      const uint32_t addr = o_tile + (j / 8) * C::kBlockM * 128 + swizzled<128>(row, j % 8) + 4 * t;
      asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr),
                   "r"(pack_bf16(o[4 * j + 2 * h] * inv[h], o[4 * j + 2 * h + 1] * inv[h])));
    }
  named_sync(bar_id, 128);
  constexpr int kChunks = kHeadDim / 8;
  __nv_bfloat16* out = static_cast<__nv_bfloat16*>(p.out);
  for (int i = wtid; i < 64 * kChunks; i += 128) {
    const int r = i / kChunks, c = i % kChunks, token = w.row0 + 64 * wg + r;
    if (token >= w.q_len) continue;
    uint4 v;
    asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "r"(o_tile + (c / 8) * C::kBlockM * 128 + swizzled<128>(64 * wg + r, c % 8)));
    *reinterpret_cast<uint4*>(out + (static_cast<int64_t>(w.q_row + token) * p.num_q_heads + w.head) * kHeadDim +
                              c * 8) = v;
  }
}

// Non-persistent: [num_q_heads, row_blocks] CTAs, one work each; persistent: [min(num_works, SMs)]
// CTAs walking the work ids. 384 threads (producer warpgroup + 2 consumer warpgroups).
template <bool kFp8, int kHeadDim, class T>
__global__ void __launch_bounds__(384, 1) hopper_prefill_kernel(const __grid_constant__ HopperPrefillParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using C = HopperConfig<kFp8, kHeadDim, T>;
  extern __shared__ uint8_t smem_raw[];
  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t smem = (raw + 1023) & ~1023u;
  uint8_t* smem_ptr = smem_raw + (smem - raw);
  const int first = T::kPersistent ? static_cast<int>(blockIdx.x) : static_cast<int>(blockIdx.y * gridDim.x + blockIdx.x);
  const int stride = T::kPersistent ? static_cast<int>(gridDim.x) : p.num_works;
  if constexpr (!T::kPersistent) {
    Work w;
    if (!find_work<C::kBlockM, C::kBlockN>(p, first, w)) return;
  }
  const Bars<C::kKStages, C::kVStages> bars{smem + C::kBars};
  const int tid = threadIdx.x;
  if (tid == 0) {
    mbar_init(bars.q(), 1);
    mbar_init(bars.q_empty(), 8);
    for (int s = 0; s < C::kKStages; ++s) {
      mbar_init(bars.full_k(s), 1);
      mbar_init(bars.empty_k(s), 8);
    }
    for (int s = 0; s < C::kVStages; ++s) {
      mbar_init(bars.full_v(s), 1);
      mbar_init(bars.empty_v(s), 8);
    }
    for (int s = 0; s < C::kVTiles; ++s) mbar_init(bars.full_raw(s), 1);
    mbar_init(bars.anchor(), (1 << 20) - 1);
    for (int h = 0; h < 2; ++h) {
      mbar_init(bars.q_half(h), 1);
      mbar_init(bars.q_half_empty(h), 4);
    }
    mbar_init_fence();
    if constexpr (!kFp8 || C::kQTma) tma_prefetch_map(&p.q_map);
    if constexpr (C::kVtPre) tma_prefetch_map(&p.vt_map);
    tma_prefetch_map(&p.k_map);
    tma_prefetch_map(&p.v_map);
  }
  if constexpr (C::kRowSum) {  // e4m3 1.0 = 0x38, bf16 1.0 = 0x3F80, read by the row-sum wgmma (async proxy)
    if (tid < 256)
      asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(smem + C::kOnes + 4 * tid), "r"(kFp8 ? 0x38383838u : 0x3F803F80u));
    fence_async_smem();
  }
  __syncthreads();
  // Warp-uniform for ptxas (a lane-0 shuffle): the consumers' Q descriptors then live in uniform
  // registers instead of being moved there (R2UR) before every QK wgmma.
  const int wg = __shfl_sync(0xffffffffu, tid / 128, 0);
  int it = 0, n_work = 0;
  if (wg == 0) {
#ifndef KILN_HOPPER_NO_SETMAXNREG
    regs_dealloc<C::kProducerRegs>();
#endif
    if (!kFp8 && tid >= 96) return;  // bf16 uses producer warps 0-2 only
    if (C::kVtPre && !C::kQTma && tid >= 64) return;  // the V pre-pass: warps 0 (K), 1 (Vt) (kQTma: 2, 3 Q)
    for (int linear = first; linear < p.num_works; linear += stride) {
      Work w;
      if (!find_work<C::kBlockM, C::kBlockN>(p, linear, w)) continue;
      produce<kFp8, kHeadDim, T>(p, w, smem, smem_ptr, bars, tid, it, n_work);
      it += w.n_tiles;
      ++n_work;
    }
  } else {
#ifndef KILN_HOPPER_NO_SETMAXNREG
    regs_alloc<C::kConsumerRegs>();
#endif
    for (int linear = first; linear < p.num_works; linear += stride) {
      Work w;
      if (!find_work<C::kBlockM, C::kBlockN>(p, linear, w)) continue;
      consume<kFp8, kHeadDim, T>(p, w, smem_ptr, smem, bars, wg - 1, tid % 128, it, n_work);
      it += w.n_tiles;
      ++n_work;
    }
  }
#else
  __trap();  // built for another architecture: the host side refuses to launch it
#endif
}

}  // namespace kiln::cuda::hopper
