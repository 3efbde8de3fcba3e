// Decode GEMM for m = 1..64: the streaming core of skinny_gemm_core.cuh (weights HBM -> shared
// memory by cp.async, tensor cores with the operands swapped) over a grid of 16 * kRT-row CTAs
// whose 1..8 warps split the CTA's k range (summed in shared memory). The launch shape fills
// the SMs: warps per CTA from the occupancy calculator (one wave where the rows allow it), and
// split-K across CTAs only when the rows are too few for the SMs, reduced in a fixed order by
// the last CTA of each row block to arrive (deterministic, one launch, CUDA-graph safe; the wgmma
// rows' splits meet in a thread-block cluster instead where they are at most 8).
// Launched with programmatic dependent launch (SkinnyGemmWorkspace::pdl). The stream variants
// (m > 1 on large matrices): a persistent grid whose warps each take an equal share of the
// (tile, chunk) sequence (skinny::WarpStream), partial tiles summed by the last warp in warp order.
#include <cuda_bf16.h>

#include <algorithm>
#include <array>
#include <string>
#include <type_traits>

#include "kiln/kernels/cuda/common/cuda_check.h"
#include "kiln/kernels/cuda/gemm/skinny_gemm.h"
#include "kiln/kernels/cuda/gemm/skinny_gemm_core.cuh"
#include "kiln/kernels/cuda/gemm/skinny_gemm_kernels.cuh"
#include "kiln/kernels/cuda/gemm/skinny_wgmma.cuh"
#include "kiln/kernels/cuda/gemm/skinny_x_fp8.cuh"

