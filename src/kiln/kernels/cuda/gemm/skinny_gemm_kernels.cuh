// The decode GEMM's kernels (only skinny_gemm.cu includes this; it holds the variant table, the
// launch shapes and the dispatch): the grid kernel (16 * kRT-row
// CTAs whose warps split k, split K across CTAs reduced by the last to arrive), the wgmma kernel
// (one warpgroup per 64 weight rows, x pre-quantized to e4m3) and the stream kernel (a persistent
// grid of warps over the (tile, chunk) sequence). SkinnyParams is what they all read.
#pragma once
#include <cooperative_groups.h>
#include <cuda_bf16.h>

#include <cstdint>
#include <type_traits>

#include "kiln/kernels/cuda/activation/swiglu_exact.cuh"
#include "kiln/kernels/cuda/gemm/skinny_gemm_core.cuh"
#include "kiln/kernels/cuda/gemm/skinny_wgmma.cuh"

namespace kiln::skinny {

struct SkinnyParams {
  const uint8_t* w;         // [n, k] bf16 | fp8 bytes, row stride ldw_bytes
  const __nv_bfloat16* x;   // [m, k], row stride ldx (elements)
  const uint8_t* xq;        // e4m3 variants: [m, k] e4m3 (row stride k) and its scales [m]
  const float* x_scale;
  const float* w_scale;     // [n] | [1] | nullptr
  const void* bias;         // [n] in y's dtype | nullptr
  void* y;                  // [m, n], row stride ldy (elements)
  float* partials;          // [split_k, gridDim.x, kElems, 32] when split_k > 1
  int* counters;            // [gridDim.x]
  int m, n, k;
  int64_t ldw_bytes, ldx, ldy;
  int scale_per_tensor;
  int steps_per_split;      // k steps (kStepK each) per blockIdx.y
  int pdl;
  // wgmma rows: the gridDim.y splits of a row block are one thread-block cluster (gridDim.y <= 8)
  // and meet in distributed shared memory (wgmma_cluster_split_store), not in partials / counters.
  int cluster_splits;
  // Stream variants: chunks per tile, chunks in all (tiles x chunks_per_tile), warps in the stream.
  int chunks_per_tile;
  int64_t stream_chunks, stream_warps;
  // The grid rows' fused SwiGLU (SkinnyGemmConfig::swiglu): I = n / 2, else 0. y is [m, I].
  int pair_half;
};

__device__ __forceinline__ void store_y(float* y, float v) { *y = v; }
__device__ __forceinline__ void store_y(__nv_bfloat16* y, float v) { *y = __float2bfloat16(v); }
__device__ __forceinline__ float load_bias(const float* b) { return *b; }
__device__ __forceinline__ float load_bias(const __nv_bfloat16* b) { return __bfloat162float(*b); }

// y[m, n] = the sum v times x's per-token scale (kXScale: the e4m3 / wgmma rows) and the weight
// scale, plus the bias, stored as Y: the epilogue every kernel shares.
template <bool kXScale, typename Y>
__device__ __forceinline__ void store_output(const SkinnyParams& p, int m, int n, float v) {
  if constexpr (kXScale) v *= p.x_scale[m];
  if (p.w_scale) v *= p.w_scale[p.scale_per_tensor ? 0 : n];
  if (p.bias) v += load_bias(static_cast<const Y*>(p.bias) + n);
  store_y(static_cast<Y*>(p.y) + m * p.ldy + n, v);
}

// The fused SwiGLU's epilogue (p.pair_half = I): y[m, j] = silu(g) * u of gate row j (fragment c = 0,
// 1) and up row I + j (c + 2, the same lane: pair_row), each first scaled and rounded to bf16 as
// the plain epilogue stores them, then silu_mul_cuda's f32 arithmetic (swiglu::silu<false>, the
// bits of its fast path too) rounded to bf16: the bits of the GEMM + silu_mul_cuda.
template <typename Y, int kRT, int kMT>
__device__ __forceinline__ void store_swiglu(const SkinnyParams& p, int row_base, int g, int t, const float (&acc)[kRT][kMT][4]) {
  const int half = p.pair_half;
#pragma unroll
  for (int rt = 0; rt < kRT; ++rt)
#pragma unroll
    for (int nt = 0; nt < kMT; ++nt)
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const int j = ((row_base >> 4) + rt) * 8 + g, m = frag_m(nt, c, t);
        if (j >= half || m >= p.m) continue;
        float gv = acc[rt][nt][c], uv = acc[rt][nt][c + 2];
        if (p.w_scale) gv *= p.w_scale[p.scale_per_tensor ? 0 : j], uv *= p.w_scale[p.scale_per_tensor ? 0 : half + j];
        const float gf = __bfloat162float(__float2bfloat16(gv)), uf = __bfloat162float(__float2bfloat16(uv));
        store_y(static_cast<Y*>(p.y) + m * p.ldy + j, cuda::swiglu::silu<false>(gf) * uf);
      }
}

