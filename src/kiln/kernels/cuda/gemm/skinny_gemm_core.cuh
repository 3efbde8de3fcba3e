// The streaming core shared by the decode GEMM (skinny_gemm.cu) and the MoE decode GEMM
// (cuda/moe/moe_decode_gemm.cu): one CTA = 16 * kRT weight rows, its warps take interleaved
// chunks of kU k-steps of those rows; each thread copies its 16-byte weight vectors HBM -> shared
// memory with cp.async (its own kS-slot ring: no __syncthreads, no registers held while in
// flight), then multiplies them on tensor cores with the operands swapped ("swap AB": weight rows
// are the M side of mma.m16n8k16, activation rows its N side, 8 per tile), so one weight fragment
// serves all m. The k order inside an mma is permuted to match the 16-byte vectors (a dot product
// does not care) and x's fragments are read in the same order. fp8 e4m3 weights are widened in
// registers to exact bf16 (kF16 = false), or (kF16 = true) to exact f16 by the hardware converter
// (cvt.rn.f16x2.e4m3x2: one instruction per weight pair) with x rounded bf16 -> f16 as its
// fragments are loaded (exact for 6.1e-5 <= |x| <= 65504, clamped to +-65504 beyond) and the
// f16 mma; f32 accumulation either way. The per-warp sums are added in a fixed order through shared memory
// (deterministic). Programmatic dependent launch: the first kS - 1 chunks are requested before
// griddepcontrol.wait, so a GEMM's weights stream while the kernel before it finishes.
// kE4m3 (fp8 weights): no widening at all: x comes pre-quantized per token to e4m3
// (skinny_x_fp8.cuh) and the fp8 bytes go straight into mma.m16n8k32 e4m3 (512 weight bytes per
// mma); the caller multiplies the sums by the x and weight scales.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>
#include <type_traits>

#include "kiln/kernels/cuda/common/pdl.cuh"

