// Decode attention over the paged KV cache (q_len == 1 per sequence), GQA-aware: one CTA per
// (kv head, sequence, KV split) computes all query heads of the group, so each K/V byte is read
// once per KV head. The group's heads are the 16 rows of an mma tile (rows >= group are zero);
// the 4 warps take 16 keys each of a 64-key tile, cp.async-pipelined 3 stages deep, and merge
// their (max, sum, acc) at the end. Split-K (flash-decoding) writes per-split partials and the
// last CTA of each (sequence, kv head) to finish combines them (no second kernel; decode_merge.cuh).
// This file holds the bf16 cache kernel and the decode variant table; the fp8 e4m3 cache rows
// are decode_attention_fp8.cu's. Variants: q bf16 x cache {bf16, fp8 e4m3} x head_dim {64, 128}.
#include <cuda_runtime.h>

#include <climits>

#include "kiln/kernels/cuda/attention/decode_merge.cuh"
#include "kiln/kernels/cuda/attention/decode_rope.cuh"
#include "kiln/kernels/cuda/common/pdl.cuh"

namespace kiln::cuda {
namespace {

using attn::kLog2e;
using bf16 = __nv_bfloat16;

// Shared memory: [Q tile | kStages x (K, V) tiles]; after the loop the stages hold the merges'
// scratch.
template <int kHeadDim>
struct DecodeConfig {
  static constexpr int kWarps = decode::kWarps;
  static constexpr int kThreads = decode::kThreads;
  static constexpr int kRows = decode::kRows;  // query heads of one group, padded
  static constexpr int kTileN = kWarps * 16;   // keys per stage, 16 per warp
  static constexpr int kStages = 3;
  static constexpr int kTileBytes = kTileN * kHeadDim * 2;  // one K (or V) tile
  static constexpr int kQBytes = kRows * kHeadDim * 2;
  static constexpr int kStageBytes = 2 * kTileBytes;  // K then V
  static constexpr int kSmemBytes = kQBytes + kStages * kStageBytes;
  static_assert(kTileN == kDecodeTileKeys);
  static_assert(decode::WarpStates<kHeadDim>::kBytes <= kStages * kStageBytes);
  static_assert(decode::kSplitMergeBytes<kHeadDim> <= kSmemBytes);
};

// [num_kv_heads, batch, num_splits] CTAs of 128 threads.
template <int kHeadDim>
__global__ void __launch_bounds__(DecodeConfig<kHeadDim>::kThreads)
    decode_attention_kernel(const __grid_constant__ PagedAttentionParams p) {
  using C = DecodeConfig<kHeadDim>;
  constexpr int kChunks = kHeadDim / 8;
  extern __shared__ __align__(128) uint8_t smem[];
  const int kvh = blockIdx.x, b = blockIdx.y, split = blockIdx.z;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  decode::SplitKeys keys;
  if (!decode::split_keys<kHeadDim>(p, b, kvh, split, keys)) return;
  const int q_row = keys.q_row, kv_len = keys.kv_len, first = keys.first, begin = keys.begin, end = keys.end;
  const int n_tiles = (end - begin + C::kTileN - 1) / C::kTileN;

  const uint32_t q_tile = attn::smem_u32(smem);
  const uint32_t stages = q_tile + C::kQBytes;
  const attn::PagedRows rows{p.block_tables + static_cast<int64_t>(b) * p.table_stride, p.block_size_log2,
                             static_cast<int64_t>(p.num_kv_heads) * kHeadDim, static_cast<int64_t>(kvh) * kHeadDim};
  // The CTA loads whole tiles: keys [copy_lo, copy_hi) copied, keys outside [begin, end) zero-filled.
  auto load_tile = [&](int tile, int copy_lo, int copy_hi, int zero_lo, int zero_hi) {
    const uint32_t k = stages + (tile % C::kStages) * C::kStageBytes;
    attn::load_kv_rows<kHeadDim, C::kTileN, C::kThreads>(k, k + C::kTileBytes, static_cast<const bf16*>(p.k_cache),
                                                         static_cast<const bf16*>(p.v_cache), rows,
                                                         begin + tile * C::kTileN, copy_lo, copy_hi, zero_lo, zero_hi,
                                                         tid);
  };
  // Programmatic dependent launch: the first tiles' keys that earlier steps wrote are requested
  // before the wait for the kernel before (which writes the newest key, kv_len - 1, and Q); Q and
  // that key's rows follow the wait, in the last group. The metadata and block tables come from
  // the host.
  const int ready = kv_len - 1;
#pragma unroll
  for (int s = 0; s < C::kStages - 1; ++s) {
    if (s < n_tiles) load_tile(s, begin, min(end, ready), begin, end);
    attn::cp_async_commit();
  }
  __shared__ float rope_cs[kHeadDim];  // p.rope: the token's cos | sin
  if (p.rope) {
    decode::rope_table<kHeadDim, C::kThreads>(p, q_row, rope_cs, tid);
    __syncthreads();
  }
  cuda::pdl_wait();
  cuda::pdl_trigger();
  if (p.rope) {  // Q rotated here; this split's newest key (if any) rotated, cached and put in its tile
    decode::rope_q_tile<kHeadDim, C::kRows, C::kThreads>(p, q_row, kvh, smem, rope_cs, tid);
    if (ready >= begin && ready < end) {
      const int tile = (ready - begin) / C::kTileN;  // a later tile reads it from the cache
      uint8_t* k_tile = tile < C::kStages - 1 ? smem + C::kQBytes + tile * C::kStageBytes : nullptr;
      decode::rope_newest_kv<kHeadDim>(p, q_row, kvh, k_tile, k_tile ? k_tile + C::kTileBytes : nullptr,
                                       (ready - begin) % C::kTileN, rope_cs, tid);
    }
  } else {
    const bf16* q = static_cast<const bf16*>(p.q) + static_cast<int64_t>(q_row) * p.q_stride + kvh * p.group * kHeadDim;
    for (int i = tid; i < C::kRows * kChunks; i += C::kThreads) {
      const int r = i / kChunks, c = i % kChunks;
      attn::cp_async_16(q_tile + attn::tile_offset<kHeadDim>(r, c), q + (r < p.group ? r : 0) * kHeadDim + c * 8,
                        r < p.group);
    }
#pragma unroll
    for (int s = 0; s < C::kStages - 1; ++s)  // no-op unless the tile holds the newest key
      if (s < n_tiles && ready < end) load_tile(s, ready, end, INT_MIN, INT_MAX);
  }
  attn::cp_async_commit();

  // ldmatrix lane bases within this warp's 16 keys: K rows (lane / 16) * 8 + lane % 8, chunk
  // (lane / 8) % 2; V (.trans) rows lane % 16, chunk lane / 16.
  const uint32_t k_lane = attn::lane_offset<kHeadDim>(warp * 16 + (lane / 16) * 8 + lane % 8, (lane / 8) % 2);
  const uint32_t v_lane = attn::lane_offset<kHeadDim>(warp * 16 + lane % 16, lane / 16);
  const float scale_log2 = p.scale * kLog2e;
  uint32_t qf[kHeadDim / 16][4];
  float o[kHeadDim / 8][4] = {};
  float m[1][2] = {{-INFINITY, -INFINITY}}, l[1][2] = {{0.f, 0.f}};
  for (int it = 0; it < n_tiles; ++it) {
    if (it == 0)
      attn::cp_async_wait<0>();  // the prologue's tiles, Q and the newest key (the last group; or stored, p.rope)
    else
      attn::cp_async_wait<C::kStages - 2>();
    __syncthreads();  // tile `it` (and at it == 0 Q) landed, and every warp is done with stage it - 1
    if (it == 0) {
#pragma unroll
      for (int kk = 0; kk < kHeadDim / 16; ++kk)
        attn::ldmatrix_x4(qf[kk], q_tile + attn::tile_offset<kHeadDim>(lane % 16, 2 * kk + lane / 16));
    }
    if (it + C::kStages - 1 < n_tiles) load_tile(it + C::kStages - 1, begin, end, begin, end);  // into the stage freed at it - 1
    attn::cp_async_commit();

    const uint32_t k_tile = stages + (it % C::kStages) * C::kStageBytes;
    const uint32_t v_tile = k_tile + C::kTileBytes;
    // S [16 heads, 16 keys] = Q K^T for this warp's keys.
    float s[1][2][4] = {};
#pragma unroll
    for (int kk = 0; kk < kHeadDim / 16; ++kk) {
      uint32_t kb[4];
      attn::ldmatrix_x4(kb, k_tile + attn::chunk_pair(k_lane, kk));
      attn::mma_bf16(s[0][0], qf[kk], kb[0], kb[1]);
      attn::mma_bf16(s[0][1], qf[kk], kb[2], kb[3]);
    }
    const int key0 = begin + it * C::kTileN + warp * 16;
    if (key0 + 16 > end) {
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (key0 + j * 8 + 2 * (lane % 4) + (e & 1) >= end) s[0][j][e] = -INFINITY;
    }
    float rescale[1][2];
    if (attn::softmax_step<1, 2>(s, m, l, rescale, scale_log2)) {
#pragma unroll
      for (int n = 0; n < kHeadDim / 8; ++n) {
        o[n][0] *= rescale[0][0];
        o[n][1] *= rescale[0][0];
        o[n][2] *= rescale[0][1];
        o[n][3] *= rescale[0][1];
      }
    }
    const uint32_t pa[4] = {attn::pack_bf16(s[0][0][0], s[0][0][1]), attn::pack_bf16(s[0][0][2], s[0][0][3]),
                            attn::pack_bf16(s[0][1][0], s[0][1][1]), attn::pack_bf16(s[0][1][2], s[0][1][3])};
    // O [16 heads, d] += P V for this warp's keys.
#pragma unroll
    for (int n2 = 0; n2 < kHeadDim / 16; ++n2) {
      uint32_t vb[4];
      attn::ldmatrix_x4_trans(vb, v_tile + attn::chunk_pair(v_lane, n2));
      attn::mma_bf16(o[2 * n2], pa, vb[0], vb[1]);
      attn::mma_bf16(o[2 * n2 + 1], pa, vb[2], vb[3]);
    }
  }

  // Merge the 4 warps' partial softmax states through shared memory (the stages are free now).
  attn::cp_async_wait<0>();
  __syncthreads();
  const decode::WarpStates<kHeadDim> st(smem + C::kQBytes);
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int n = 0; n < kHeadDim / 8; ++n) {
    float* row = st.row(warp, g) + n * 8 + 2 * t;
    *reinterpret_cast<float2*>(row) = make_float2(o[n][0], o[n][1]);
    *reinterpret_cast<float2*>(row + 8 * decode::WarpStates<kHeadDim>::kAccStride) = make_float2(o[n][2], o[n][3]);
  }
  decode::store_warp_max_sum<kHeadDim>(st, m[0], l[0], warp, lane);
  __syncthreads();
  decode::merge_warp_states<kHeadDim>(p, st, b, kvh, split, q_row, scale_log2, 1.f);
  decode::finish_splits<kHeadDim>(p, st, b, kvh, kv_len, first, q_row, smem);
}

template <int kHeadDim>
Status launch_decode(const PagedAttentionParams& p, CUstream_st* stream) {
  using C = DecodeConfig<kHeadDim>;
  static const cudaError_t attr = cudaFuncSetAttribute(decode_attention_kernel<kHeadDim>,
                                                       cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmemBytes);
  if (attr != cudaSuccess) return internal_error(std::string("decode_attention: ") + cudaGetErrorString(attr));
  if (p.batch == 0) return ok_status();
  const cudaError_t err = cuda::launch_pdl(decode_attention_kernel<kHeadDim>, dim3(p.num_kv_heads, p.batch, p.num_splits),
                                           dim3(C::kThreads), C::kSmemBytes, stream, p,
                                           dim3(1, 1, p.cluster_merge ? p.num_splits : 1));
  if (err != cudaSuccess) return internal_error(std::string("decode_attention launch: ") + cudaGetErrorString(err));
  return ok_status();
}

template <int kHeadDim>
int decode_ctas_per_sm() {
  using C = DecodeConfig<kHeadDim>;
  static const int n = [] {
    int ctas = 0;
    (void)cudaFuncSetAttribute(decode_attention_kernel<kHeadDim>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               C::kSmemBytes);
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ctas, decode_attention_kernel<kHeadDim>, C::kThreads,
                                                      C::kSmemBytes) != cudaSuccess)
      return 1;
    return ctas > 0 ? ctas : 1;
  }();
  return n;
}

// q dtype, head_dim, launch, occupancy, cache dtype.
constexpr AttentionVariant kDecodeVariants[] = {
    {DType::kBF16, 64, &launch_decode<64>, &decode_ctas_per_sm<64>, DType::kBF16},
    {DType::kBF16, 128, &launch_decode<128>, &decode_ctas_per_sm<128>, DType::kBF16},
    {DType::kBF16, 64, &launch_decode_fp8<64>, &decode_fp8_ctas_per_sm<64>, DType::kFp8E4M3},
    {DType::kBF16, 128, &launch_decode_fp8<128>, &decode_fp8_ctas_per_sm<128>, DType::kFp8E4M3},
};

}  // namespace

std::span<const AttentionVariant> decode_attention_variants() { return kDecodeVariants; }

}  // namespace kiln::cuda
