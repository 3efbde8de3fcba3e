// sm_90a device helpers for the Hopper prefill attention: mbarriers, TMA tile loads, wgmma fences
// and shared-memory matrix descriptors, named barriers, register reallocation, fp8 packing.
// Swizzled tiles: rows of kRowBytes (128 or 64) bytes, 16-byte chunks XOR-ed by the row inside an
// atom of 8 rows (the layout TMA writes with CU_TENSOR_MAP_SWIZZLE_128B / _64B and wgmma reads).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "kiln/kernels/cuda/attention/attention_device.cuh"
#include "kiln/kernels/cuda/attention/hopper_wgmma.cuh"

namespace kiln::cuda::hopper {

constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ---- mbarriers -----------------------------------------------------------------------------
__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
}
__device__ __forceinline__ void mbar_init_fence() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// Blocks until the phase of parity `parity` has completed (a fresh barrier counts parity 1 done).
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}

// ---- TMA ------------------------------------------------------------------------------------
// One box of a 4-D / 3-D tensor map into shared memory, completing `bytes` on `bar`.
__device__ __forceinline__ void tma_load_4d(uint32_t dst, const void* tmap, uint32_t bar, int c0, int c1, int c2,
                                            int c3) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5, %6}], "
      "[%2];\n" ::"r"(dst),
      "l"(tmap), "r"(bar), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
      : "memory");
}
__device__ __forceinline__ void tma_load_3d(uint32_t dst, const void* tmap, uint32_t bar, int c0, int c1, int c2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5}], [%2];\n" ::
          "r"(dst),
      "l"(tmap), "r"(bar), "r"(c0), "r"(c1), "r"(c2)
      : "memory");
}
__device__ __forceinline__ void tma_prefetch_map(const void* tmap) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(tmap) : "memory");
}

// ---- ordering, barriers, registers ---------------------------------------------------------
// Generic-proxy shared-memory writes become visible to wgmma / TMA (async proxy) reads.
__device__ __forceinline__ void fence_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void named_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
template <int kRegs>
__device__ __forceinline__ void regs_dealloc() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}
template <int kRegs>
__device__ __forceinline__ void regs_alloc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}