namespace kiln::skinny {

inline constexpr int kMaxWarps = 8;  // warps per CTA (blockDim.x / 32 is chosen per launch)

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, L2 only, zero-filled when !valid (src_size 0 reads nothing).
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// Programmatic dependent launch (no-ops when the kernel was launched without the attribute).
__device__ __forceinline__ void wait_for_previous_kernel() { cuda::pdl_wait(); }
__device__ __forceinline__ void allow_next_kernel() { cuda::pdl_trigger(); }

// x comes from the kernel before, which may still be writing it when this one starts (PDL): never
// the non-coherent read-only path (ld.global.nc is only for data constant over the kernel's life;
// with __ldg here the fp8 Mixtral decode read stale x in ~10-60% of test runs on the H100). The
// default weak load (ld.global.ca, cached in L1 so the CTA's warps share x) is in the memory
// model: griddepcontrol.wait makes the previous grid's writes visible to this grid. (L2-only
// __ldcg, used in between, cost the f16 rows up to 15 points of copy at m = 8: every warp then
// fetched x from L2.) Issued only after wait_for_previous_kernel (the loads are not hoisted
// above its memory clobber).
__device__ __forceinline__ uint4 load_x(const __nv_bfloat16* p) { return __ldca(reinterpret_cast<const uint4*>(p)); }

// c[16 x 8] += a[16 x 16] (rows: weights) * b[16 x 8] (columns: activation rows), bf16 in, f32 acc.
__device__ __forceinline__ void mma_bf16_16x8x16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                 uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// 4 fp8 e4m3 (bytes b0..b3 of q) -> bf16 pairs lo = (b0, b1), hi = (b2, b3), exact. The sign and
// the 7 magnitude bits moved into bf16 position read as w * 2^-120 (e4m3 subnormals become bf16
// subnormals); the bf16 multiply by 2^120 is exact.
__device__ __forceinline__ void fp8x4_to_bf16x4(uint32_t q, uint32_t& lo, uint32_t& hi) {
  const uint32_t t0 = __byte_perm(q, 0u, 0x1404), t1 = __byte_perm(q, 0u, 0x3424);  // b0,b1 / b2,b3 -> bytes 1 and 3
  uint32_t l = (t0 & 0x80008000u) | ((t0 & 0x7f007f00u) >> 4);
  uint32_t h = (t1 & 0x80008000u) | ((t1 & 0x7f007f00u) >> 4);
  const __nv_bfloat162 two_pow_120 = __halves2bfloat162(__ushort_as_bfloat16(0x7B80), __ushort_as_bfloat16(0x7B80));
  const __nv_bfloat162 lf = __hmul2(*reinterpret_cast<__nv_bfloat162*>(&l), two_pow_120);
  const __nv_bfloat162 hf = __hmul2(*reinterpret_cast<__nv_bfloat162*>(&h), two_pow_120);
  lo = *reinterpret_cast<const uint32_t*>(&lf);
  hi = *reinterpret_cast<const uint32_t*>(&hf);
}

// c[16 x 8] += a[16 x 16] * b[16 x 8], f16 in, f32 acc (the kF16 widening of fp8 weights).
__device__ __forceinline__ void mma_f16_16x8x16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// 4 fp8 e4m3 (bytes b0..b3 of q) -> f16 pairs lo = (b0, b1), hi = (b2, b3), exact (every e4m3
// value, subnormals included, is an f16), one hardware conversion per pair (sm_89+).
__device__ __forceinline__ void fp8x4_to_f16x4(uint32_t q, uint32_t& lo, uint32_t& hi) {
  asm("{\n\t.reg .b16 l, h;\n\tmov.b32 {l, h}, %2;\n\t"
      "cvt.rn.f16x2.e4m3x2 %0, l;\n\tcvt.rn.f16x2.e4m3x2 %1, h;\n\t}"
      : "=r"(lo), "=r"(hi)
      : "r"(q));
}

// A bf16 pair -> an f16 pair, rounded to nearest; |x| > 65504 clamps to +-65504 (satfinite), so
// a large activation gives a large finite product, never inf; |x| < 6.1e-5 loses low bits.
__device__ __forceinline__ uint32_t bf16x2_to_f16x2(uint32_t v) {
  const float lo = __uint_as_float(v << 16), hi = __uint_as_float(v & 0xffff0000u);
  uint32_t r;
  asm("cvt.rn.satfinite.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

// The weight operand of one mma row group: kF16 picks f16 words (hardware cvt) over exact bf16 words.
template <bool kF16>
__device__ __forceinline__ void widen_fp8x4(uint32_t q, uint32_t& lo, uint32_t& hi) {
  if constexpr (kF16) fp8x4_to_f16x4(q, lo, hi);
  else fp8x4_to_bf16x4(q, lo, hi);
}
template <bool kF16>
__device__ __forceinline__ void mma_16x8x16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                            uint32_t b1) {
  if constexpr (kF16) mma_f16_16x8x16(c, a0, a1, a2, a3, b0, b1);
  else mma_bf16_16x8x16(c, a0, a1, a2, a3, b0, b1);
}

// c[16 x 8] += a[16 x 32] (rows: weights) * b[32 x 8] (columns: activation rows), e4m3 in, f32 acc.
// a0 / a2: row g, k 4t..4t+3 / 16+4t..; a1 / a3: row g + 8; b0 / b1: column g, k 4t.. / 16+4t..
__device__ __forceinline__ void mma_e4m3_16x8x32(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                 uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

template <bool kFp8>
struct WeightFormat {
  static constexpr int kElemsPerVec = kFp8 ? 16 : 8;   // per 16-byte vector
  static constexpr int kMmasPerVec = kElemsPerVec / 4;  // each thread gives an mma 4 k values
  static constexpr int kStepK = 4 * kElemsPerVec;       // k per step: the 4 threads of an mma row group
};

// Fragment element c of tile (rt, nt) of lane (g = lane / 4, t = lane % 4): weight row, activation row.
__device__ __forceinline__ int frag_n(int row_base, int rt, int c, int g) { return row_base + rt * 16 + g + (c >= 2 ? 8 : 0); }
// The fused SwiGLU's rows (pair_half = I, w = [gate; up] of 2I rows): logical 16-row tile T holds
// gate rows 8T .. 8T + 7 in its rows 0..7 and the matching up rows I + 8T .. in rows 8..15, so the
// lane holding gate row j (fragment c = 0, 1) holds up row I + j too (c = 2, 3). pair_half 0: rows as
// they are.
__device__ __forceinline__ int pair_row(int r, int pair_half) {
  return pair_half == 0 ? r : (r >> 4) * 8 + (r & 7) + ((r & 8) ? pair_half : 0);
}
__device__ __forceinline__ int frag_m(int nt, int c, int t) { return nt * 8 + 2 * t + (c & 1); }

// f(rt, nt, c) for every element of a thread's accumulators [kRT][kMT][4], in that order (unrolled).
template <int kRT, int kMT, typename F>
__device__ __forceinline__ void for_each_acc(F&& f) {
#pragma unroll
  for (int rt = 0; rt < kRT; ++rt)
#pragma unroll
    for (int nt = 0; nt < kMT; ++nt)
#pragma unroll
      for (int c = 0; c < 4; ++c) f(rt, nt, c);
}

// kF16: fp8 weights widened to f16 and x rounded to f16 (fp8 only), else exact bf16. kE4m3: x
// given as e4m3 bytes (XT = uint8_t), the e4m3 mma on the raw weight bytes (fp8 only).
// kAcc (widened rows only): independent accumulator sets, mma i of a chunk adding into set i %
// kAcc, summed in set order at the end (a chain of dependent mmas is latency-bound when few warps
// are resident). kXAhead (widened rows only): x's vectors for chunk i + 1 are loaded while chunk
// i is multiplied (else at the top of chunk i, so every chunk starts on an L2 round trip).
template <bool kFp8, int kMT, int kRT, int kU, int kS, bool kF16 = false, bool kE4m3 = false, int kAcc = 1,
          bool kXAhead = false>
struct Core {
  using F = WeightFormat<kFp8>;
  using XT = std::conditional_t<kE4m3, uint8_t, __nv_bfloat16>;  // x's element
  static_assert(kS >= 2, "at least two ring slots");
  static_assert(kFp8 || !kF16, "the f16 widening is for fp8 weights");
  static_assert(kFp8 || !kE4m3, "the e4m3 mma is for fp8 weights");
  static_assert(!(kF16 && kE4m3), "one math mode");
  static_assert(kAcc == 1 || kAcc == 2 || kAcc == 4, "1, 2 or 4 accumulator sets");
  static_assert(!kE4m3 || (kAcc == 1 && !kXAhead), "accumulator sets and x ahead: widened rows only");
  static constexpr int kVecsPerChunk = kU * kRT * 2;  // 16-byte vectors per thread per chunk
  static constexpr int kRingBytesPerWarp = kS * kVecsPerChunk * 32 * 16;
  static constexpr int kElems = kRT * kMT * 4;  // accumulators per thread
  static constexpr int kSmemPerWarp = kRingBytesPerWarp > kElems * 32 * 4 ? kRingBytesPerWarp : kElems * 32 * 4;
  static constexpr int XVecsPerStep = kE4m3 ? 1 : F::kMmasPerVec / 2;  // x's 16-byte vectors per lane per k step

  // acc += w[rows row_base .. + 16 kRT) x x^T over k steps [s_begin, s_end) (kStepK each), chunk
  // c = warp, warp + nwarps, ... of kU steps. w: [n, k] bytes, row stride ldw_bytes; xrow[nt]:
  // this lane's activation row nt * 8 + g at k = 4 * lane's t... (nullptr: row past m, zeros).
  // smem: this warp's kSmemPerWarp bytes. pdl: wait for the previous kernel after the prologue.
  // pair_half (the fused SwiGLU, skinny_gemm_kernel): rows are logical, see pair_row.
  __device__ static void stream(const uint8_t* __restrict__ w, int64_t ldw_bytes, int n, int k, int row_base,
                                const XT* const (&xrow)[kMT], int s_begin, int s_end, int warp, int nwarps,
                                uint8_t* smem, bool pdl, float (&acc)[kRT][kMT][4], int pair_half = 0) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const uint8_t* wrow[kRT][2];  // rows g and g + 8 of each tile (clamped into range), at this thread's vector
#pragma unroll
    for (int rt = 0; rt < kRT; ++rt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = pair_row(min(row_base + rt * 16 + g + 8 * h, n - 1), pair_half);
        wrow[rt][h] = w + r * ldw_bytes + t * 16;
      }
    const int num_chunks = (s_end - s_begin + kU - 1) / kU;
    const int nc = warp < num_chunks ? (num_chunks - warp + nwarps - 1) / nwarps : 0;
    const uint32_t ring = smem_addr(smem) + lane * 16;
    // Accumulator sets: set 0 is acc, the others are added into it in set order at the end.
    float more[kAcc > 1 ? kAcc - 1 : 1][kRT][kMT][4] = {};
    auto set_of = [&](int a) -> float(&)[kRT][kMT][4] { return a == 0 ? acc : more[a - 1]; };

    auto issue = [&](int i) {  // chunk i of this warp into slot i % kS
      const int s0 = s_begin + (warp + i * nwarps) * kU;
      const uint32_t slot = ring + (i % kS) * (kVecsPerChunk * 512);
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int64_t k0 = static_cast<int64_t>(s0 + u) * F::kStepK;
        const bool ok = s0 + u < s_end && k0 + t * F::kElemsPerVec < k;
        const int64_t off = ok ? (kFp8 ? k0 : 2 * k0) : 0;
#pragma unroll
        for (int rt = 0; rt < kRT; ++rt)
#pragma unroll
          for (int h = 0; h < 2; ++h) cp_async_16(slot + ((u * kRT + rt) * 2 + h) * 512, wrow[rt][h] + off, ok);
      }
    };
    // x's vectors of chunk i (zeros past k, past the chunks or for rows past m): [u][nt][v]; the
    // e4m3 rows load their x inside compute.
    using XVecs = uint4[kU][kMT][XVecsPerStep];
    auto load_xs = [&](int i, XVecs& xs) {
      const int s0 = s_begin + (warp + i * nwarps) * kU;
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int64_t k0 = static_cast<int64_t>(s0 + u) * F::kStepK;
        const bool ok = i < nc && s0 + u < s_end && k0 + t * F::kElemsPerVec < k;
#pragma unroll
        for (int nt = 0; nt < kMT; ++nt)
#pragma unroll
          for (int v = 0; v < XVecsPerStep; ++v)
            if constexpr (!kE4m3)
              xs[u][nt][v] = ok && xrow[nt] != nullptr ? load_x(xrow[nt] + k0 + 8 * v) : make_uint4(0, 0, 0, 0);
      }
    };
    auto compute = [&](int i, const XVecs& xs) {
      const int s0 = s_begin + (warp + i * nwarps) * kU;
      const uint8_t* slot = smem + lane * 16 + (i % kS) * (kVecsPerChunk * 512);
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int64_t k0 = static_cast<int64_t>(s0 + u) * F::kStepK;
        const bool ok = s0 + u < s_end && k0 + t * F::kElemsPerVec < k;
        if constexpr (kE4m3) {
          // This thread's 16 weight bytes of rows g and g + 8 (words q0..q3: k 16t + 4j..) and the
          // same 16 k of x: mma j takes words 2j, 2j + 1 of each (the k order permuted alike).
          uint32_t a[kRT][2][4];
#pragma unroll
          for (int rt = 0; rt < kRT; ++rt)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const uint4 v = *reinterpret_cast<const uint4*>(slot + ((u * kRT + rt) * 2 + h) * 512);
              a[rt][h][0] = v.x; a[rt][h][1] = v.y; a[rt][h][2] = v.z; a[rt][h][3] = v.w;
            }
#pragma unroll
          for (int nt = 0; nt < kMT; ++nt) {
            const bool x_ok = ok && xrow[nt] != nullptr;
            // L2 only: the quantizer wrote x just before (after this kernel started, under PDL).
            const uint4 xv = x_ok ? __ldcg(reinterpret_cast<const uint4*>(xrow[nt] + k0)) : make_uint4(0, 0, 0, 0);
#pragma unroll
            for (int rt = 0; rt < kRT; ++rt) {
              mma_e4m3_16x8x32(acc[rt][nt], a[rt][0][0], a[rt][1][0], a[rt][0][1], a[rt][1][1], xv.x, xv.y);
              mma_e4m3_16x8x32(acc[rt][nt], a[rt][0][2], a[rt][1][2], a[rt][0][3], a[rt][1][3], xv.z, xv.w);
            }
          }
        } else {
          // Weights as bf16 words: word 2j / 2j + 1 hold this thread's k values 4j..4j+1 / 4j+2..4j+3.
          uint32_t a[kRT][2][2 * F::kMmasPerVec];
#pragma unroll
          for (int rt = 0; rt < kRT; ++rt)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const uint4 v = *reinterpret_cast<const uint4*>(slot + ((u * kRT + rt) * 2 + h) * 512);
              const uint32_t q[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
              for (int j = 0; j < 4; ++j) {
                if constexpr (kFp8) widen_fp8x4<kF16>(q[j], a[rt][h][2 * j], a[rt][h][2 * j + 1]);
                else a[rt][h][j] = q[j];
              }
            }
#pragma unroll
          for (int nt = 0; nt < kMT; ++nt) {
            uint32_t b[2 * F::kMmasPerVec];  // x[row][k0 + t * kElemsPerVec + ...] as bf16 pairs
#pragma unroll
            for (int v = 0; v < F::kMmasPerVec / 2; ++v) {
              const uint4 xv = xs[u][nt][v];
              b[4 * v] = xv.x; b[4 * v + 1] = xv.y; b[4 * v + 2] = xv.z; b[4 * v + 3] = xv.w;
            }
            if constexpr (kF16) {
#pragma unroll
              for (int j = 0; j < 2 * F::kMmasPerVec; ++j) b[j] = bf16x2_to_f16x2(b[j]);
            }
#pragma unroll
            for (int j = 0; j < F::kMmasPerVec; ++j)
#pragma unroll
              for (int rt = 0; rt < kRT; ++rt)
                mma_16x8x16<kF16>(set_of((u * F::kMmasPerVec + j) % kAcc)[rt][nt], a[rt][0][2 * j], a[rt][1][2 * j],
                                  a[rt][0][2 * j + 1], a[rt][1][2 * j + 1], b[2 * j], b[2 * j + 1]);
          }
        }
      }
    };