// store_output for every in-range element of this lane's mma fragments (g = lane / 4, t = lane % 4)
// of the weight rows from row_base.
template <bool kXScale, typename Y, int kRT, int kMT>
__device__ __forceinline__ void store_fragments(const SkinnyParams& p, int row_base, int g, int t, const float (&acc)[kRT][kMT][4]) {
  for_each_acc<kRT, kMT>([&](int rt, int nt, int c) {
    const int n = frag_n(row_base, rt, c, g), m = frag_m(nt, c, t);
    if (n < p.n && m < p.m) store_output<kXScale, Y>(p, m, n, acc[rt][nt][c]);
  });
}

template <bool kFp8, int kMT, int kRT, int kU, int kS, int kMinBlocks, bool kF16, bool kE4m3, typename Y, int kAcc = 1,
          bool kXAhead = false>
__global__ void __launch_bounds__(kMaxWarps * 32, kMinBlocks) skinny_gemm_kernel(const __grid_constant__ SkinnyParams p) {
  using Core = skinny::Core<kFp8, kMT, kRT, kU, kS, kF16, kE4m3, kAcc, kXAhead>;
  using F = typename Core::F;
  extern __shared__ __align__(16) uint8_t smem[];
  const int warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int row_base = blockIdx.x * kRT * 16;

  const typename Core::XT* xrow[kMT];  // activation row nt * 8 + g, or nullptr past m
#pragma unroll
  for (int nt = 0; nt < kMT; ++nt) {
    const int mr = nt * 8 + g;
    if constexpr (kE4m3) xrow[nt] = mr < p.m ? p.xq + static_cast<int64_t>(mr) * p.k + t * F::kElemsPerVec : nullptr;
    else xrow[nt] = mr < p.m ? p.x + mr * p.ldx + t * F::kElemsPerVec : nullptr;
  }
  const int num_steps = (p.k + F::kStepK - 1) / F::kStepK;
  const int s_begin = blockIdx.y * p.steps_per_split, s_end = min(num_steps, s_begin + p.steps_per_split);
  float acc[kRT][kMT][4] = {};
  Core::stream(p.w, p.ldw_bytes, p.n, p.k, row_base, xrow, s_begin, s_end, warp, nwarps, smem + warp * Core::kSmemPerWarp,
               p.pdl != 0, acc, kE4m3 || !std::is_same_v<Y, __nv_bfloat16> ? 0 : p.pair_half);
  Core::reduce_warps(acc, smem, warp, nwarps);
  if (warp != 0) return;

  constexpr int kElems = Core::kElems;
  if (gridDim.y > 1) {  // split K: park the partial sums; the last CTA of this row block adds them up
    float* part = p.partials + static_cast<int64_t>(blockIdx.y * gridDim.x + blockIdx.x) * kElems * 32 + lane;
    for_each_acc<kRT, kMT>([&](int rt, int nt, int c) {
      if (frag_m(nt, c, t) < p.m) part[((rt * kMT + nt) * 4 + c) * 32] = acc[rt][nt][c];
    });
    __threadfence();
    __syncwarp();
    int last = 0;
    if (lane == 0) last = atomicAdd(p.counters + blockIdx.x, 1) == static_cast<int>(gridDim.y) - 1;
    last = __shfl_sync(0xffffffffu, last, 0);
    if (!last) return;
    __threadfence();
    for_each_acc<kRT, kMT>([&](int rt, int nt, int c) {
      if (frag_m(nt, c, t) >= p.m) return;
      float s = 0.f;
      for (int sk = 0; sk < static_cast<int>(gridDim.y); ++sk)
        s += __ldcg(p.partials + (static_cast<int64_t>(sk * gridDim.x + blockIdx.x) * kElems + (rt * kMT + nt) * 4 + c) * 32 + lane);
      acc[rt][nt][c] = s;
    });
    if (lane == 0) p.counters[blockIdx.x] = 0;  // ready for the next call (or graph replay)
  }
  // The fused SwiGLU: bf16 y only, never the e4m3 rows (skinny_gemm_cuda refuses those).
  if constexpr (!kE4m3 && std::is_same_v<Y, __nv_bfloat16>) {
    if (p.pair_half) {
      store_swiglu<Y>(p, row_base, g, t, acc);
      return;
    }
  }
  store_fragments<kE4m3, Y>(p, row_base, g, t, acc);
}