namespace kiln {
namespace {

using skinny::kMaxWarps;
using skinny::skinny_gemm_kernel;
using skinny::skinny_stream_kernel;
using skinny::skinny_wgmma_kernel;
using skinny::SkinnyParams;

struct Variant {
  SkinnyGemmVariant v;
  const void* kernel;  // for the occupancy calculator and the shared-memory limit
  int smem_per_warp;
  const void* diag_kernels[2] = {};  // stream variants: loads only, math only (micro-benchmarks)
};

// kF16 (fp8 only): the f16 widening (hardware cvt, x rounded to f16), else exact bf16; kE4m3
// (fp8 only): x quantized to e4m3 per token, the e4m3 mma.
template <bool kFp8, int kMT, int kRT, int kU, int kS, int kMinBlocks, typename Y, bool kF16 = false, bool kE4m3 = false,
          int kAcc = 1, bool kXAhead = false>
Variant row(bool preferred) {
  constexpr DType w = kFp8 ? DType::kFp8E4M3 : DType::kBF16;
  constexpr DType y = std::is_same_v<Y, float> ? DType::kF32 : DType::kBF16;
  SkinnyGemmVariant v{w, y, 8 * kMT, kRT, kU, kS, preferred, false, kF16, kE4m3};
  v.acc_sets = kAcc;
  v.x_ahead = kXAhead;
  return {v, reinterpret_cast<const void*>(&skinny_gemm_kernel<kFp8, kMT, kRT, kU, kS, kMinBlocks, kF16, kE4m3, Y, kAcc, kXAhead>),
          skinny::Core<kFp8, kMT, kRT, kU, kS, kF16, kE4m3, kAcc, kXAhead>::kSmemPerWarp};
}
// The f16 widening rows with kAcc accumulator sets and x loaded a chunk ahead (kXAhead).
template <int kMT, int kRT, int kU, int kS, int kMinBlocks, int kAcc, bool kXAhead>
Variant f16_row(bool preferred) {
  return row<true, kMT, kRT, kU, kS, kMinBlocks, __nv_bfloat16, true, false, kAcc, kXAhead>(preferred);
}
template <int kMT, int kRT, int kU, int kS, int kMinBlocks, typename Y>
Variant e4m3_row(bool preferred) {
  return row<true, kMT, kRT, kU, kS, kMinBlocks, Y, false, true>(preferred);
}

// The wgmma rows: kN activation rows (max m), kS ring stages of 128 k bytes, kWG warpgroups of 64
// weight rows each; row_tiles 4 kWG (64 kWG weight rows), unroll 8 (128-byte k tiles of 16 e4m3
// per k step), warps fixed at 4 kWG.
template <int kN, int kS, typename Y, int kWG = 1>
Variant wgmma_row(bool preferred, int64_t min_n = 0) {
  constexpr DType y = std::is_same_v<Y, float> ? DType::kF32 : DType::kBF16;
  SkinnyGemmVariant v{DType::kFp8E4M3, y, kN, 4 * kWG, 8, kS, preferred, false, false, true};
  v.wgmma = true;
  v.min_n = min_n;
  return {v, reinterpret_cast<const void*>(&skinny_wgmma_kernel<kN, kS, Y, kWG>),
          skinny::wg::WgmmaCore<kN, kS, kWG>::kSmemBytes / (4 * kWG)};
}

template <bool kFp8, int kMT, int kRT, int kU, int kS, int kMinBlocks, typename Y, bool kF16 = false>
Variant srow(bool preferred) {
  constexpr DType w = kFp8 ? DType::kFp8E4M3 : DType::kBF16;
  constexpr DType y = std::is_same_v<Y, float> ? DType::kF32 : DType::kBF16;
  return {{w, y, 8 * kMT, kRT, kU, kS, preferred, true, kF16, false},
          reinterpret_cast<const void*>(&skinny_stream_kernel<kFp8, kMT, kRT, kU, kS, kMinBlocks, kF16, 0, Y>),
          skinny::WarpStream<kFp8, kMT, kRT, kU, kS, kF16>::kRingBytesPerWarp,
          {reinterpret_cast<const void*>(&skinny_stream_kernel<kFp8, kMT, kRT, kU, kS, kMinBlocks, kF16, 1, Y>),
           reinterpret_cast<const void*>(&skinny_stream_kernel<kFp8, kMT, kRT, kU, kS, kMinBlocks, kF16, 2, Y>)}};
}

using bf16 = __nv_bfloat16;
constexpr bool kPreferred = true, kAlt = false;

// One line per shipped kernel: <fp8, m tiles (max m / 8), row tiles, k steps per chunk, ring
// slots, resident CTAs the compiler must allow, y>. The preferred row of each (w, y, max m) is
// what Gemm::run uses; the alternatives are there for bench/gemm_bench's sweep (and are tested).
// H100 sweep (graph-timed, m = 1 and 8): bf16 prefers 4-step chunks x 4 slots (qkv 92%, o_proj
// 88%, down 99% of copy at m = 1 vs 88 / 84 / 90% with 2 x 6); fp8 prefers 2 x 6 except gate_up.
// Tried and dropped: x fragments through the cp.async ring as well (fp8 qkv 39% vs 63%).
// fp8 is bound by the widening + MMA work per byte, which runs at the rate the resident warps'
// latency allows (stream variant, math only: 1.36x the copy rate on gate_up m = 1, 1.09x at
// m = 16; throughput grew with warps per SM: 4 / 8 / 16 warps = 48 / 68 / 78% on gate_up m = 8), so
// fp8 m <= 8 now prefers 3 CTAs per SM with 4-slot rings (m = 1: qkv 62 -> 68%, gate_up 87 -> 92%;
// m = 8: gate_up 75 -> 84%, down 74 -> 68%). The stream variants (persistent grid, equal chunks
// per warp, partial tiles summed by the last warp) pay a ~6 us fixed cost (the partial-sum
// handoffs), so Gemm::run takes them only for m > 1 on matrices of 96 MiB and more (fp8 m = 16:
// gate_up 64 -> 73%, LM head 71 -> 86%; bf16 m = 8: gate_up 88 -> 90%, LM head 90 -> 93%).
const Variant kVariants[] = {
    row<false, 1, 1, 4, 4, 2, bf16>(kPreferred),
    row<false, 1, 1, 2, 6, 2, bf16>(kAlt),
    row<false, 1, 1, 2, 8, 2, bf16>(kAlt),
    row<false, 2, 1, 2, 6, 2, bf16>(kPreferred),
    row<false, 4, 1, 2, 4, 2, bf16>(kPreferred),
    row<false, 8, 1, 2, 4, 1, bf16>(kPreferred),
    row<false, 1, 1, 4, 4, 2, float>(kPreferred),
    row<false, 2, 1, 2, 6, 2, float>(kPreferred),
    row<false, 4, 1, 2, 4, 2, float>(kPreferred),
    row<false, 8, 1, 2, 4, 1, float>(kPreferred),
    row<true, 1, 1, 2, 6, 2, bf16>(kAlt),
    row<true, 1, 1, 4, 4, 2, bf16>(kAlt),
    row<true, 1, 1, 2, 8, 2, bf16>(kAlt),
    row<true, 2, 1, 2, 6, 2, bf16>(kAlt),  // the exact-bf16 row of the f16 one preferred below
    row<true, 2, 2, 2, 4, 2, bf16>(kAlt),
    row<true, 4, 2, 2, 4, 1, bf16>(kPreferred),
    row<true, 4, 1, 2, 4, 2, bf16>(kAlt),
    row<true, 8, 2, 2, 4, 1, bf16>(kPreferred),
    row<true, 8, 1, 2, 4, 1, bf16>(kAlt),
    row<true, 1, 1, 2, 6, 2, float>(kPreferred),
    row<true, 2, 1, 2, 6, 2, float>(kPreferred),
    row<true, 4, 2, 2, 4, 1, float>(kPreferred),
    row<true, 8, 2, 2, 4, 1, float>(kPreferred),
    // Persistent warp streams (m <= 16): <fp8, m tiles, row tiles, k steps per chunk, ring slots, y>.
    row<true, 1, 1, 2, 4, 3, bf16>(kAlt),  // the exact-bf16 row of the f16 one preferred below
    row<true, 1, 1, 2, 3, 4, bf16>(kAlt),
    row<true, 2, 1, 2, 4, 3, bf16>(kAlt),
    row<true, 2, 1, 2, 3, 4, bf16>(kAlt),
    // Persistent warp streams (m <= 16): <fp8, m tiles, row tiles, k steps per chunk, ring slots,
    // resident CTAs, y>.
    srow<true, 1, 1, 2, 6, 2, bf16>(kAlt),
    srow<true, 1, 1, 2, 4, 3, bf16>(kAlt),
    srow<true, 1, 1, 2, 3, 4, bf16>(kAlt),
    srow<true, 2, 1, 2, 6, 2, bf16>(kPreferred),
    srow<true, 2, 1, 2, 4, 3, bf16>(kAlt),
    srow<true, 1, 1, 2, 6, 2, float>(kPreferred),
    srow<true, 2, 1, 2, 6, 2, float>(kPreferred),
    srow<false, 1, 1, 2, 6, 2, bf16>(kPreferred),
    srow<false, 1, 1, 4, 4, 1, float>(kPreferred),
    // fp8 widened to f16 (one cvt per weight pair, x rounded to f16 as its fragments load, f16
    // mma): the preferred fp8 -> bf16 shapes for m <= 16 again, plus 32-row tiles at m <= 8 (the
    // x conversion shared by twice the weight rows). <fp8, m tiles, row tiles, k steps per chunk,
    // ring slots, resident CTAs, y, f16>. H100 A/B against the exact-bf16 rows (graph-timed, % of
    // 3000 GB/s): m = 1 qkv 67.0 -> 69.6, o_proj 58.3 -> 63.4, gate_up 91.4 -> 91.2, down 77.2 ->
    // 79.6; m = 8 qkv 63.5 -> 65.2, o_proj 55.2 -> 60.5, gate_up 83.6 -> 79.5, down 67.3 -> 75.4;
    // m = 16 (6 slots) qkv 52.9 -> 54.0, o_proj 47.1 -> 47.7, down 67.3 -> 68.7; 32-row tiles and
    // the stream row lost. So the f16 rows are preferred for fp8 -> bf16 at m <= 16 (y f32, the
    // LM head, keeps the exact widening). x past +-65504 is clamped (see skinny_gemm_core.cuh).
    row<true, 1, 1, 2, 4, 3, bf16, true>(kAlt),  // preferred until the x-ahead rows below
    row<true, 1, 2, 2, 4, 3, bf16, true>(kAlt),
    row<true, 2, 1, 2, 6, 2, bf16, true>(kPreferred),
    row<true, 2, 1, 2, 4, 3, bf16, true>(kAlt),
    srow<true, 2, 1, 2, 6, 2, bf16, true>(kAlt),
    // The f16 rows with independent accumulator sets and x loaded a chunk ahead: <m tiles, row
    // tiles, k steps per chunk, ring slots, resident CTAs, accumulator sets, x ahead>. H100 sweep
    // (graph-timed, % of copy, 2026-11-22; the row above -> these): m = 1 qkv 69.5 -> 70.9 (u2 a1
    // xa) / 72.8 (u4 a1 xa) / 73.7 (u4 a4 xa), o_proj 65.1 -> 66.7 / 70.5 / 72.5 (6 warps), gate_up
    // 91.0 -> 90.6 / 89.1 / 92.0, down 80.1 -> 80.8 / 85.3 / 87.2; m = 8 qkv 65.7 -> 68.7 / 66.6 /
    // 67.8, o_proj 61.7 -> 65.8 / 58.9 / 62.5, gate_up 78.9 -> 82.0 / 75.2 / 81.5, down 75.0 -> 79.6
    // / 82.2 / 83.0. Accumulator sets alone moved nothing (qkv m = 1 70.4 / 70.5 with 2 / 4 sets):
    // the mma chain is not the limit; the chunk size (4 steps) and x's L2 round trip off the
    // chunk's critical path are. Tried and dropped: 3 / 8 steps per chunk, 4 slots with 4 steps.
    f16_row<1, 1, 2, 4, 3, 1, true>(kAlt),
    f16_row<1, 1, 4, 3, 3, 1, true>(kAlt),
    f16_row<1, 1, 4, 3, 3, 4, true>(kPreferred),
    // Tried for m = 9..16 (two m tiles), dropped: f16_row<2, 1, 4, 3, 2, 4 / 1, true> and
    // <2, 1, 2, 6, 2, 2, true> against the preferred row<true, 2, 1, 2, 6, 2, bf16, true> (H100,
    // m = 16, % of copy): qkv <= 47.8, o_proj 42.7 vs 44.5, gate_up 49.1 vs 51.5, down 50.0 vs 51.1.
    // fp8 with x quantized per token to e4m3 (pre-pass kernel, skinny_x_fp8.cuh) and
    // mma.m16n8k32 e4m3 on the raw weight bytes. <m tiles, row tiles, k steps per chunk, ring
    // slots, resident CTAs, y>. Where an e4m3 row and another row are both preferred for the same
    // (w, y, max m), skinny_gemm_cuda takes the e4m3 one whenever the workspace has room for x
    // (and never the stream variants then). Not preferred: sm_90 has no fp8 mma.sync (ptxas
    // lowers it to 12 F2FP.F16.E4M3 unpacks of A and B + 2 HMMA.16816 per mma, i.e. more work
    // than the f16 rows, which widen x once per activation tile), and the H100 measured it slower
    // everywhere (graph-timed, % of copy, f16 row -> best e4m3 row): m = 1 qkv 69.5 -> 61.4,
    // o_proj 62.6 -> 55.5, gate_up 91.4 -> 84.0, down 80.1 -> 70.4; m = 8 qkv 64.9 -> 55.7,
    // o_proj 60.8 -> 52.3, gate_up 79.1 -> 76.3, down 75.2 -> 64.9; m = 16 qkv 53.5 -> 44.7,
    // o_proj 47.8 -> 37.6, gate_up 72.7 -> 51.1, down 68.7 -> 46.3. Native fp8 on Hopper is
    // wgmma only; these rows (tested) are what sm_89 / sm_120 (native QMMA) would run.
    e4m3_row<1, 1, 2, 4, 3, bf16>(kAlt),
    e4m3_row<2, 1, 2, 4, 3, bf16>(kAlt),
    // The wgmma rows (x quantized per token to e4m3, wgmma.m64nNk32.e4m3, skinny_wgmma.cuh): correct
    // (WgmmaRowsMatchPerTokenReference) but slower than the f16 rows on the dense shapes (H100, %
    // of copy, f16 -> best e4m3/wgmma row: m = 1 qkv 69.7 -> 63.7, o_proj 62.4 -> 53.9, gate_up
    // 91.8 -> 82.8, down 79.6 -> 71.4; m = 16 qkv 54.0 -> 56.8, gate_up 72.7 -> 74.5), so not
    // preferred here; the MoE decode GEMM's wgmma row is (moe_decode_gemm.cu).
    wgmma_row<8, 4, bf16>(kAlt),
    wgmma_row<8, 6, bf16>(kAlt),
    wgmma_row<8, 8, bf16>(kAlt),
    wgmma_row<16, 4, bf16>(kAlt),
    // The batched-decode wgmma rows (m = 9..64): N = 16 / 32 / 64 activation rows, two warpgroups
    // (128 weight rows per CTA: one x tile per 128 weight rows) or one. <N, ring stages, y,
    // warpgroups>. H100 sweep (graph-timed, % of copy, gemm_bench KILN_GEMM_SWEEP=wgmma), best
    // launch of the preferred row vs what Gemm::run took before (f16 row at m = 16, cuBLASLt fp8 at
    // m = 32 / 64): m = 16 qkv 55.1 vs 53.6, o_proj 43.6 vs 48.7, gate_up 90.7 vs 72.2, down 64.0
    // vs 68.9 (so N = 16 is preferred only for n >= 16384: 128 CTAs of 128 rows without split K);
    // m = 32 qkv 49.5 vs 53.5, o_proj 38.6 vs 37.0, gate_up 86.0 vs 77.3, down 60.4 vs 45.5; m = 64
    // qkv 41.1 vs 53.2, o_proj 29.4 vs 37.0, gate_up 78.4 vs 75.0, down 50.8 vs 46.2. One warpgroup
    // per CTA (more split K) and deeper rings (5 / 7 stages) were within +-2 points or worse.
    //
    // 2026-11-22 (seventh session), after x moved to L2 loads (`__ldcg`, the PDL fix): the f16 row
    // at m = 16 fell to qkv 47.5 / o_proj 44.3 / down 50.9% (its warps each read x from L2 now),
    // and one warpgroup per CTA at about two CTAs per SM beat the two-warpgroup rows below n =
    // 16384 (best split, % of copy; the 2-WG row or the f16 row Gemm::run took): m = 16 qkv 57.1 vs
    // 47.5, o_proj 46.2 vs 44.3, down 64.7 vs 50.9; m = 32 qkv 52.9 vs 49.6, o_proj 41.4 vs 38.5,
    // down 62.3 vs 60.4; m = 64 (1.5 CTAs per SM) qkv 44.3 vs 40.9, o_proj 34.8 vs 29.5, down 55.0
    // vs 51.0; gate_up stays on two warpgroups (m = 32: 85.9 vs 72.7). So for each N the 2-WG row
    // comes first with min_n 16384 and the 1-WG row after it is the pick below that; the 1-WG rows'
    // split is wgmma_cuda's.
    wgmma_row<16, 6, bf16, 2>(kPreferred, 16384),
    wgmma_row<16, 6, bf16, 1>(kPreferred),
    wgmma_row<32, 4, bf16, 2>(kPreferred, 16384),
    wgmma_row<32, 6, bf16, 1>(kPreferred),
    wgmma_row<32, 5, bf16, 2>(kAlt),
    wgmma_row<64, 4, bf16, 2>(kPreferred, 16384),
    wgmma_row<64, 6, bf16, 1>(kPreferred),
    wgmma_row<64, 7, bf16, 2>(kAlt),
    wgmma_row<32, 4, float, 2>(kPreferred),
    wgmma_row<64, 4, float, 2>(kPreferred),
};
constexpr int kNumVariants = sizeof(kVariants) / sizeof(kVariants[0]);

// Resident CTAs per SM of variant i with w warps (the occupancy calculator, cached).
Result<int> ctas_per_sm(int i, int w) {
  static int cache[kNumVariants][kMaxWarps + 1] = {};  // occupancy + 1; 0: not asked yet
  static bool smem_raised[kNumVariants] = {};
  const Variant& v = kVariants[i];
  if (!smem_raised[i]) {
    // At most the H100's 227 KiB per CTA (the wgmma rows' smem_per_warp is per 4 kWG warps).
    const int limit = std::min(kMaxWarps * v.smem_per_warp, 227 * 1024);
    KILN_CUDA_CHECK(cudaFuncSetAttribute(v.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, limit));
    for (const void* d : v.diag_kernels)
      if (d) KILN_CUDA_CHECK(cudaFuncSetAttribute(d, cudaFuncAttributeMaxDynamicSharedMemorySize, limit));
    smem_raised[i] = true;
  }
  if (cache[i][w] == 0) {
    int n = 0;
    KILN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, v.kernel, w * 32, static_cast<size_t>(w) * v.smem_per_warp));
    cache[i][w] = n + 1;
  }
  return cache[i][w] - 1;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The arguments every variant reads (the launch shape's fields are left zero).
SkinnyParams common_params(const LinearArgs& a) {
  const bool fp8 = a.w.dtype == DType::kFp8E4M3;
  SkinnyParams p{};
  p.w = static_cast<const uint8_t*>(a.w.data);
  p.x = static_cast<const __nv_bfloat16*>(a.x.data);
  p.w_scale = fp8 ? a.w_scale.ptr<float>() : nullptr;
  p.bias = a.bias.empty() ? nullptr : a.bias.data;
  p.y = a.y.data;
  p.m = static_cast<int>(a.x.shape[0]);
  p.n = static_cast<int>(a.w.shape[0]);
  p.k = static_cast<int>(a.x.shape[1]);
  p.ldw_bytes = a.w.strides[0] * (fp8 ? 1 : 2);
  p.ldx = a.x.strides[0];
  p.ldy = a.y.strides[0];
  p.scale_per_tensor = fp8 && a.w_scale.numel() == 1;
  return p;
}

// Where the e4m3 variants put x's e4m3 copy: the tail of the partials (see SkinnyGemmWorkspace);
// split K keeps the floats before it. False when the workspace has no room.
struct XFp8Region {
  uint8_t* base = nullptr;  // scales [m] f32, then q [m, k] at + kXFp8ScaleBytes
  int64_t split_floats = 0;
};
bool x_fp8_region(const SkinnyGemmWorkspace& ws, int64_t m, int64_t k, XFp8Region* r) {
  const int64_t total = ws.partial_floats * static_cast<int64_t>(sizeof(float)), bytes = skinny::x_fp8_bytes(m, k);
  if (!ws.partials || m > skinny::kXFp8MaxRows || bytes > total / 2) return false;
  const int64_t off = (total - bytes) / 256 * 256;
  r->base = reinterpret_cast<uint8_t*>(ws.partials) + off;
  r->split_floats = off / static_cast<int64_t>(sizeof(float));
  return reinterpret_cast<uintptr_t>(r->base) % 16 == 0;
}

// The pre-pass of the e4m3 variants: x [m, k] -> e4m3 per row into the region.
Status quantize_x(const SkinnyParams& p, const XFp8Region& r, bool pdl, cudaStream_t stream) {
  skinny::XFp8Params qp{p.x, p.ldx, r.base + skinny::kXFp8ScaleBytes, reinterpret_cast<float*>(r.base), p.k, pdl ? 1 : 0};
  void* args[] = {&qp};
  KILN_CUDA_CHECK(cuda::launch_pdl(reinterpret_cast<const void*>(&skinny::quantize_x_fp8_kernel), dim3(static_cast<unsigned>(p.m)),
                                   dim3(skinny::kXFp8Threads), 0, stream, args, pdl));
  return ok_status();
}

// The e4m3 rows' x: given pre-quantized (xq), or quantized by the pre-pass into the region.
Status set_xq(SkinnyParams& p, const XFp8Region& r, const SkinnyXq* xq, bool pdl, cudaStream_t stream) {
  if (xq) {
    p.xq = xq->q;
    p.x_scale = xq->scale;
    return ok_status();
  }
  KILN_RETURN_IF_ERROR(quantize_x(p, r, pdl, stream));
  p.xq = r.base + skinny::kXFp8ScaleBytes;
  p.x_scale = reinterpret_cast<const float*>(r.base);
  return ok_status();
}

Status launch_kernel(const void* kernel, SkinnyParams p, dim3 grid, int warps, int64_t smem, bool pdl, cudaStream_t stream,
                     dim3 cluster = dim3(1, 1, 1)) {
  void* args[] = {&p};
  KILN_CUDA_CHECK(
      cuda::launch_pdl(kernel, grid, dim3(static_cast<unsigned>(warps * 32)), static_cast<size_t>(smem), stream, args, pdl, cluster));
  return ok_status();
}

// The wgmma rows' launch: 4 kWG warps per CTA of 64 kWG weight rows; split K over the 128-byte
// k tiles up to about three CTAs per SM (the rows of one or two warpgroups: the CTAs resident in
// one wave), at least kWgmmaMinTilesPerSplit tiles per split.
constexpr int64_t kWgmmaMinTilesPerSplit = 4;
Status wgmma_cuda(const LinearArgs& a, const SkinnyGemmWorkspace& ws, cudaStream_t stream, const SkinnyGemmConfig& cfg, int vi,
                  const XFp8Region& xr, SkinnyGemmLaunch* launch, const SkinnyXq* xq) {
  const Variant& var = kVariants[vi];
  SkinnyParams p = common_params(a);
  const int warps = var.v.row_tiles;  // 4 per warpgroup
  KILN_ASSIGN_OR_RETURN(const int occ, ctas_per_sm(vi, warps));
  if (occ == 0) return internal_error("skinny_gemm: the wgmma kernel does not fit on an SM");
  const int64_t tiles = (p.k + skinny::wg::kTileK - 1) / skinny::wg::kTileK;
  const int64_t cta_rows = 16LL * var.v.row_tiles;
  const int64_t row_ctas = (p.n + cta_rows - 1) / cta_rows;
  int64_t splits = cfg.split_k;
  if (splits <= 0 && var.v.row_tiles > 4) {
    // Two warpgroups: about 1.5 CTAs per SM, within one wave (floor: a second, partial wave costs
    // more than the splits gain). H100 sweep (m = 32 / 64, no L2 prefetch, % of copy by split):
    // qkv best at 4 (48 row CTAs), o_proj at 4 (32), down at 6 (32), gate_up at 1 (224). Tried and
    // dropped: each CTA's k range bulk-prefetched into L2 before the wait for the previous kernel
    // (1 to 5 points worse on all four shapes at m = 16..64).
    const int64_t max_splits = std::max<int64_t>(1, tiles / kWgmmaMinTilesPerSplit);
    const int64_t fit = std::min<int64_t>(3LL * ws.num_sms / 2, static_cast<int64_t>(occ) * ws.num_sms) / row_ctas;
    splits = std::clamp<int64_t>(fit, 1, std::min<int64_t>(64, max_splits));
  } else if (splits <= 0 && var.v.max_m >= 16) {
    // One warpgroup, batched decode (m = 9..64): the nearest split to about two CTAs per SM (1.5
    // at N = 64). H100 sweep (% of copy by split, 2026-11-22): m = 16 qkv s3 57.1 / s4 55.9 / s7
    // 52.0, o_proj s4 46.2 / s7 41.3, down s4 64.7 / s7 55.3; m = 32 qkv s3 52.9, o_proj s4 41.4,
    // down s4 62.3; m = 64 qkv s2 44.3, o_proj s3 34.8, down s3 55.0 (s4 50.0).
    const int64_t max_splits = std::max<int64_t>(1, tiles / kWgmmaMinTilesPerSplit);
    const int64_t target = (var.v.max_m >= 64 ? 3 : 4) * ws.num_sms / 2;
    splits = std::clamp<int64_t>((target + row_ctas / 2) / row_ctas, 1, std::min<int64_t>(64, max_splits));
  } else if (splits <= 0) {
    // About three CTAs per SM, never fewer than kWgmmaMinTilesPerSplit k tiles each. Measured on
    // the H100 at m = 1 (gemm_bench "wgsplit", % of copy by split for the <8,6> row): qkv
    // 6144x4096 s1 55.9 s2 57.5 s4 62.1 s6 55.6; o_proj 4096x4096 s1 41.0 s4 48.2 s6 53.8 s8 49.3;
    // gate_up 28672x4096 s1 91.1 s2 85.6 s7 ~81; down 4096x14336 s1 47.3 s4 66.8 s6 66.9 s8 71.2.
    const int64_t max_splits = std::max<int64_t>(1, tiles / kWgmmaMinTilesPerSplit);
    splits = std::clamp<int64_t>((3LL * ws.num_sms + row_ctas - 1) / row_ctas, 1, std::min<int64_t>(64, max_splits));
  }
  splits = std::clamp<int64_t>(splits, 1, std::min<int64_t>(tiles, 65535));
  // Up to 8 splits (the portable cluster size) whose partials fit one CTA's shared memory meet in
  // a thread-block cluster (no workspace); more, or cfg.workspace_split, through the partials and
  // arrival counters. H100 (2026-11-23, % of copy, cluster vs workspace, same splits, x bf16):
  // m = 16 qkv 65.1 / 58.3, o_proj 57.2 / 50.0, down 70.2 / 64.9; m = 32 qkv 58.0 / 52.4, o_proj
  // 47.3 / 42.4, down 67.5 / 63.3; m = 64 qkv 45.5 / 43.4, o_proj 36.5 / 34.4, down 56.7 / 55.9.
  const int64_t cluster_max = std::min<int64_t>(
      8, static_cast<int64_t>(warps) * var.smem_per_warp / (var.v.max_m / 2 * 32LL * warps * static_cast<int64_t>(sizeof(float))));
  const bool cluster = splits > 1 && splits <= cluster_max && !cfg.workspace_split;
  const int64_t partial_per_split = row_ctas * cta_rows * var.v.max_m;
  if (!cluster && splits > 1 && (row_ctas > ws.num_counters || !ws.partials || !ws.counters)) splits = 1;
  if (!cluster && splits > 1) splits = std::max<int64_t>(1, std::min<int64_t>(splits, xr.split_floats / partial_per_split));
  const int64_t per_split = (tiles + splits - 1) / splits;
  splits = (tiles + per_split - 1) / per_split;  // no empty splits
  p.cluster_splits = cluster && splits > 1 ? 1 : 0;
  p.partials = ws.partials;
  p.counters = ws.counters;
  p.steps_per_split = static_cast<int>(per_split);
  p.pdl = ws.pdl ? 1 : 0;
  KILN_RETURN_IF_ERROR(set_xq(p, xr, xq, ws.pdl, stream));
  const dim3 cluster_dims(1, p.cluster_splits ? static_cast<unsigned>(splits) : 1u, 1);
  KILN_RETURN_IF_ERROR(launch_kernel(var.kernel, p, dim3(static_cast<unsigned>(row_ctas), static_cast<unsigned>(splits)), warps,
                                     static_cast<int64_t>(warps) * var.smem_per_warp, ws.pdl, stream, cluster_dims));
  if (launch) *launch = {vi, warps, static_cast<int>(splits), row_ctas * splits, occ, p.cluster_splits != 0};
  return ok_status();
}

constexpr int kStreamWarps = 8, kStreamCtasPerSm = 2;
// Weight bytes from which Gemm::run takes a stream variant for m > 1 (H100: gate_up 28672 x 4096
// and the LM head gained, down 4096 x 14336 (58 MB fp8) and smaller lost).
constexpr int64_t kStreamMinBytes = 96ll << 20;  // the stream variants' default launch shape

// The stream variants' launch shape: W warps (`warps` per CTA, by default two CTAs per SM where
// they fit) over the F = tiles x chunks sequence, W <= F, the partial sums within the workspace.
Result<SkinnyGemmLaunch> stream_shape(int vi, int64_t n, int64_t k, const SkinnyGemmWorkspace& ws, const SkinnyGemmConfig& cfg,
                                      int64_t* chunks, int64_t* stream_warps, int* chunks_per_tile) {
  const SkinnyGemmVariant& v = kVariants[vi].v;
  const int warps = cfg.warps > 0 ? cfg.warps : kStreamWarps;
  if (warps > kMaxWarps) return invalid_argument("skinny_gemm: at most 8 warps per CTA");
  KILN_ASSIGN_OR_RETURN(const int occ, ctas_per_sm(vi, warps));
  if (occ == 0) return invalid_argument("skinny_gemm: " + std::to_string(warps) + " warps per CTA do not fit on an SM");
  const int per_sm = std::min(occ, cfg.split_k > 0 ? cfg.split_k : kStreamCtasPerSm);
  const int64_t step_k = v.w == DType::kFp8E4M3 ? 64 : 32;
  const int64_t C = ((k + step_k - 1) / step_k + v.unroll - 1) / v.unroll;
  const int64_t tiles = (n + v.row_tiles * 16 - 1) / (v.row_tiles * 16);
  if (tiles > ws.num_counters || !ws.partials || !ws.counters)
    return unimplemented("skinny_gemm: the stream variants need a workspace with a counter per " +
                         std::to_string(v.row_tiles * 16) + "-row tile");
  const int64_t slot_floats = 2LL * v.row_tiles * (v.max_m / 8) * 4 * 32;  // two partial tiles per warp
  const int64_t W = std::min({tiles * C, static_cast<int64_t>(per_sm) * ws.num_sms * warps, ws.partial_floats / slot_floats});
  if (W < 1) return unimplemented("skinny_gemm: the decode workspace holds no partial sums");
  *chunks = tiles * C;
  *stream_warps = W;
  *chunks_per_tile = static_cast<int>(C);
  return SkinnyGemmLaunch{vi, warps, per_sm, (W + warps - 1) / warps, occ};
}

Status stream_cuda(const LinearArgs& a, const SkinnyGemmWorkspace& ws, cudaStream_t stream, const SkinnyGemmConfig& cfg, int vi,
                   SkinnyGemmLaunch* launched) {
  if (cfg.diag < 0 || cfg.diag > 2) return invalid_argument("skinny_gemm: diag is 0, 1 or 2");
  const Variant& var = kVariants[vi];
  SkinnyParams p = common_params(a);
  KILN_ASSIGN_OR_RETURN(const SkinnyGemmLaunch shape,
                        stream_shape(vi, p.n, p.k, ws, cfg, &p.stream_chunks, &p.stream_warps, &p.chunks_per_tile));
  p.partials = ws.partials;
  p.counters = ws.counters;
  p.pdl = ws.pdl ? 1 : 0;
  const void* kernel = cfg.diag == 0 ? var.kernel : var.diag_kernels[cfg.diag - 1];
  KILN_RETURN_IF_ERROR(launch_kernel(kernel, p, dim3(static_cast<unsigned>(shape.ctas)), shape.warps,
                                     static_cast<int64_t>(shape.warps) * var.smem_per_warp, ws.pdl, stream));
  if (launched) *launched = shape;
  return ok_status();
}

}  // namespace

int64_t skinny_x_fp8_bytes(int64_t m, int64_t k) { return skinny::x_fp8_bytes(m, k); }

bool skinny_gemm_quantizes_x(DType w, DType y, int64_t m, int64_t n) {
  int best = -1;  // the grid pick of skinny_gemm_cuda with room for x
  for (int i = 0; i < kNumVariants; ++i) {
    const SkinnyGemmVariant& v = kVariants[i].v;
    if (!v.preferred || v.stream || v.w != w || v.y != y || m > v.max_m || n < v.min_n) continue;
    const SkinnyGemmVariant* b = best < 0 ? nullptr : &kVariants[best].v;
    if (!b || v.max_m < b->max_m || (v.max_m == b->max_m && v.e4m3 && !b->e4m3)) best = i;
  }
  return best >= 0 && kVariants[best].v.e4m3;
}

std::span<const SkinnyGemmVariant> skinny_gemm_variants() {
  static const auto table = [] {
    std::array<SkinnyGemmVariant, kNumVariants> t{};
    for (int i = 0; i < kNumVariants; ++i) t[static_cast<size_t>(i)] = kVariants[i].v;
    return t;
  }();
  return table;
}

Status skinny_gemm_check(const LinearArgs& a, bool x_quantized) {
  const bool fp8 = a.w.dtype == DType::kFp8E4M3;
  const DType xt = x_quantized ? DType::kFp8E4M3 : DType::kBF16;
  if (a.x.dtype != xt || (a.w.dtype != DType::kBF16 && !fp8) || (x_quantized && !fp8) ||
      (a.y.dtype != DType::kBF16 && a.y.dtype != DType::kF32))
    return unimplemented(x_quantized ? "skinny_gemm: want pre-quantized x e4m3, w fp8_e4m3, y bf16 | f32"
                                     : "skinny_gemm: want x bf16, w bf16 | fp8_e4m3, y bf16 | f32");
  if (a.x.ndim != 2 || a.w.ndim != 2 || a.y.ndim != 2) return invalid_argument("skinny_gemm: 2-D tensors only");
  const int64_t m = a.x.shape[0], k = a.x.shape[1], n = a.w.shape[0];
  if (m > kSkinnyGemmMaxM) return unimplemented("skinny_gemm: m = " + std::to_string(m) + " > 64");
  if (k % (fp8 ? 16 : 8) != 0) return unimplemented("skinny_gemm: k = " + std::to_string(k) + " not a multiple of 16 bytes");
  if (x_quantized && m > 1 && a.x.strides[0] != k) return unimplemented("skinny_gemm: pre-quantized x rows must be contiguous");
  const int64_t es = fp8 ? 1 : 2, xes = x_quantized ? 1 : 2;
  if (!aligned16(a.w.data) || !aligned16(a.x.data) || (a.w.strides[0] * es) % 16 != 0 || (a.x.strides[0] * xes) % 16 != 0)
    return unimplemented("skinny_gemm: rows of x and w must start on 16-byte boundaries");
  if (n >= (1ll << 31) || k >= (1ll << 31) || a.y.strides[0] * m >= (1ll << 31) || a.x.strides[0] * m >= (1ll << 31))
    return unimplemented("skinny_gemm: sizes past int32");
  if (fp8 && (a.w_scale.empty() || a.w_scale.dtype != DType::kF32 || a.w_scale.device != Device::kCuda ||
              (a.w_scale.numel() != n && a.w_scale.numel() != 1)))
    return invalid_argument("skinny_gemm: fp8 weights need w_scale [n] or [1] f32 on the device");
  return ok_status();
}

Status skinny_gemm_cuda(const LinearArgs& a, const SkinnyGemmWorkspace& ws, CUstream_st* stream,
                        const SkinnyGemmConfig& cfg, SkinnyGemmLaunch* launch, const SkinnyXq* xq) {
  KILN_RETURN_IF_ERROR(skinny_gemm_check(a, xq != nullptr));
  const int64_t m = a.x.shape[0], k = a.x.shape[1], n = a.w.shape[0];
  if (cfg.swiglu && (n % 16 != 0 || a.y.shape[1] != n / 2 || a.y.dtype != DType::kBF16 || !a.bias.empty() || xq))
    return unimplemented("skinny_gemm: the fused SwiGLU wants 2I rows (I % 8 == 0), y [m, I] bf16, no bias, x bf16");
  if (m == 0 || n == 0) return ok_status();
  const bool fp8 = a.w.dtype == DType::kFp8E4M3;
  XFp8Region xr;
  if (xq) xr.split_floats = ws.partial_floats;  // x given: no copy of it in the workspace, split K may use all
  const bool x_room = xq ? true : fp8 && x_fp8_region(ws, m, k, &xr);
  int vi = -1;
  if (cfg.variant >= 0) {
    if (cfg.variant >= kNumVariants) return invalid_argument("skinny_gemm: no variant " + std::to_string(cfg.variant));
    const SkinnyGemmVariant& v = kVariants[cfg.variant].v;
    if (v.w != a.w.dtype || v.y != a.y.dtype || m > v.max_m)
      return invalid_argument("skinny_gemm: variant " + std::to_string(cfg.variant) + " does not take these arguments");
    if (v.e4m3 && !x_room)
      return unimplemented("skinny_gemm: the e4m3 variants need " + std::to_string(skinny::x_fp8_bytes(m, k)) +
                           " bytes of workspace for x, at most half of the partials");
    vi = cfg.variant;
  } else {
    // The preferred variant of the smallest max_m >= m (e4m3 first where the workspace has room
    // for x): a stream variant for m > 1 on large matrices (where it was measured faster; there
    // is none for fp8 -> bf16 m <= 8, where the grid kernel at 3 CTAs per SM wins) unless the
    // grid pick is e4m3, else the grid variant; a stream variant whose workspace is too small
    // gives way to the grid variant.
    auto pick = [&](bool stream_pass) {
      int best = -1;
      for (int i = 0; i < kNumVariants; ++i) {
        const SkinnyGemmVariant& v = kVariants[i].v;
        if (!v.preferred || v.stream != stream_pass || v.w != a.w.dtype || v.y != a.y.dtype || m > v.max_m || n < v.min_n)
          continue;
        if ((v.e4m3 && (!x_room || cfg.x_bf16)) || (stream_pass && v.max_m != 8 && 2 * m <= v.max_m)) continue;
        const SkinnyGemmVariant* b = best < 0 ? nullptr : &kVariants[best].v;
        if (!b || v.max_m < b->max_m || (v.max_m == b->max_m && v.e4m3 && !b->e4m3)) best = i;
      }
      return best;
    };
    const int grid = pick(false);
    const bool want_stream = m > 1 && n * k * (fp8 ? 1 : 2) >= kStreamMinBytes && !(grid >= 0 && kVariants[grid].v.e4m3);
    if (want_stream) {
      vi = pick(true);
      int64_t f = 0, w = 0;
      int c = 0;
      if (vi >= 0 && !stream_shape(vi, n, k, ws, cfg, &f, &w, &c).ok()) vi = -1;
    }
    if (vi < 0) vi = grid;
  }
  if (vi < 0) return unimplemented("skinny_gemm: no variant");
  if (xq && !kVariants[vi].v.e4m3)
    return unimplemented("skinny_gemm: pre-quantized x at m = " + std::to_string(m) + ": the row for it keeps x bf16");
  if (cfg.swiglu && (kVariants[vi].v.stream || kVariants[vi].v.wgmma || kVariants[vi].v.e4m3))
    return unimplemented("skinny_gemm: the fused SwiGLU is in the grid rows only (this shape takes another row)");
  if (kVariants[vi].v.stream) return stream_cuda(a, ws, stream, cfg, vi, launch);
  if (kVariants[vi].v.wgmma) {  // x_room: checked by the explicit choice, implied by the automatic one
    if (cfg.diag != 0) return invalid_argument("skinny_gemm: diag is for the stream variants");
    return wgmma_cuda(a, ws, stream, cfg, vi, xr, launch, xq);
  }
  if (cfg.diag != 0) return invalid_argument("skinny_gemm: diag is for the stream variants");
  const Variant& var = kVariants[vi];
  const int64_t step_k = fp8 ? 64 : 32;
  const int64_t num_steps = (k + step_k - 1) / step_k;
  const int64_t num_chunks = (num_steps + var.v.unroll - 1) / var.v.unroll;
  const int64_t row_ctas = (n + var.v.row_tiles * 16 - 1) / (var.v.row_tiles * 16);
  if (row_ctas > 0x7fffffff) return unimplemented("skinny_gemm: n too large");

  // Warps per CTA: the most warps resident on average over the waves (row_ctas * w / waves);
  // ties go to more warps (shorter per-warp streams, the same bytes in flight). A short k range
  // (every warp's chunks in flight from its prologue at 8 warps) is bound by the kernel's start and
  // end rather than its stream, so there a shape that leaves a CTA slot per SM free for the next
  // kernel's prologue (programmatic dependent launch) scores 1.5x (the x-ahead rows, where it was
  // measured): H100, fp8 o_proj 4096 x 4096 m = 1, 6 warps (3 CTAs per SM) 72.5% of copy vs 8
  // warps (2) 63.4%; down (k = 14336) keeps 8.
  int warps = cfg.warps;
  if (warps > kMaxWarps) return invalid_argument("skinny_gemm: at most 8 warps per CTA");
  if (warps <= 0) {
    const bool short_k = var.v.x_ahead && num_chunks <= static_cast<int64_t>(kMaxWarps) * (var.v.stages - 1);
    double best = -1;
    for (int w = 1; w <= kMaxWarps; ++w) {
      KILN_ASSIGN_OR_RETURN(const int occ, ctas_per_sm(vi, w));
      if (occ == 0) continue;
      const int64_t slots = static_cast<int64_t>(occ) * ws.num_sms;
      const int64_t waves = (row_ctas + slots - 1) / slots;
      double score = static_cast<double>(row_ctas) * static_cast<double>(std::min<int64_t>(w, num_chunks)) /
                     static_cast<double>(waves);
      if (short_k && slots >= row_ctas + ws.num_sms) score *= 1.5;
      if (score >= best) { best = score; warps = w; }
    }
    if (warps <= 0) return internal_error("skinny_gemm: no launch shape fits on an SM");
  }
  KILN_ASSIGN_OR_RETURN(const int occ, ctas_per_sm(vi, warps));
  if (occ == 0) return invalid_argument("skinny_gemm: " + std::to_string(warps) + " warps per CTA do not fit on an SM");

  // Split K only when the row blocks fill less than half the resident CTA slots.
  const int64_t kElems = static_cast<int64_t>(var.v.row_tiles) * (var.v.max_m / 8) * 4;
  const int64_t partial_per_split = row_ctas * kElems * 32;
  int64_t splits = cfg.split_k;
  if (splits <= 0) {
    const int64_t slots = static_cast<int64_t>(occ) * ws.num_sms;
    splits = 2 * row_ctas <= slots ? slots / row_ctas : 1;
    splits = std::min<int64_t>(splits, std::max<int64_t>(1, num_chunks / (2 * warps)));
  }
  splits = std::clamp<int64_t>(splits, 1, std::min<int64_t>(num_steps, 65535));
  const int64_t split_floats = var.v.e4m3 ? xr.split_floats : ws.partial_floats;
  if (splits > 1 && (row_ctas > ws.num_counters || !ws.partials)) splits = 1;
  if (splits > 1) splits = std::max<int64_t>(1, std::min<int64_t>(splits, split_floats / partial_per_split));
  const int64_t steps_per_split = (num_steps + splits - 1) / splits;
  splits = (num_steps + steps_per_split - 1) / steps_per_split;  // no empty splits

  SkinnyParams p = common_params(a);
  p.partials = ws.partials;
  p.counters = ws.counters;
  p.steps_per_split = static_cast<int>(steps_per_split);
  p.pdl = ws.pdl ? 1 : 0;
  p.pair_half = cfg.swiglu ? static_cast<int>(n / 2) : 0;
  if (var.v.e4m3) KILN_RETURN_IF_ERROR(set_xq(p, xr, xq, ws.pdl, stream));
  KILN_RETURN_IF_ERROR(launch_kernel(var.kernel, p, dim3(static_cast<unsigned>(row_ctas), static_cast<unsigned>(splits)), warps,
                                     static_cast<int64_t>(warps) * var.smem_per_warp, ws.pdl, stream));
  if (launch) *launch = {vi, warps, static_cast<int>(splits), row_ctas * splits, occ};
  return ok_status();
}

}  // namespace kiln
