// The wgmma streaming core of the fp8 decode GEMMs (skinny_gemm.cu's wgmma rows, the MoE decode
// GEMM's wgmma row): kWG warpgroups (128 threads each, the whole CTA; the MoE row: one) take
// 64 weight rows each (the M side of wgmma.m64nNk32.e4m3) and share N = 8 / 16 / 32 / 64 (96:
// the MoE rows' wide tiles) activation rows (x quantized per token to e4m3 by skinny_x_fp8.cuh, rows past m zero), so one
// x tile serves 64 kWG weight rows; they stream k through a kS-stage shared-memory ring of
// [64 kWG rows x 128 bytes] weight tiles and [N rows x 128 bytes] x tiles, both K-major and
// 128B-swizzled (16-byte chunk c of row r at r * 128 + ((c ^ (r % 8)) * 16): the layout wgmma's
// SWIZZLE_128B descriptors read). Each thread copies its 16-byte vectors with cp.async (rows
// past n and k past the end zero-filled, nothing read), so no tensor maps are needed (the MoE
// kernel picks its expert in the kernel). Per stage: 4 wgmma k32, waited for at the next stage's
// start, while kS - 1 stages of loads are outstanding. Programmatic dependent launch: the weight
// tiles of the first kS - 1 stages are requested before griddepcontrol.wait, x only after it.
#pragma once
#include <cstdint>

#include "kiln/kernels/cuda/attention/hopper_device.cuh"
#include "kiln/kernels/cuda/gemm/skinny_gemm_core.cuh"

namespace kiln::skinny::wg {

inline constexpr int kThreads = 128;   // one warpgroup (the threads of a kWG = 1 CTA)
inline constexpr int kRows = 64;       // weight rows per warpgroup (wgmma M)
inline constexpr int kTileK = 128;     // k bytes (= e4m3 elements) per stage: one 128B swizzle row
inline constexpr int kWTileBytes = kRows * kTileK;

// d[64 x N] += A[64 x 32] * B[32 x N], e4m3 from shared memory (both K-major), f32 accumulators.
// Accumulator d[4 j + 2 h + e]: weight row 16 * warp + g + 8 h, activation row 8 j + 2 t + e.
// accumulate = 0: d = A * B.
__device__ __forceinline__ void wgmma_e4m3(float (&d)[4], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %6, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n8k32.f32.e4m3.e4m3 {%0, %1, %2, %3}, %4, %5, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "l"(a), "l"(b), "r"(accumulate));
}
__device__ __forceinline__ void wgmma_e4m3(float (&d)[8], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n16k32.f32.e4m3.e4m3 {%0, %1, %2, %3, %4, %5, %6, %7}, %8, %9, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
      : "l"(a), "l"(b), "r"(accumulate));
}
__device__ __forceinline__ void wgmma_e4m3(float (&d)[16], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k32.f32.e4m3.e4m3 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, "
      "%13, %14, %15}, %16, %17, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
      : "l"(a), "l"(b), "r"(accumulate));
}
__device__ __forceinline__ void wgmma_e4m3(float (&d)[32], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, "
      "%13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, "
      "1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(a), "l"(b), "r"(accumulate));
}

// n = 96 (the MoE decode GEMM's wide rows: up to 96 slots of one expert in one pass).
__device__ __forceinline__ void wgmma_e4m3(float (&d)[48], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %50, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n96k32.f32.e4m3.e4m3 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47"
      "}, %48, %49, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),
        "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),
        "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47])
      : "l"(a), "l"(b), "r"(accumulate));
}

// cp.async.wait_group n for a run-time n in [0, kMax].
template <int kMax>
__device__ __forceinline__ void cp_async_wait_upto(int n) {
  if constexpr (kMax > 0) {
    if (n >= kMax) {
      cp_async_wait<kMax>();
      return;
    }
    cp_async_wait_upto<kMax - 1>(n);
  } else {
    cp_async_wait<0>();
  }
}