// Split K inside a thread-block cluster (p.cluster_splits: cluster = the S = gridDim.y CTAs of a
// row block, rank = blockIdx.y). The first CTA of the cluster to finish its k range owns the
// sums (a compare-and-swap on rank 0's `owner`): its ring is free, so recv (S x kAcc x
// kCtaThreads f32) lies over it. The others store their partials into the owner's recv[rank]
// (st.async, completing bytes on the owner's mbarrier) and exit at once, so only the owner waits
// (and rank 0's first thread, whose `owner` the others reach: until all S have been there); the
// owner adds the S partials up in rank order (deterministic, whoever owns them) and stores y. No
// global round trip, no atomics in global memory. The launch takes S up to what recv fits.
// (The others' bytes may land before the owner's expect_tx: the phase cannot complete before the
// owner's one arrival, which comes with it.) H100 tests: GemmSkinnyCuda.WgmmaRows*.
struct ClusterSplitShared {
  uint64_t bar;  // the owner's: the others' partial bytes
  int owner;     // rank 0's: the owning rank, -1 until one has finished
  int done;      // rank 0's: CTAs past their compare-and-swap on owner
  int owner_seen;
};

// Before the k loop, every thread: the barrier and `owner` initialized and made visible to the
// cluster (barrier.cluster.arrive here, its wait in wgmma_cluster_split_store).
__device__ __forceinline__ void wgmma_cluster_split_init(ClusterSplitShared& cs) {
  using namespace kiln::cuda::hopper;
  if (threadIdx.x == 0) {
    mbar_init(smem_u32(&cs.bar), 1);
    cs.owner = -1;
    cs.done = 0;
    mbar_init_fence();
  }
  asm volatile("barrier.cluster.arrive.release;\n" ::: "memory");
}

