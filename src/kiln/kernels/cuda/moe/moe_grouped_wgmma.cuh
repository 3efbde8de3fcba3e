// The grouped MoE expert GEMM in one launch, on Hopper's wgmma and TMA (sm_90a):
//   y[r, c] = bf16( sum_k x[r, k] * w_e[c, k] * x_scale[r] * w_scale_e[c] )   for r in expert e's rows
// x [rows, k] e4m3, rows grouped by expert (offsets[e] .. offsets[e + 1], on the device); w_e [n, k]
// e4m3 (K-major, the HF layout), one tensor map per expert (kept in global memory: a kernel
// parameter block of 64 maps made each launch slower); w_scale_e [n] f32; y [rows, n] bf16.
//
// Persistent CTAs of three warpgroups: warpgroup 0 is the producer (one thread issues the TMA loads
// of a 128-row x tile and a 256-row w tile per 128-byte k step into a ring of stages), warpgroups 1
// and 2 each multiply 64 of the tile's 128 rows by the 256 columns (m64n256k32, f32 accumulators,
// the fast accumulation cuBLASLt's fp8 plans use) and store their rows with the scales applied.
// Tiles are ordered (expert, column block, row block), so the CTAs running at one time share a
// weight block and an expert's x in L2. A tile's rows past its expert's end are loaded (the next
// expert's rows, or zeros past the tensor) and not stored: no padding, no host round trip.
#pragma once
#include <cuda.h>
#include <cuda_bf16.h>

#include <cstdint>

#include "kiln/kernels/cuda/attention/hopper_device.cuh"
#include "kiln/kernels/cuda/common/pdl.cuh"

namespace kiln::cuda::moe_wgmma {

constexpr int kMaxExperts = 64;  // kMoeGroupedWgmmaMaxExperts (moe_cuda.h)
constexpr int kBlockM = 128;     // rows of a tile (two consumer warpgroups of 64)
constexpr int kBlockN = 256;     // columns of a tile
constexpr int kBlockK = 128;     // k of a stage (128 e4m3 bytes: one swizzled row)
constexpr int kStages = 4;   // 3 measured the same on the H100, 2 slower
constexpr int kThreads = 384;
constexpr int kXTileBytes = kBlockM * kBlockK;  // 16 KB
constexpr int kWTileBytes = kBlockN * kBlockK;  // 32 KB
constexpr int kStageBytes = kXTileBytes + kWTileBytes;
constexpr int kSmemBytes = kStages * kStageBytes + 1024 + 2 * kStages * 8;  // + alignment slack, barriers

struct Params {  // CUtensorMap is 64-byte aligned itself
  CUtensorMap x_map;                   // x [rows, k] e4m3: box {128 k, 128 rows}, 128-byte swizzle
  const CUtensorMap* w_map;            // [experts] in global memory (encoded once per weight set):
                                       // w_e [n, k] e4m3, box {128 k, 256 rows}, 128-byte swizzle
  const float* const* w_scale;         // [experts] -> [n], in global memory
  const float* x_scale;                // [rows]
  const int32_t* offsets;              // [num_experts + 1], device
  __nv_bfloat16* y;                    // [rows, n]
  int num_experts, n, k, rows;         // rows of x and y: offsets past them are clamped
};

// Tile t -> (expert, row block, column block) from the per-expert tile starts in shared memory.
struct Tile {
  int expert, row0, row_end, col0;
};
__device__ __forceinline__ Tile tile_of(int t, const int* tile_begin, const int* offsets, int num_experts) {
  int e = 0;
  while (e + 1 < num_experts && tile_begin[e + 1] <= t) ++e;
  const int local = t - tile_begin[e];
  const int row_blocks = (offsets[e + 1] - offsets[e] + kBlockM - 1) / kBlockM;
  const int cb = local / row_blocks, rb = local - cb * row_blocks;
  return {e, offsets[e] + rb * kBlockM, offsets[e + 1], cb * kBlockN};
}

__device__ __forceinline__ void tma_load_2d(uint32_t dst, const void* map, uint32_t bar, int c0, int c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];\n" ::"r"(
          dst),
      "l"(map), "r"(bar), "r"(c0), "r"(c1)
      : "memory");
}
// One tile's main loop and stores for consumer warpgroup c (rows 64 c .. 64 c + 63 of the 128, all
// 256 columns: m64n256). s / phase: this thread's place in the stage ring.
__device__ __forceinline__ void consume_tile(const Params& p, const Tile& tl, int c, int k_steps, uint32_t base,
                                             uint32_t full0, uint32_t empty0, int& s, uint32_t& phase) {
  using namespace kiln::cuda::hopper;
  const int warp = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  float acc[128];
  int prev = -1;
  for (int kb = 0; kb < k_steps; ++kb) {
    mbar_wait(full0 + 8 * s, phase);
    const uint32_t stage = base + s * kStageBytes;
    const SmemDesc a = smem_desc_base<128>(stage + c * 64 * 128, 16, 1024);
    const SmemDesc b = smem_desc_base<128>(stage + kXTileBytes, 16, 1024);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBlockK / 32; ++kk) wgmma_ss_e4m3_n256(acc, a.at(kk * 32), b.at(kk * 32), kb | kk);
    wgmma_commit();
    wgmma_wait<1>();  // the stage before this one is read: give it back
    if (prev >= 0 && lane == 0) mbar_arrive(empty0 + 8 * prev);
    prev = s;
    if (++s == kStages) s = 0, phase ^= 1;
  }
  wgmma_wait<0>();
  if (prev >= 0 && lane == 0) mbar_arrive(empty0 + 8 * prev);

  // Fragment of m64n256: acc[4 j + h] at row warp * 16 + lane / 4 + 8 * (h / 2), column 8 j + 2 (lane % 4) + h % 2.
  const int r0 = tl.row0 + c * 64 + warp * 16 + lane / 4, r1 = r0 + 8;
  const int col_base = tl.col0 + 2 * (lane % 4);
  const bool ok0 = r0 < tl.row_end, ok1 = r1 < tl.row_end;
  const float xs0 = ok0 ? p.x_scale[r0] : 0.f, xs1 = ok1 ? p.x_scale[r1] : 0.f;
  const float* ws = p.w_scale[tl.expert];
  __nv_bfloat16* y0 = p.y + static_cast<int64_t>(r0) * p.n;
  __nv_bfloat16* y1 = p.y + static_cast<int64_t>(r1) * p.n;