// ---- wgmma ----------------------------------------------------------------------------------
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
// Pins accumulator registers around async wgmma so the compiler neither reads nor moves them.
template <int kN>
__device__ __forceinline__ void pin(float (&r)[kN]) {
#pragma unroll
  for (int i = 0; i < kN; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int kN, int kM>
__device__ __forceinline__ void pin(uint32_t (&r)[kN][kM]) {
#pragma unroll
  for (int i = 0; i < kN; ++i)
#pragma unroll
    for (int j = 0; j < kM; ++j) asm volatile("" : "+r"(r[i][j])::"memory");
}

// Shared-memory matrix descriptor of a swizzled operand tile (PTX "matrix descriptor"): start
// address, leading / stride byte offsets, swizzle mode 1 = 128 B, 2 = 64 B.
template <int kRowBytes>
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  constexpr uint64_t kMode = kRowBytes == 128 ? 1 : 2;
  return static_cast<uint64_t>((addr & 0x3ffff) >> 4) | (static_cast<uint64_t>((lbo >> 4) & 0x3fff) << 16) |
         (static_cast<uint64_t>((sbo >> 4) & 0x3fff) << 32) | (kMode << 62);
}

// A descriptor kept as its two words for cheap stepping: lo = start address >> 4 (14 bits) | leading
// byte offset << 16, hi = stride byte offset | swizzle mode. Moving the start by b bytes (b % 16 == 0,
// staying inside shared memory, < 256 KB) adds b >> 4 to lo, so a loop's wgmma descriptors are one
// add each from a base built once (building each from its address cost ~6 uniform-datapath
// instructions a wgmma, ~120 of the fp8 kernel's ~460 a tile).
struct SmemDesc {
  uint32_t lo, hi;
  __device__ __forceinline__ SmemDesc plus(uint32_t bytes) const { return {lo + (bytes >> 4), hi}; }
  __device__ __forceinline__ uint64_t at(uint32_t bytes) const {
    return (static_cast<uint64_t>(hi) << 32) | (lo + (bytes >> 4));
  }
};
template <int kRowBytes>
__device__ __forceinline__ SmemDesc smem_desc_base(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  const uint64_t d = smem_desc<kRowBytes>(addr, lbo, sbo);
  return {static_cast<uint32_t>(d), static_cast<uint32_t>(d >> 32)};
}

// Byte offset of 16-byte chunk `chunk` of row `row` in a swizzled tile of kRowBytes-byte rows.
template <int kRowBytes>
__device__ __forceinline__ uint32_t swizzled(int row, int chunk) {
  static_assert(kRowBytes == 128 || kRowBytes == 64);
  const int x = kRowBytes == 128 ? (row & 7) : ((row >> 1) & 3);
  return static_cast<uint32_t>(row * kRowBytes + ((chunk ^ x) << 4));
}

// ---- small math -----------------------------------------------------------------------------
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}
// 2^x on the FMA pipe (FlashAttention-4 style, to offload MUFU.EX2): x = n + f with n = round(x),
// f in [-0.5, 0.5]; 2^f by a cubic fitted for relative error (minimax, scripts/hopper_exp2_fit.py:
// < 7.5e-5, far below the 2^-4 of e4m3's rounding of P), n added to the exponent bits. x is clamped
// at -126 (2^-126 ~ 0 for P; -inf gives that too). SASS: FMNMX, 3 FADD, 3 FFMA, one SHL + IADD
// (or LEA) instead of one MUFU.EX2.
__device__ __forceinline__ float exp2_poly(float x) {
  constexpr float kRound = 12582912.f;  // 1.5 * 2^23: x + kRound holds round(x) in its low mantissa bits
  x = fmaxf(x, -126.f);
  const float r = x + kRound;
  const float f = x - (r - kRound);
  const float p = fmaf(fmaf(fmaf(0.055171434f, f, 0.24261081f), f, 0.69326097f), f, 0.99992812f);
  return __int_as_float(__float_as_int(p) + (__float_as_int(r) << 23));
}
using attn::quad_max;  // reductions over the 4 lanes of an MMA row (attention_device.cuh)
using attn::quad_sum;
// Two floats as bf16x2, `lo` in the low half.
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
// Four floats as e4m3x4 (saturating), `a` in the lowest byte.
__device__ __forceinline__ uint32_t pack_e4m3(float a, float b, float c, float d) {
  uint16_t lo, hi;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;\n" : "=h"(lo) : "f"(b), "f"(a));
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;\n" : "=h"(hi) : "f"(d), "f"(c));
  return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
}

// e4m3x2 of 2^lo, 2^hi (`lo` in the low byte): one ex2.approx.f16x2 for both (f16: 10 mantissa
// bits, far finer than e4m3's 3; x up to 2^15 exact enough, -inf -> 0), then one f16x2 -> e4m3x2.
__device__ __forceinline__ uint16_t exp2_e4m3x2(float lo, float hi) {
  uint32_t h;
  uint16_t e;
  asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(h) : "f"(hi), "f"(lo));
  asm("ex2.approx.f16x2 %0, %1;\n" : "=r"(h) : "r"(h));
  asm("cvt.rn.satfinite.e4m3x2.f16x2 %0, %1;\n" : "=h"(e) : "r"(h));
  return e;
}

// The four e4m3 bytes of `w` (lowest first) as floats (exact).
__device__ __forceinline__ float4 unpack_e4m3(uint32_t w) {
  uint32_t lo, hi;
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;\n" : "=r"(lo) : "h"(static_cast<uint16_t>(w & 0xffff)));
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;\n" : "=r"(hi) : "h"(static_cast<uint16_t>(w >> 16)));
  const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&lo));
  const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&hi));
  return make_float4(a.x, a.y, b.x, b.y);
}

}  // namespace kiln::cuda::hopper