#pragma unroll
    for (int i = 0; i < kS - 1; ++i) {
      if (i < nc) issue(i);
      cp_async_commit();
    }
    if (pdl) {
      wait_for_previous_kernel();  // x (and the workspace) may come from the kernel before this one
      allow_next_kernel();
    }
    XVecs xa;  // kXAhead: chunk i's x, loaded during chunk i - 1
    if constexpr (kXAhead && !kE4m3) load_xs(0, xa);
    for (int i = 0; i < nc; ++i) {
      if (i + kS - 1 < nc) issue(i + kS - 1);
      cp_async_commit();
      cp_async_wait<kS - 1>();  // chunk i has landed (this thread's own copies: no barrier needed)
      if constexpr (kE4m3) {
        compute(i, xa);
      } else if constexpr (kXAhead) {
        XVecs xc;
#pragma unroll
        for (int u = 0; u < kU; ++u)
#pragma unroll
          for (int nt = 0; nt < kMT; ++nt)
#pragma unroll
            for (int v = 0; v < XVecsPerStep; ++v) xc[u][nt][v] = xa[u][nt][v];
        load_xs(i + 1, xa);
        compute(i, xc);
      } else {
        XVecs xc;
        load_xs(i, xc);
        compute(i, xc);
      }
    }
    cp_async_wait<0>();
    if constexpr (kAcc > 1) {
      for_each_acc<kRT, kMT>([&](int rt, int nt, int c) {
#pragma unroll
        for (int a = 0; a < kAcc - 1; ++a) acc[rt][nt][c] += more[a][rt][nt][c];
      });
    }
  }

  // Sums acc over the CTA's warps in warp order into warp 0's acc (the other warps' acc are
  // left unchanged). smem: the CTA's nwarps * kSmemPerWarp bytes (each warp reuses its own ring).
  __device__ static void reduce_warps(float (&acc)[kRT][kMT][4], uint8_t* smem, int warp, int nwarps) {
    if (nwarps == 1) return;
    const int lane = threadIdx.x & 31;
    float* mine = reinterpret_cast<float*>(smem + warp * kSmemPerWarp) + lane;
    for_each_acc<kRT, kMT>([&](int rt, int nt, int c) { mine[((rt * kMT + nt) * 4 + c) * 32] = acc[rt][nt][c]; });
    __syncthreads();
    if (warp != 0) return;
    for_each_acc<kRT, kMT>([&](int rt, int nt, int c) {
      float s = acc[rt][nt][c];
      for (int wi = 1; wi < nwarps; ++wi)
        s += reinterpret_cast<const float*>(smem + wi * kSmemPerWarp)[((rt * kMT + nt) * 4 + c) * 32 + lane];
      acc[rt][nt][c] = s;
    });
  }
};