// Accumulator element i of this thread: weight row (0..64 kWG - 1: warp w of the CTA holds rows
// 16 w ..) and activation row (0..N-1).
__device__ __forceinline__ int acc_row(int i) {
  const int lane = threadIdx.x & 31;
  return 16 * (threadIdx.x >> 5) + (lane >> 2) + 8 * ((i >> 1) & 1);
}
__device__ __forceinline__ int acc_col(int i) { return 8 * (i >> 2) + 2 * (threadIdx.x & 3) + (i & 1); }

// kN activation rows (8, 16, 32, 64 or 96) per pass, kS ring stages (>= 3), kWG warpgroups (64
// weight rows each) per CTA.
template <int kN, int kS, int kWG = 1>
struct WgmmaCore {
  static_assert(kN == 8 || kN == 16 || kN == 32 || kN == 64 || kN == 96, "wgmma n of 8, 16, 32, 64 or 96");
  static_assert(kS >= 3, "at least three stages (kS - 1 in flight, one in the math)");
  static_assert(kWG == 1 || kWG == 2, "one or two warpgroups");
  static constexpr int kCtaThreads = kThreads * kWG;
  static constexpr int kCtaRows = kRows * kWG;
  static constexpr int kRowsPerPass = kCtaThreads / 8;  // rows one 16-byte vector per thread covers
  static constexpr int kWTile = kCtaRows * kTileK;      // weight tile bytes per stage
  static constexpr int kXTileBytes = kN * kTileK;
  static constexpr int kXRowsPerThread = (kN + kRowsPerPass - 1) / kRowsPerPass;  // 16-byte x vectors per thread
  static constexpr int kAcc = kN / 2;
  // Ring: kS weight tiles then kS x tiles, 1024-byte aligned (the swizzle atom); + slack to align.
  static constexpr int kSmemBytes = kS * (kWTile + kXTileBytes) + 1024;