template <typename Core, typename Y>
__device__ __forceinline__ void wgmma_cluster_split_store(const SkinnyParams& p, int row_base, const float (&acc)[Core::kAcc],
                                                          uint8_t* smem, ClusterSplitShared& cs) {
  using namespace kiln::cuda::hopper;
  namespace cg = cooperative_groups;
  constexpr int kThreads = Core::kCtaThreads, kAcc = Core::kAcc;
  cg::cluster_group cluster = cg::this_cluster();
  float* recv = reinterpret_cast<float*>(smem);
  const int tid = threadIdx.x, splits = static_cast<int>(gridDim.y), rank = static_cast<int>(blockIdx.y);
  __syncthreads();  // every warp is done with the ring (its wgmma and copies waited for in stream)
  asm volatile("barrier.cluster.wait.acquire;\n" ::: "memory");  // every CTA's init is visible
  if (tid == 0) {
    const int prev = atomicCAS(cluster.map_shared_rank(&cs.owner, 0), -1, rank);
    atomicAdd(cluster.map_shared_rank(&cs.done, 0), 1);  // this CTA's last access to rank 0's memory
    cs.owner_seen = prev < 0 ? rank : prev;
  }
  __syncthreads();
  const int owner = cs.owner_seen;
  // recv as float4 [S][kAcc / 4][kCtaThreads]: a thread's accumulators 4 at a time (one 16-byte
  // st.async each: a quarter of the transactions on the owner's barrier), conflict-free reads.
  float4* recv4 = reinterpret_cast<float4*>(recv);
  constexpr int kQuads = kAcc / 4;
  static_assert(kAcc % 4 == 0);
  if (owner != rank) {  // st.async [owner's recv[rank][j][tid]], acc[4 j ..], completing 16 bytes on its barrier
    uint32_t dst, bar;
    asm("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(dst) : "r"(smem_u32(recv4 + rank * kQuads * kThreads + tid)), "r"(owner));
    asm("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(bar) : "r"(smem_u32(&cs.bar)), "r"(owner));
#pragma unroll
    for (int j = 0; j < kQuads; ++j)
      asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.b32 [%0], {%1, %2, %3, %4}, [%5];\n" ::"r"(
                       dst + j * kThreads * 16),
                   "r"(__float_as_uint(acc[4 * j])), "r"(__float_as_uint(acc[4 * j + 1])), "r"(__float_as_uint(acc[4 * j + 2])),
                   "r"(__float_as_uint(acc[4 * j + 3])), "r"(bar)
                   : "memory");
    if (rank == 0 && tid == 0)  // rank 0 stays until every CTA has been at its owner / done
      while (*static_cast<volatile int*>(&cs.done) < splits) {
      }
    return;
  }
#pragma unroll
  for (int j = 0; j < kQuads; ++j)
    recv4[(rank * kQuads + j) * kThreads + tid] = make_float4(acc[4 * j], acc[4 * j + 1], acc[4 * j + 2], acc[4 * j + 3]);
  if (tid == 0) mbar_expect_tx(smem_u32(&cs.bar), static_cast<uint32_t>((splits - 1) * kAcc * kThreads * 4));
  mbar_wait(smem_u32(&cs.bar), 0);
  __syncthreads();  // this CTA's own slot
#pragma unroll
  for (int j = 0; j < kQuads; ++j) {
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int s = 0; s < splits; ++s) {
      const float4 q = recv4[(s * kQuads + j) * kThreads + tid];
      v.x += q.x, v.y += q.y, v.z += q.z, v.w += q.w;
    }
    const float vs[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int i = 4 * j + e, n = row_base + skinny::wg::acc_row(i), m = skinny::wg::acc_col(i);
      if (n < p.n && m < p.m) store_output<true, Y>(p, m, n, vs[e]);
    }
  }
}

// The wgmma rows (fp8 weights, x quantized per token to e4m3): CTA (blockIdx.x, blockIdx.y) = kWG
// warpgroups on weight rows [64 kWG blockIdx.x, + 64 kWG) x all m (<= kN) rows of x, k tiles
// [blockIdx.y * steps_per_split, + steps_per_split) of 128 bytes (skinny_wgmma.cuh). Split K:
// in the cluster (p.cluster_splits, above), or partials [gridDim.y, gridDim.x, kN / 2, 128 kWG]
// f32 summed in split order by the last CTA of the row block to arrive (deterministic).
template <int kN, int kS, typename Y, int kWG = 1>
__global__ void __launch_bounds__(skinny::wg::kThreads * kWG) skinny_wgmma_kernel(const __grid_constant__ SkinnyParams p) {
  using Core = skinny::wg::WgmmaCore<kN, kS, kWG>;
  constexpr int kThreads = Core::kCtaThreads;
  extern __shared__ __align__(16) uint8_t smem[];
  const int tid = threadIdx.x, row_base = blockIdx.x * Core::kCtaRows;
  const uint8_t* xrow[Core::kXRowsPerThread];
#pragma unroll
  for (int j = 0; j < Core::kXRowsPerThread; ++j) {
    const int r = (tid >> 3) + Core::kRowsPerPass * j;
    xrow[j] = r < p.m ? p.xq + static_cast<int64_t>(r) * p.k : nullptr;
  }
  const int num_tiles = (p.k + skinny::wg::kTileK - 1) / skinny::wg::kTileK;
  const int c_begin = blockIdx.y * p.steps_per_split, c_end = min(num_tiles, c_begin + p.steps_per_split);
  __shared__ ClusterSplitShared cs;
  if (p.cluster_splits) wgmma_cluster_split_init(cs);
  float acc[Core::kAcc];
  Core::stream(p.w, p.ldw_bytes, p.n, p.k, row_base, xrow, c_begin, c_end, smem, p.pdl != 0, acc);

  if (p.cluster_splits) {
    wgmma_cluster_split_store<Core, Y>(p, row_base, acc, smem, cs);
    return;
  }
  if (gridDim.y > 1) {  // split K: park the partial sums; the last CTA of this row block adds them up
    float* part = p.partials + static_cast<int64_t>(blockIdx.y * gridDim.x + blockIdx.x) * Core::kAcc * kThreads + tid;
#pragma unroll
    for (int i = 0; i < Core::kAcc; ++i) __stcg(part + i * kThreads, acc[i]);
    __threadfence();
    __syncthreads();
    __shared__ int last;
    if (tid == 0) last = atomicAdd(p.counters + blockIdx.x, 1) == static_cast<int>(gridDim.y) - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
#pragma unroll
    for (int i = 0; i < Core::kAcc; ++i) acc[i] = 0.f;
    for (int sk = 0; sk < static_cast<int>(gridDim.y); ++sk) {
      const float* pp = p.partials + static_cast<int64_t>(sk * gridDim.x + blockIdx.x) * Core::kAcc * kThreads + tid;
#pragma unroll
      for (int i = 0; i < Core::kAcc; ++i) acc[i] += __ldcg(pp + i * kThreads);
    }
    if (tid == 0) p.counters[blockIdx.x] = 0;  // ready for the next call (or graph replay)
  }

#pragma unroll
  for (int i = 0; i < Core::kAcc; ++i) {
    const int n = row_base + skinny::wg::acc_row(i), m = skinny::wg::acc_col(i);
    if (n < p.n && m < p.m) store_output<true, Y>(p, m, n, acc[i]);
  }
}

