// Prefill attention over the paged KV cache: causal, GQA/MQA, variable-length batch, queries the
// last q_len positions of each sequence (so a prompt can extend a cached prefix). FlashAttention-2
// tiling on mma.sync m16n8k16: a CTA owns 128 packed rows (token, head of the group) of one KV
// head, so K/V tiles are shared by the group's heads; 4 warps x 32 rows, 64-key tiles double
// buffered with cp.async, online softmax in registers. An fp8 e4m3 cache is staged raw and widened
// to a bf16 tile in shared memory once per 64 keys (shared by the CTA's 128 rows); k_scale folds
// into the softmax scale and v_scale into the output. Variants: q bf16 x cache {bf16, fp8 e4m3} x
// head_dim {64, 128}.
#include <cuda_runtime.h>

#include "kiln/kernels/cuda/attention/attention_device.cuh"

namespace kiln::cuda {
namespace {

using attn::kLog2e;
using bf16 = __nv_bfloat16;

// Shared memory: [Q tile | 2 x (K, V) raw tiles | fp8 only: widened bf16 K and V tiles].
template <int kHeadDim, bool kFp8 = false>
struct PrefillConfig {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kMinCtas = 1;  // per SM, for __launch_bounds__ (caps registers when > 1)
  static constexpr int kMTiles = 2;   // m16 tiles per warp: B fragments are reused across both
  static constexpr int kBlockM = kWarps * kMTiles * 16;
  static constexpr int kBlockN = 64;  // keys per pipeline stage and per softmax step
  static constexpr int kQBytes = kBlockM * kHeadDim * 2;
  static constexpr int kTileBytes = kBlockN * kHeadDim * (kFp8 ? 1 : 2);  // one raw K (or V) tile
  static constexpr int kWideTileBytes = kBlockN * kHeadDim * 2;
  static constexpr int kStageBytes = 2 * kTileBytes;  // K then V
  static constexpr int kSmemBytes = kQBytes + 2 * kStageBytes + (kFp8 ? 2 * kWideTileBytes : 0);
};

// S [16 * kM rows, 8 * kN keys] = Q K^T for a warp, the keys' K rows starting at k_keys.
template <int kHeadDim, int kM, int kN>
__device__ __forceinline__ void score_keys(float (&s)[kM][kN][4], uint32_t q_warp, uint32_t k_keys, uint32_t a_lane,
                                           uint32_t k_lane) {
  constexpr int kRowBytes = kHeadDim * 2;
#pragma unroll
  for (int kk = 0; kk < kHeadDim / 16; ++kk) {
    uint32_t qa[kM][4];
#pragma unroll
    for (int mt = 0; mt < kM; ++mt)
      attn::ldmatrix_x4(qa[mt], q_warp + mt * 16 * kRowBytes + attn::chunk_pair(a_lane, kk));
#pragma unroll
    for (int j = 0; j < kN / 2; ++j) {
      uint32_t kb[4];
      attn::ldmatrix_x4(kb, k_keys + j * 16 * kRowBytes + attn::chunk_pair(k_lane, kk));
#pragma unroll
      for (int mt = 0; mt < kM; ++mt) {
        attn::mma_bf16(s[mt][2 * j], qa[mt], kb[0], kb[1]);
        attn::mma_bf16(s[mt][2 * j + 1], qa[mt], kb[2], kb[3]);
      }
    }
  }
}

// Causal and sliding-window mask of keys [key0, key0 + 8 * kN) for this thread's rows at `pos`.
template <int kM, int kN>
__device__ __forceinline__ void mask_scores(float (&s)[kM][kN][4], int key0, const int (&pos)[kM][2], int window,
                                            int t) {
#pragma unroll
  for (int mt = 0; mt < kM; ++mt)
#pragma unroll
    for (int j = 0; j < kN; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int key = key0 + j * 8 + 2 * t + (e & 1), at = pos[mt][e / 2];
        if (key > at || (window > 0 && key + window <= at)) s[mt][j][e] = -INFINITY;
      }
}

// Online-softmax step over the scores s, then O += P V with the keys' V rows starting at v_keys.
template <int kHeadDim, int kM, int kN>
__device__ __forceinline__ void softmax_pv(float (&s)[kM][kN][4], float (&o)[kM][kHeadDim / 8][4], float (&m)[kM][2],
                                           float (&l)[kM][2], uint32_t v_keys, uint32_t a_lane, float scale_log2) {
  constexpr int kRowBytes = kHeadDim * 2;
  float rescale[kM][2];
  if (attn::softmax_step<kM, kN>(s, m, l, rescale, scale_log2)) {
#pragma unroll
    for (int mt = 0; mt < kM; ++mt)
#pragma unroll
      for (int n = 0; n < kHeadDim / 8; ++n) {
        o[mt][n][0] *= rescale[mt][0];
        o[mt][n][1] *= rescale[mt][0];
        o[mt][n][2] *= rescale[mt][1];
        o[mt][n][3] *= rescale[mt][1];
      }
  }
  // 16 keys at a time; the C fragments of S are the A fragments of P.
#pragma unroll
  for (int kk = 0; kk < kN / 2; ++kk) {
    uint32_t pa[kM][4];
#pragma unroll
    for (int mt = 0; mt < kM; ++mt) {
      pa[mt][0] = attn::pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
      pa[mt][1] = attn::pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
      pa[mt][2] = attn::pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
      pa[mt][3] = attn::pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
    }
#pragma unroll
    for (int n2 = 0; n2 < kHeadDim / 16; ++n2) {
      uint32_t vb[4];
      attn::ldmatrix_x4_trans(vb, v_keys + kk * 16 * kRowBytes + attn::chunk_pair(a_lane, n2));
#pragma unroll
      for (int mt = 0; mt < kM; ++mt) {
        attn::mma_bf16(o[mt][2 * n2], pa[mt], vb[0], vb[1]);
        attn::mma_bf16(o[mt][2 * n2 + 1], pa[mt], vb[2], vb[3]);
      }
    }
  }
}

// [num_kv_heads, row-block bound] CTAs of 128 threads.
template <int kHeadDim, bool kFp8>
__global__ void __launch_bounds__(PrefillConfig<kHeadDim, kFp8>::kThreads, PrefillConfig<kHeadDim, kFp8>::kMinCtas)
    prefill_attention_kernel(const __grid_constant__ PagedAttentionParams p) {
  using C = PrefillConfig<kHeadDim, kFp8>;
  constexpr int kChunks = kHeadDim / 8, kM = C::kMTiles;
  extern __shared__ __align__(128) uint8_t smem[];
  const int kvh = blockIdx.x;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  int b, local;
  if (!attn::find_row_block<C::kBlockM>(p.cu_seqlens_q, p.batch, p.group, blockIdx.y, lane, b, local)) return;
  const int q_row = p.cu_seqlens_q[b], q_len = p.cu_seqlens_q[b + 1] - q_row, kv_len = p.kv_lens[b];
  const int n_rows = q_len * p.group;
  const int row0 = ((n_rows + C::kBlockM - 1) / C::kBlockM - 1 - local) * C::kBlockM;  // latest rows first
  const int q_pos0 = kv_len - q_len;  // position of the first new token
  const int pos_lo = q_pos0 + row0 / p.group;
  const int pos_hi = q_pos0 + (min(row0 + C::kBlockM, n_rows) - 1) / p.group;
  const int window = p.sliding_window;
  const int kv_lo = window > 0 ? max(0, pos_lo - window + 1) : 0;
  const int kv_hi = pos_hi + 1;
  const int tile0 = kv_lo / C::kBlockN * C::kBlockN;
  const int n_tiles = (kv_hi - tile0 + C::kBlockN - 1) / C::kBlockN;

  const uint32_t q_tile = attn::smem_u32(smem);
  const uint32_t stages = q_tile + C::kQBytes;
  const bf16* q = static_cast<const bf16*>(p.q);
  for (int i = tid; i < C::kBlockM * kChunks; i += C::kThreads) {
    const int r = i / kChunks, c = i % kChunks, row = row0 + r;
    const bool valid = row < n_rows;
    const int token = valid ? row / p.group : 0, head = kvh * p.group + (valid ? row % p.group : 0);
    attn::cp_async_16(q_tile + attn::tile_offset<kHeadDim>(r, c),
                      q + (static_cast<int64_t>(q_row + token) * p.num_q_heads + head) * kHeadDim + c * 8, valid);
  }
  const attn::PagedRows rows{p.block_tables + static_cast<int64_t>(b) * p.table_stride, p.block_size_log2,
                             static_cast<int64_t>(p.num_kv_heads) * kHeadDim, static_cast<int64_t>(kvh) * kHeadDim};
  const uint32_t wide = stages + 2 * C::kStageBytes;  // fp8: the widened K then V tile
  auto load_tile = [&](int tile) {
    const uint32_t k = stages + (tile % 2) * C::kStageBytes;
    if constexpr (kFp8) {
      attn::load_fp8_rows<kHeadDim, C::kBlockN, C::kThreads>(k, k + C::kTileBytes, static_cast<const uint8_t*>(p.k_cache),
                                                             static_cast<const uint8_t*>(p.v_cache), rows,
                                                             tile0 + tile * C::kBlockN, 0, kv_lo, kv_hi, tid);
    } else {
      attn::load_kv_tile<kHeadDim, C::kBlockN, C::kThreads>(k, k + C::kTileBytes, static_cast<const bf16*>(p.k_cache),
                                                            static_cast<const bf16*>(p.v_cache), rows,
                                                            tile0 + tile * C::kBlockN, kv_lo, kv_hi, tid);
    }
  };
  load_tile(0);  // one group with Q
  attn::cp_async_commit();

  // Positions of this thread's 2 * kM rows (padding rows: -1, every key masked, never stored).
  int pos[kM][2];
#pragma unroll
  for (int mt = 0; mt < kM; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = row0 + warp * (kM * 16) + mt * 16 + g + 8 * h;
      pos[mt][h] = row < n_rows ? q_pos0 + row / p.group : -1;
    }

  // ldmatrix lane bases: A operands (Q, and V through .trans) take rows lane % 16, chunk lane / 16;
  // K takes rows (lane / 16) * 8 + lane % 8, chunk (lane / 8) % 2.
  constexpr int kRowBytes = kHeadDim * 2;
  const uint32_t a_lane = attn::lane_offset<kHeadDim>(lane % 16, lane / 16);
  const uint32_t k_lane = attn::lane_offset<kHeadDim>((lane / 16) * 8 + lane % 8, (lane / 8) % 2);
  const uint32_t q_warp = q_tile + warp * (kM * 16) * kRowBytes;
  const float scale_log2 = p.scale * p.k_scale * kLog2e;  // k_scale: the fp8 cache's K scale (1 for bf16)
  float o[kM][kHeadDim / 8][4] = {};
  float m[kM][2], l[kM][2];
#pragma unroll
  for (int mt = 0; mt < kM; ++mt) m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.f;

  for (int it = 0; it < n_tiles; ++it) {
    if (it + 1 < n_tiles) load_tile(it + 1);  // into the stage the previous iteration released
    attn::cp_async_commit();
    attn::cp_async_wait<1>();
    __syncthreads();  // tile `it` landed; fp8: every warp is done with the widened tile of it - 1
    uint32_t k_tile = stages + (it % 2) * C::kStageBytes;
    uint32_t v_tile = k_tile + C::kTileBytes;
    if constexpr (kFp8) {
      const uint8_t* raw = smem + (k_tile - q_tile);
      uint8_t* wide_ptr = smem + (wide - q_tile);
      attn::widen_fp8_rows<kHeadDim, C::kBlockN, C::kThreads>(raw, raw + C::kTileBytes, wide_ptr,
                                                              wide_ptr + C::kWideTileBytes, 0, tid);
      __syncthreads();
      k_tile = wide;
      v_tile = wide + C::kWideTileBytes;
    }

    const int key0 = tile0 + it * C::kBlockN;
    float s[kM][C::kBlockN / 8][4] = {};
    score_keys<kHeadDim, kM, C::kBlockN / 8>(s, q_warp, k_tile, a_lane, k_lane);
    if (key0 + C::kBlockN - 1 > pos_lo || (window > 0 && key0 < pos_hi - window + 1))
      mask_scores(s, key0, pos, window, t);
    softmax_pv<kHeadDim, kM, C::kBlockN / 8>(s, o, m, l, v_tile, a_lane, scale_log2);
    // bf16: every warp is done with this stage before it is refilled. fp8: the raw stage was
    // released by the widening barrier, the widened tile is guarded by the next iteration's barrier.
    if constexpr (!kFp8) __syncthreads();
  }

  // Normalize, stage bf16 rows in this warp's own Q rows (no other warp reads them), store 16 B.
#pragma unroll
  for (int mt = 0; mt < kM; ++mt) {
    float inv[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float sum = attn::quad_sum(l[mt][h]);
      inv[h] = sum > 0.f ? p.v_scale / sum : 0.f;  // v_scale: the fp8 cache's V scale (1 for bf16)
    }
    const int r = warp * (kM * 16) + mt * 16 + g;
#pragma unroll
    for (int n = 0; n < kHeadDim / 8; ++n) {
      *reinterpret_cast<uint32_t*>(smem + attn::tile_offset<kHeadDim>(r, n) + 4 * t) =
          attn::pack_bf16(o[mt][n][0] * inv[0], o[mt][n][1] * inv[0]);
      *reinterpret_cast<uint32_t*>(smem + attn::tile_offset<kHeadDim>(r + 8, n) + 4 * t) =
          attn::pack_bf16(o[mt][n][2] * inv[1], o[mt][n][3] * inv[1]);
    }
  }
  __syncwarp();
  bf16* out = static_cast<bf16*>(p.out);
  for (int i = lane; i < kM * 16 * kChunks; i += 32) {
    const int r = warp * (kM * 16) + i / kChunks, c = i % kChunks, row = row0 + r;
    if (row >= n_rows) continue;
    const int token = row / p.group, head = kvh * p.group + row % p.group;
    *reinterpret_cast<uint4*>(out + (static_cast<int64_t>(q_row + token) * p.num_q_heads + head) * kHeadDim + c * 8) =
        *reinterpret_cast<const uint4*>(smem + attn::tile_offset<kHeadDim>(r, c));
  }
}

template <int kHeadDim, bool kFp8>
Status launch_prefill(const PagedAttentionParams& p, CUstream_st* stream) {
  using C = PrefillConfig<kHeadDim, kFp8>;
  static const cudaError_t attr = cudaFuncSetAttribute(prefill_attention_kernel<kHeadDim, kFp8>,
                                                       cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmemBytes);
  if (attr != cudaSuccess) return internal_error(std::string("prefill_attention: ") + cudaGetErrorString(attr));
  if (p.batch == 0 || p.num_tokens == 0) return ok_status();
  // Row blocks over all sequences: sum ceil(q_len * group / kBlockM) <= this bound.
  const int64_t blocks = (static_cast<int64_t>(p.num_tokens) * p.group + C::kBlockM - 1) / C::kBlockM + p.batch;
  if (blocks > 65535) return out_of_range("prefill_attention: " + std::to_string(blocks) + " row blocks (> 65535)");
  prefill_attention_kernel<kHeadDim, kFp8>
      <<<dim3(p.num_kv_heads, static_cast<unsigned>(blocks)), C::kThreads, C::kSmemBytes, stream>>>(p);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return internal_error(std::string("prefill_attention launch: ") + cudaGetErrorString(err));
  return ok_status();
}

int no_split() { return 1; }

// q dtype, head_dim, launch, occupancy (unused), cache dtype.
constexpr AttentionVariant kPrefillVariants[] = {
    {DType::kBF16, 64, &launch_prefill<64, false>, &no_split, DType::kBF16},
    {DType::kBF16, 128, &launch_prefill<128, false>, &no_split, DType::kBF16},
    {DType::kBF16, 64, &launch_prefill<64, true>, &no_split, DType::kFp8E4M3},
    {DType::kBF16, 128, &launch_prefill<128, true>, &no_split, DType::kFp8E4M3},
};

}  // namespace

std::span<const AttentionVariant> prefill_attention_variants() { return kPrefillVariants; }

}  // namespace kiln::cuda