// The warp-level stream ("stream-K" per warp): the kernel flattens its work into a sequence of
// tiles (16 * kRT weight rows over the whole k range) of C chunks each (chunk = kU k-steps of
// those rows), tile-major, and gives every warp of a persistent grid an equal contiguous range
// [f_begin, f_end) of it. A warp walks its range with one cp.async ring that never drains
// between tiles (the next tile's chunks are in flight while this one's sums are finished), so
// every SM keeps the same bytes in flight from the first chunk to the last, with no CTA turnover,
// no wave quantization and no barriers. When the warp leaves a tile it calls done(tile, acc);
// the kernel writes y or, for a tile shared with other warps, a partial sum (the last of them to
// arrive adds the partials in warp order: deterministic).
// kDiag (micro-benchmarks only): 1 = loads only (no math), 2 = math only (no loads; the ring's
// stale bytes are multiplied).
template <bool kFp8, int kMT, int kRT, int kU, int kS, bool kF16 = false>
struct WarpStream {
  using F = WeightFormat<kFp8>;
  static_assert(kS >= 2, "at least two ring slots");
  static_assert(kFp8 || !kF16, "the f16 widening is for fp8 weights");
  static constexpr int kVecsPerChunk = kU * kRT * 2;  // 16-byte vectors per thread per chunk
  static constexpr int kChunkBytes = kVecsPerChunk * 32 * 16;  // per warp
  static constexpr int kRingBytesPerWarp = kS * kChunkBytes;
  static constexpr int kElems = kRT * kMT * 4;  // accumulators per thread
  static constexpr int kChunkK = kU * F::kStepK;  // k elements per chunk