  // acc = w[row_base .. row_base + 64 kWG) x xq^T over k tiles [c_begin, c_end) (128 bytes each).
  // w: [n, k] e4m3, row stride ldw; xrow[j]: this thread's x row (tid / 8 + kRowsPerPass j) at k = 0
  // ([k] e4m3, nullptr: a zero row). smem: kSmemBytes. pdl: wait for the previous kernel after
  // the first weight tiles are requested (x is read only after it).
  // verify (with pdl): called by every thread right after the wait, before x is read; false: the
  // weight tiles requested before the wait are the wrong ones (a speculative expert, see
  // moe_decode_gemm.cu's ids_poll): stream drains them and returns false with acc undefined.
  struct NoVerify {
    __device__ bool operator()() const { return true; }
  };
  template <typename Verify = NoVerify>
  __device__ static bool stream(const uint8_t* __restrict__ w, int64_t ldw, int n, int k, int row_base,
                                const uint8_t* const (&xrow)[kXRowsPerThread], int c_begin, int c_end, uint8_t* smem,
                                bool pdl, float (&acc)[kAcc], Verify verify = {}) {
    using namespace kiln::cuda::hopper;
    const int tid = threadIdx.x, vec = tid & 7, r0 = tid >> 3;
    const uint32_t base = (smem_u32(smem) + 1023u) & ~1023u;
    const uint32_t w_ring = base, x_ring = base + kS * kWTile;
    // + kRowsPerPass * 128 per pass (kRowsPerPass is a multiple of 8: the swizzle phase holds)
    const uint32_t sw_off = static_cast<uint32_t>(r0 * kTileK + ((vec ^ (r0 & 7)) << 4));
    const uint8_t* wr[4];
    bool w_ok[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = row_base + r0 + kRowsPerPass * i;
      w_ok[i] = r < n;
      wr[i] = w + static_cast<int64_t>(w_ok[i] ? r : 0) * ldw;  // + kb (which includes vec * 16) per tile
    }
    const int nc = c_end - c_begin;
    auto issue_w = [&](int i) {  // weight tile of stage i into slot i % kS
      const int kb = (c_begin + i) * kTileK + vec * 16;
      const bool k_ok = kb < k;
      const uint32_t dst = w_ring + (i % kS) * kWTile + sw_off;
#pragma unroll
      for (int j = 0; j < 4; ++j)
        cp_async_16(dst + j * kRowsPerPass * kTileK, k_ok && w_ok[j] ? wr[j] + kb : wr[j], k_ok && w_ok[j]);
    };
    auto issue_x = [&](int i) {
      const int kb = (c_begin + i) * kTileK + vec * 16;
      const bool k_ok = kb < k;
      const uint32_t dst = x_ring + (i % kS) * kXTileBytes + sw_off;
#pragma unroll
      for (int j = 0; j < kXRowsPerThread; ++j) {
        if (r0 + kRowsPerPass * j >= kN) continue;  // kN < kRowsPerPass: some of the threads
        const bool ok = k_ok && xrow[j] != nullptr;
        cp_async_16(dst + j * kRowsPerPass * kTileK, ok ? xrow[j] + kb : w, ok);
      }
    };

#pragma unroll
    for (int i = 0; i < kAcc; ++i) acc[i] = 0.f;
#pragma unroll
    for (int i = 0; i < kS - 1; ++i) {
      if (i < nc) issue_w(i);
      cp_async_commit();
    }
    if (pdl) {
      wait_for_previous_kernel();  // x (the quantizer's output) comes from the kernel before this one
      allow_next_kernel();
      if (!verify()) {
        cp_async_wait<0>();
        __syncthreads();  // every thread's copies into the ring have landed: it may be reused
        return false;
      }
    }
#pragma unroll
    for (int i = 0; i < kS - 1; ++i)
      if (i < nc) issue_x(i);
    cp_async_commit();
    // Groups: W_0 .. W_{kS-2}, X (the prologue's x), then one per stage (stage i + kS - 1).
    // Each stage's 4 wgmma sum into a fresh accumulator set `part` that is added to acc in f32
    // once they are done: the fp8 tensor cores keep fewer accumulator bits than f32, so the long k
    // reduction is promoted every 128 products. Stage i's wgmma are waited for at the start of
    // stage i + 1, after its tile has landed: their latency hides behind that wait, their slot
    // takes the next tile (kS - 1 tiles in flight), and acc reads part only after
    // wgmma.wait_group 0. (Reading one set while the other's wgmma ran, as an earlier version
    // did, made ptxas serialize every wgmma of the loop (its C7514 message): 4 waits a stage, the
    // t = 1 MoE down GEMM at ~81% of copy against ~92% for the same copies without math.)
    float part[kAcc];
    auto stage = [&](int i) {
      cp_async_wait_upto<kS - 2>(i);  // stage i (and the prologue's x) landed: this thread's copies
      fence_async_smem();             // ... visible to wgmma (async proxy)
      wgmma_wait<0>();                // stage i - 1's wgmma are done
      __syncthreads();                // ... everyone's landed tiles and finished wgmma: slot (i - 1) % kS is free
      if (i + kS - 1 < nc) {
        issue_w(i + kS - 1);
        issue_x(i + kS - 1);
      }
      cp_async_commit();
      if (i > 0) {
        pin(part);
#pragma unroll
        for (int j = 0; j < kAcc; ++j) acc[j] += part[j];
      }
      // this warpgroup's 64 rows of the weight tile (8 KiB, 1024-aligned)
      const uint32_t a = w_ring + (i % kS) * kWTile + (kWG > 1 ? (tid >> 7) * kWTileBytes : 0),
                     b = x_ring + (i % kS) * kXTileBytes;
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kTileK / 32; ++kk)
        wgmma_e4m3(part, smem_desc<128>(a + kk * 32, 16, 1024), smem_desc<128>(b + kk * 32, 16, 1024), kk);
      wgmma_commit();
    };
    for (int i = 0; i < nc; ++i) stage(i);
    wgmma_wait<0>();
    if (nc > 0) {
      pin(part);
#pragma unroll
      for (int j = 0; j < kAcc; ++j) acc[j] += part[j];
    }
    cp_async_wait<0>();
    return true;
  }
};

}  // namespace kiln::skinny::wg