// The stream variants: warp q of the grid takes chunks [F q / W, F (q + 1) / W) of the tile-major
// (16 * kRT-row tile, chunk) sequence (skinny::WarpStream); tiles shared by several warps are
// summed by the last of them (partials [2 W, kElems, 32], counters [tiles]).
template <bool kFp8, int kMT, int kRT, int kU, int kS, int kMinBlocks, bool kF16, int kDiag, typename Y>
__global__ void __launch_bounds__(kMaxWarps * 32, kMinBlocks) skinny_stream_kernel(const __grid_constant__ SkinnyParams p) {
  using S = skinny::WarpStream<kFp8, kMT, kRT, kU, kS, kF16>;
  using F = typename S::F;
  extern __shared__ __align__(16) uint8_t smem[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int64_t q = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + warp;
  if (q >= p.stream_warps) return;  // no barriers below: idle warps may leave
  const int64_t nf = p.stream_chunks, nw = p.stream_warps;
  const int C = p.chunks_per_tile;

  const __nv_bfloat16* xr[kMT];  // activation row nt * 8 + g, or nullptr past m
#pragma unroll
  for (int nt = 0; nt < kMT; ++nt) {
    const int mr = nt * 8 + g;
    xr[nt] = mr < p.m ? p.x + mr * p.ldx + t * F::kElemsPerVec : nullptr;
  }
  auto rows_of = [&](int64_t tile, const uint8_t*& w, int& rows) {
    const int64_t r0 = tile * kRT * 16;
    w = p.w + r0 * p.ldw_bytes;
    rows = static_cast<int>(min(static_cast<int64_t>(kRT * 16), p.n - r0));
  };
  auto x_of = [&](int64_t, const __nv_bfloat16* (&xrow)[kMT]) {
#pragma unroll
    for (int nt = 0; nt < kMT; ++nt) xrow[nt] = xr[nt];
  };
  auto done = [&](int64_t tile, float (&acc)[kRT][kMT][4]) {
    if (!skinny::stream_tile_sums(acc, tile, C, q, nf, nw, p.partials, p.counters, p.m)) return;
    store_fragments<false, Y>(p, static_cast<int>(tile * kRT * 16), g, t, acc);
  };
  S::template walk<kDiag>(skinny::stream_begin(q, nf, nw), skinny::stream_begin(q + 1, nf, nw), C, p.k, p.ldw_bytes,
                          smem + warp * S::kRingBytesPerWarp, p.pdl != 0, rows_of, x_of, done);
}

}  // namespace kiln::skinny