  // rows_of(tile, &w, &rows): the tile's first weight row and its valid rows (<= 16 kRT);
  // x_of(tile, xrow): this lane's activation row pointers (at k = t * kElemsPerVec, nullptr past
  // m); done(tile, acc). w row stride ldw_bytes; k the row length; C chunks per tile.
  template <int kDiag, typename RowsFn, typename XFn, typename DoneFn>
  __device__ static void walk(int64_t f_begin, int64_t f_end, int C, int k, int64_t ldw_bytes, uint8_t* smem, bool pdl,
                              RowsFn&& rows_of, XFn&& x_of, DoneFn&& done) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int nc = static_cast<int>(f_end - f_begin);
    const uint32_t ring = smem_addr(smem) + lane * 16;

    // Issue side: the tile and chunk of the next chunk to request, its row pointers.
    int64_t issue_tile = f_begin / C;
    int issue_kc = static_cast<int>(f_begin - issue_tile * C);
    const uint8_t* wrow[kRT][2];
    auto set_rows = [&](int64_t tile) {
      const uint8_t* w0;
      int rows;
      rows_of(tile, w0, rows);
#pragma unroll
      for (int rt = 0; rt < kRT; ++rt)
#pragma unroll
        for (int h = 0; h < 2; ++h) wrow[rt][h] = w0 + min(rt * 16 + g + 8 * h, rows - 1) * ldw_bytes + t * 16;
    };
    set_rows(issue_tile);
    auto issue = [&](int i) {  // chunk f_begin + i into slot i % kS
      const uint32_t slot = ring + (i % kS) * kChunkBytes;
      if constexpr (kDiag != 2) {
#pragma unroll
        for (int u = 0; u < kU; ++u) {
          const int k0 = (issue_kc * kU + u) * F::kStepK;
          const bool ok = k0 + t * F::kElemsPerVec < k;
          const int64_t off = ok ? (kFp8 ? k0 : 2 * k0) : 0;
#pragma unroll
          for (int rt = 0; rt < kRT; ++rt)
#pragma unroll
            for (int h = 0; h < 2; ++h) cp_async_16(slot + ((u * kRT + rt) * 2 + h) * 512, wrow[rt][h] + off, ok);
        }
      }
      if (++issue_kc == C) {
        issue_kc = 0;
        ++issue_tile;
        if (i + 1 < nc) set_rows(issue_tile);
      }
    };

#pragma unroll
    for (int i = 0; i < kS - 1; ++i) {
      if (i < nc) issue(i);
      cp_async_commit();
    }
    if (pdl) {
      wait_for_previous_kernel();  // x (and the workspace) may come from the kernel before this one
      allow_next_kernel();
    }