#pragma unroll
  for (int j = 0; j < 32; ++j) {
    const int col = col_base + 8 * j;
    if (col >= p.n) continue;
    const float2 w = *reinterpret_cast<const float2*>(ws + col);
    if (ok0)
      *reinterpret_cast<__nv_bfloat162*>(y0 + col) =
          __floats2bfloat162_rn(acc[4 * j] * xs0 * w.x, acc[4 * j + 1] * xs0 * w.y);
    if (ok1)
      *reinterpret_cast<__nv_bfloat162*>(y1 + col) =
          __floats2bfloat162_rn(acc[4 * j + 2] * xs1 * w.x, acc[4 * j + 3] * xs1 * w.y);
  }
}

// One CTA per SM (grid = SMs), tiles strided over the grid. Measured on the H100 and not kept:
// clusters of two CTAs on neighbouring column blocks, each multicasting half of the x tile into
// both (~30% slower); an expert's last rows (<= 64) as a half tile, both warpgroups on those 64
// rows (no faster: a tile costs its loads, not its MMAs).
__global__ void __launch_bounds__(kThreads, 1) grouped_fp8_kernel(const __grid_constant__ Params p) {
  using namespace kiln::cuda::hopper;
  extern __shared__ uint8_t smem_raw[];
  __shared__ int tile_begin[kMaxExperts + 1];
  __shared__ int offsets[kMaxExperts + 1];
  const uint32_t base = (smem_u32(smem_raw) + 1023u) & ~1023u;  // 128-byte swizzle wants 1 KB alignment
  const uint32_t full0 = base + kStages * kStageBytes, empty0 = full0 + kStages * 8;
  const int tid = threadIdx.x, wg = tid / 128;
  const int col_blocks = (p.n + kBlockN - 1) / kBlockN;

  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(full0 + 8 * s, 1);
      mbar_init(empty0 + 8 * s, 8);  // every consumer warp
    }
    mbar_init_fence();
  }
  cuda::pdl_wait();  // offsets, x and x_scale come from the kernels before
  if (tid <= p.num_experts) offsets[tid] = min(max(p.offsets[tid], 0), p.rows);
  __syncthreads();
  if (tid == 0) {
    int acc = 0;
    for (int e = 0; e < p.num_experts; ++e) {
      tile_begin[e] = acc;
      if (offsets[e + 1] < offsets[e]) offsets[e + 1] = offsets[e];  // unsorted offsets: no rows, never a bad store
      acc += (offsets[e + 1] - offsets[e] + kBlockM - 1) / kBlockM * col_blocks;
    }
    tile_begin[p.num_experts] = acc;
  }
  __syncthreads();
  const int total = tile_begin[p.num_experts];
  const int k_steps = (p.k + kBlockK - 1) / kBlockK;

  if (wg == 0) {
    regs_dealloc<40>();
    if (tid != 0) return;
    tma_prefetch_map(&p.x_map);
    int s = 0;
    uint32_t phase = 0;
    for (int t = blockIdx.x; t < total; t += gridDim.x) {
      const Tile tl = tile_of(t, tile_begin, offsets, p.num_experts);
      const void* w_map = &p.w_map[tl.expert];
      for (int kb = 0; kb < k_steps; ++kb) {
        mbar_wait(empty0 + 8 * s, phase ^ 1);
        const uint32_t full = full0 + 8 * s, stage = base + s * kStageBytes;
        mbar_expect_tx(full, kStageBytes);
        tma_load_2d(stage, &p.x_map, full, kb * kBlockK, tl.row0);
        tma_load_2d(stage + kXTileBytes, w_map, full, kb * kBlockK, tl.col0);
        if (++s == kStages) s = 0, phase ^= 1;
      }
    }
    return;
  }

  regs_alloc<232>();
  const int c = wg - 1;
  int s = 0;
  uint32_t phase = 0;
  for (int t = blockIdx.x; t < total; t += gridDim.x)
    consume_tile(p, tile_of(t, tile_begin, offsets, p.num_experts), c, k_steps, base, full0, empty0, s, phase);
}

}  // namespace kiln::cuda::moe_wgmma