    // Compute side.
    int64_t tile = f_begin / C;
    int kc = static_cast<int>(f_begin - tile * C);
    const __nv_bfloat16* xrow[kMT];
    x_of(tile, xrow);
    float acc[kRT][kMT][4] = {};
    for (int i = 0; i < nc; ++i) {
      if (i + kS - 1 < nc) issue(i + kS - 1);
      cp_async_commit();
      // x fragments first (L1 / L2 hits, independent of the ring): their latency overlaps the wait.
      uint32_t b[kU][kMT][2 * F::kMmasPerVec];
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int k0 = (kc * kU + u) * F::kStepK;
        const bool ok = k0 + t * F::kElemsPerVec < k;
#pragma unroll
        for (int nt = 0; nt < kMT; ++nt) {
          const bool x_ok = kDiag != 1 && ok && xrow[nt] != nullptr;
#pragma unroll
          for (int v = 0; v < F::kMmasPerVec / 2; ++v) {
            const uint4 xv = x_ok ? load_x(xrow[nt] + k0 + 8 * v) : make_uint4(0, 0, 0, 0);
            b[u][nt][4 * v] = xv.x; b[u][nt][4 * v + 1] = xv.y; b[u][nt][4 * v + 2] = xv.z; b[u][nt][4 * v + 3] = xv.w;
          }
        }
      }
      cp_async_wait<kS - 1>();  // chunk i has landed (this thread's own copies: no barrier needed)
      if constexpr (kDiag != 1) {
        const uint8_t* slot = smem + lane * 16 + (i % kS) * kChunkBytes;
#pragma unroll
        for (int u = 0; u < kU; ++u) {
          uint32_t a[kRT][2][2 * F::kMmasPerVec];  // weights as bf16 words (see Core::stream)
#pragma unroll
          for (int rt = 0; rt < kRT; ++rt)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const uint4 v = *reinterpret_cast<const uint4*>(slot + ((u * kRT + rt) * 2 + h) * 512);
              const uint32_t q[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
              for (int j = 0; j < 4; ++j) {
                if constexpr (kFp8) widen_fp8x4<kF16>(q[j], a[rt][h][2 * j], a[rt][h][2 * j + 1]);
                else a[rt][h][j] = q[j];
              }
            }
          if constexpr (kF16) {  // x to f16 after the wait: the loads' latency overlaps it
#pragma unroll
            for (int nt = 0; nt < kMT; ++nt)
#pragma unroll
              for (int j = 0; j < 2 * F::kMmasPerVec; ++j) b[u][nt][j] = bf16x2_to_f16x2(b[u][nt][j]);
          }
#pragma unroll
          for (int nt = 0; nt < kMT; ++nt)
#pragma unroll
            for (int j = 0; j < F::kMmasPerVec; ++j)
#pragma unroll
              for (int rt = 0; rt < kRT; ++rt)
                mma_16x8x16<kF16>(acc[rt][nt], a[rt][0][2 * j], a[rt][1][2 * j], a[rt][0][2 * j + 1], a[rt][1][2 * j + 1],
                                 b[u][nt][2 * j], b[u][nt][2 * j + 1]);
        }
      }
      if (++kc == C || i + 1 == nc) {  // the warp leaves this tile
        done(tile, acc);
#pragma unroll
        for (int rt = 0; rt < kRT; ++rt)
#pragma unroll
          for (int nt = 0; nt < kMT; ++nt)
#pragma unroll
            for (int c = 0; c < 4; ++c) acc[rt][nt][c] = 0.f;
        kc = 0;
        ++tile;
        if (i + 1 < nc) x_of(tile, xrow);
      }
    }
    cp_async_wait<0>();
  }
};

// Which warp of a stream over F chunks split among W warps (warp q: [F q / W, F (q + 1) / W))
// holds chunk f; F >= W, so no warp's range is empty.
__device__ __forceinline__ int64_t stream_begin(int64_t q, int64_t F, int64_t W) { return F * q / W; }
__device__ __forceinline__ int64_t stream_owner(int64_t f, int64_t F, int64_t W) { return ((f + 1) * W - 1) / F; }

// Warp q of a stream leaves tile `tile` (C chunks) with its sums in acc: true when acc then holds
// the tile's complete sums (the warp covered the whole tile, or it was the last of the tile's
// warps to arrive and has added their partials, in warp order), for the caller to write y.
// partials: [2 W, kElems, 32] f32 (slot 2q: the warp's first tile, 2q + 1: its last);
// counters: [tiles] int, zero between calls (the last warp resets its tile's). m: valid columns.
template <int kRT, int kMT>
__device__ __forceinline__ bool stream_tile_sums(float (&acc)[kRT][kMT][4], int64_t tile, int C, int64_t q, int64_t F,
                                                 int64_t W, float* partials, int* counters, int m) {
  constexpr int kElems = kRT * kMT * 4;
  const int lane = threadIdx.x & 31, t = lane & 3;
  const int64_t t0 = tile * C, t1 = t0 + C;
  const int64_t fb = stream_begin(q, F, W), fe = stream_begin(q + 1, F, W);
  if (fb <= t0 && fe >= t1) return true;
  float* part = partials + (2 * q + (fb / C == tile ? 0 : 1)) * kElems * 32 + lane;
#pragma unroll
  for (int rt = 0; rt < kRT; ++rt)
#pragma unroll
    for (int nt = 0; nt < kMT; ++nt)
#pragma unroll
      for (int c = 0; c < 4; ++c)
        if (frag_m(nt, c, t) < m) __stcg(part + ((rt * kMT + nt) * 4 + c) * 32, acc[rt][nt][c]);
  __threadfence();
  __syncwarp();
  const int64_t q0 = stream_owner(t0, F, W), q1 = stream_owner(t1 - 1, F, W);
  int last = 0;
  if (lane == 0) last = atomicAdd(counters + tile, 1) == static_cast<int>(q1 - q0);
  last = __shfl_sync(0xffffffffu, last, 0);
  if (!last) return false;
  __threadfence();
#pragma unroll
  for (int rt = 0; rt < kRT; ++rt)
#pragma unroll
    for (int nt = 0; nt < kMT; ++nt)
#pragma unroll
      for (int c = 0; c < 4; ++c) acc[rt][nt][c] = 0.f;
  for (int64_t qq = q0; qq <= q1; ++qq) {
    const float* pp = partials + (2 * qq + (stream_begin(qq, F, W) / C == tile ? 0 : 1)) * kElems * 32 + lane;
#pragma unroll
    for (int rt = 0; rt < kRT; ++rt)
#pragma unroll
      for (int nt = 0; nt < kMT; ++nt)
#pragma unroll
        for (int c = 0; c < 4; ++c)
          if (frag_m(nt, c, t) < m) acc[rt][nt][c] += __ldcg(pp + ((rt * kMT + nt) * 4 + c) * 32);
  }
  if (lane == 0) counters[tile] = 0;  // ready for the next call (or graph replay)
  return true;
}

}  // namespace kiln::skinny
