// Decode attention over the paged KV cache (q_len == 1 per sequence), GQA-aware: one CTA per
// (kv head, sequence, KV split) computes all query heads of the group, so each K/V byte is read
// once per KV head. The group's heads are the 16 rows of an mma tile (rows >= group are zero);
// the 4 warps take 16 keys each of a 64-key tile, cp.async-pipelined 3 stages deep, and merge
// their (max, sum, acc) at the end. Split-K (flash-decoding) writes per-split partials and the
// last CTA of each (sequence, kv head) to finish combines them (no second kernel). An fp8 e4m3
// cache is staged raw (half the bytes of a bf16 tile, 4 stages deep) and each warp widens its own
// 16 keys to bf16 in shared memory, so the fp8 loop has no CTA-wide barrier at all; k_scale folds
// into the softmax scale and v_scale into the output. Variants: q bf16 x cache {bf16, fp8 e4m3} x
// head_dim {64, 128}.
#include <cuda_runtime.h>

#include "kiln/kernels/cuda/attention/attention_device.cuh"

namespace kiln::cuda {
namespace {

using attn::kLog2e;
using bf16 = __nv_bfloat16;

// Shared memory: [Q tile | kStages x (K, V) raw tiles | fp8 only: widened bf16 K and V tiles].
template <int kHeadDim, bool kFp8 = false>
struct DecodeConfig {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kRows = 16;            // query heads of one group, padded
  static constexpr int kTileN = kWarps * 16;  // keys per stage, 16 per warp
  static constexpr int kStages = kFp8 ? 4 : 3;
  static constexpr int kTileBytes = kTileN * kHeadDim * (kFp8 ? 1 : 2);  // one raw K (or V) tile
  static constexpr int kWideTileBytes = kTileN * kHeadDim * 2;           // one bf16 tile
  static constexpr int kQBytes = kRows * kHeadDim * 2;
  static constexpr int kStageBytes = 2 * kTileBytes;  // K then V
  static constexpr int kWideBytes = kFp8 ? 2 * kWideTileBytes : 0;
  // After the loop the stages hold each warp's [kRows, kHeadDim + 8] f32 accumulators, m and l
  // (the +8 puts the 8 rows of a half-warp's float2 stores in distinct banks).
  static constexpr int kAccStride = kHeadDim + 8;
  static constexpr int kMergeBytes = kWarps * kRows * (kAccStride + 2) * 4;
  static constexpr int kSmemBytes = kQBytes + kStages * kStageBytes + kWideBytes;
  static_assert(kTileN == kDecodeTileKeys);
  static_assert(kMergeBytes <= kStages * kStageBytes + kWideBytes);
  // merge_splits: weights [kMaxDecodeSplits, 16], 16 inverse sums, up to max(16 * d / 4, kThreads)
  // float4 shares.
  static_assert((kMaxDecodeSplits * kRows + kRows) * 4 + (kRows * kHeadDim / 4 + kThreads) * 16 <= kSmemBytes);
};

// Combines the 4 warps' (m, l, O) of one CTA, each warp having seen 16 of every 64 keys, and
// writes the group's output rows (one split) or this split's partial (O / l and log2 of its
// softmax sum). Called by all threads after the K/V stages are drained; `scratch` reuses them.
template <int kHeadDim, bool kFp8>
__device__ __forceinline__ void merge_warps(const PagedAttentionParams& p, const float (&o)[kHeadDim / 8][4],
                                            const float (&m)[2], const float (&l_part)[2], uint8_t* scratch, int b,
                                            int kvh, int split, int q_row, float scale_log2) {
  using C = DecodeConfig<kHeadDim, kFp8>;
  constexpr int kChunks = kHeadDim / 8;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  float* acc = reinterpret_cast<float*>(scratch);          // [warps, rows, kAccStride]
  float* ms = acc + C::kWarps * C::kRows * C::kAccStride;  // [warps, rows]
  float* ls = ms + C::kWarps * C::kRows;                   // [warps, rows]
  const float l0 = attn::quad_sum(l_part[0]), l1 = attn::quad_sum(l_part[1]);
#pragma unroll
  for (int n = 0; n < kHeadDim / 8; ++n) {
    float* row = acc + (warp * C::kRows + g) * C::kAccStride + n * 8 + 2 * t;
    *reinterpret_cast<float2*>(row) = make_float2(o[n][0], o[n][1]);
    *reinterpret_cast<float2*>(row + 8 * C::kAccStride) = make_float2(o[n][2], o[n][3]);
  }
  if (t == 0) {
    ms[warp * C::kRows + g] = m[0];
    ms[warp * C::kRows + g + 8] = m[1];
    ls[warp * C::kRows + g] = l0;
    ls[warp * C::kRows + g + 8] = l1;
  }
  __syncthreads();
  for (int i = tid; i < p.group * kChunks; i += C::kThreads) {
    const int r = i / kChunks, c = i % kChunks;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < C::kWarps; ++w) mx = fmaxf(mx, ms[w * C::kRows + r]);
    float sum = 0.f, v[8] = {};
#pragma unroll
    for (int w = 0; w < C::kWarps; ++w) {
      const float f = attn::exp2_approx((ms[w * C::kRows + r] - mx) * scale_log2);  // 0 for an idle warp
      sum += f * ls[w * C::kRows + r];
      const float4* src = reinterpret_cast<const float4*>(acc + (w * C::kRows + r) * C::kAccStride + c * 8);
      const float4 lo = src[0], hi = src[1];
      v[0] += f * lo.x, v[1] += f * lo.y, v[2] += f * lo.z, v[3] += f * lo.w;
      v[4] += f * hi.x, v[5] += f * hi.y, v[6] += f * hi.z, v[7] += f * hi.w;
    }
    const float inv = p.v_scale / sum;  // v_scale: the fp8 cache's V scale (1 for bf16)
    const int head = kvh * p.group + r;
    if (p.num_splits == 1) {
      const uint4 packed = {attn::pack_bf16(v[0] * inv, v[1] * inv), attn::pack_bf16(v[2] * inv, v[3] * inv),
                            attn::pack_bf16(v[4] * inv, v[5] * inv), attn::pack_bf16(v[6] * inv, v[7] * inv)};
      bf16* out = static_cast<bf16*>(p.out) + (static_cast<int64_t>(q_row) * p.num_q_heads + head) * kHeadDim;
      *reinterpret_cast<uint4*>(out + c * 8) = packed;
    } else {
      const int64_t slot = (static_cast<int64_t>(split) * p.batch + b) * p.num_q_heads + head;
      float4* dst = reinterpret_cast<float4*>(p.partial_o + slot * kHeadDim + c * 8);
      dst[0] = make_float4(v[0] * inv, v[1] * inv, v[2] * inv, v[3] * inv);
      dst[1] = make_float4(v[4] * inv, v[5] * inv, v[6] * inv, v[7] * inv);
      if (c == 0) p.partial_lse[slot] = mx * scale_log2 + __log2f(sum);
    }
  }
}

// Split-K combine, run by the last CTA of a (sequence, kv head): out = sum_s w_s O_s / sum_s w_s
// with w_s = 2^(lse_s - max lse). Weights go through shared memory ([n_splits, group] floats,
// n_splits <= kMaxDecodeSplits); then each thread takes a 4-float slice of one head's row over a
// share of the splits, and the shares meet in shared memory. Partials are read with ld.cg: other
// CTAs wrote them.
template <int kHeadDim>
__device__ __forceinline__ void merge_splits(const PagedAttentionParams& p, int b, int kvh, int n_splits, int q_row,
                                             float* scratch) {
  using C = DecodeConfig<kHeadDim>;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, group = p.group;
  const int64_t split_stride = static_cast<int64_t>(p.batch) * p.num_q_heads;  // slots between splits
  const int64_t slot0 = static_cast<int64_t>(b) * p.num_q_heads + kvh * group;
  float* weight = scratch;                                   // [n_splits, group]
  float* inv_sum = weight + kMaxDecodeSplits * C::kRows;     // [group]
  float4* shares = reinterpret_cast<float4*>(inv_sum + 16);  // [share, item], 16-byte aligned
  for (int i = tid; i < n_splits * group; i += C::kThreads)
    weight[i] = __ldcg(p.partial_lse + slot0 + (i / group) * split_stride + i % group);
  __syncthreads();
  for (int r = warp; r < group; r += C::kWarps) {
    float mx = -INFINITY, sum = 0.f;
    for (int s = lane; s < n_splits; s += 32) mx = fmaxf(mx, weight[s * group + r]);
#pragma unroll
    for (int off = 16; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    for (int s = lane; s < n_splits; s += 32) {
      const float w = attn::exp2_approx(weight[s * group + r] - mx);
      weight[s * group + r] = w;
      sum += w;
    }
#pragma unroll
    for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    if (lane == 0) inv_sum[r] = 1.f / sum;
  }
  __syncthreads();
  constexpr int kSlices = kHeadDim / 4;
  const int items = group * kSlices, n_shares = max(1, C::kThreads / items);
  for (int i = tid; i < items * n_shares; i += C::kThreads) {
    const int item = i % items, share = i / items, r = item / kSlices, slice = item % kSlices;
    const float* src = p.partial_o + (slot0 + r) * kHeadDim + slice * 4;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 16  // 16 independent loads in flight: the combine is latency-bound
    for (int s = share; s < n_splits; s += n_shares) {
      const float w = weight[s * group + r];
      const float4 x = __ldcg(reinterpret_cast<const float4*>(src + s * split_stride * kHeadDim));
      acc.x += w * x.x, acc.y += w * x.y, acc.z += w * x.z, acc.w += w * x.w;
    }
    shares[share * items + item] = acc;
  }
  __syncthreads();
  bf16* out = static_cast<bf16*>(p.out) + (static_cast<int64_t>(q_row) * p.num_q_heads + kvh * group) * kHeadDim;
  for (int item = tid; item < items; item += C::kThreads) {
    float4 acc = shares[item];
    for (int share = 1; share < n_shares; ++share) {
      const float4 x = shares[share * items + item];
      acc.x += x.x, acc.y += x.y, acc.z += x.z, acc.w += x.w;
    }
    const int r = item / kSlices, slice = item % kSlices;
    const float inv = inv_sum[r];
    *reinterpret_cast<uint2*>(out + r * kHeadDim + slice * 4) =
        make_uint2(attn::pack_bf16(acc.x * inv, acc.y * inv), attn::pack_bf16(acc.z * inv, acc.w * inv));
  }
}

// [num_kv_heads, batch, num_splits] CTAs of 128 threads.
template <int kHeadDim, bool kFp8>
__global__ void __launch_bounds__(DecodeConfig<kHeadDim, kFp8>::kThreads)
    decode_attention_kernel(const __grid_constant__ PagedAttentionParams p) {
  using C = DecodeConfig<kHeadDim, kFp8>;
  constexpr int kChunks = kHeadDim / 8;
  extern __shared__ __align__(128) uint8_t smem[];
  const int kvh = blockIdx.x, b = blockIdx.y, split = blockIdx.z;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  // The three metadata loads go out together: the kernel's start is a chain of dependent loads.
  const int q_row = p.cu_seqlens_q[b];
  const int q_len = p.cu_seqlens_q[b + 1] - q_row;
  const int kv_len = p.kv_lens[b];
  bf16* out = static_cast<bf16*>(p.out);
  if (q_len != 1) {  // not a decode batch: q_len 0 has nothing to do, q_len > 1 is loudly wrong
    for (int i = tid; split == 0 && i < q_len * p.group * kHeadDim; i += C::kThreads) {
      const int t = i / (p.group * kHeadDim), r = i % (p.group * kHeadDim);
      out[(static_cast<int64_t>(q_row + t) * p.num_q_heads + kvh * p.group) * kHeadDim + r] = __float2bfloat16(NAN);
    }
    return;
  }
  const int first = p.sliding_window > 0 ? max(0, kv_len - p.sliding_window) : 0;
  const int begin = first + split * p.split_len;
  const int end = min(kv_len, begin + p.split_len);
  if (begin >= end) return;  // a shorter sequence needs fewer splits; it does not count this one
  const int n_tiles = (end - begin + C::kTileN - 1) / C::kTileN;

  const uint32_t q_tile = attn::smem_u32(smem);
  const uint32_t stages = q_tile + C::kQBytes;
  const uint32_t wide = stages + C::kStages * C::kStageBytes;  // fp8: the widened K then V tile
  const bf16* q =
      static_cast<const bf16*>(p.q) + (static_cast<int64_t>(q_row) * p.num_q_heads + kvh * p.group) * kHeadDim;
  for (int i = tid; i < C::kRows * kChunks; i += C::kThreads) {
    const int r = i / kChunks, c = i % kChunks;
    attn::cp_async_16(q_tile + attn::tile_offset<kHeadDim>(r, c), q + (r < p.group ? r : 0) * kHeadDim + c * 8,
                      r < p.group);
  }
  const attn::PagedRows rows{p.block_tables + static_cast<int64_t>(b) * p.table_stride, p.block_size_log2,
                             static_cast<int64_t>(p.num_kv_heads) * kHeadDim, static_cast<int64_t>(kvh) * kHeadDim};
  // bf16: the CTA loads whole tiles. fp8: each warp loads (and later widens) only its own 16 keys,
  // so its pipeline needs nothing from the other warps.
  auto load_tile = [&](int tile) {
    const uint32_t k = stages + (tile % C::kStages) * C::kStageBytes;
    if constexpr (kFp8) {
      attn::load_fp8_rows<kHeadDim, 16, 32>(k, k + C::kTileBytes, static_cast<const uint8_t*>(p.k_cache),
                                            static_cast<const uint8_t*>(p.v_cache), rows, begin + tile * C::kTileN,
                                            warp * 16, begin, end, lane);
    } else {
      attn::load_kv_tile<kHeadDim, C::kTileN, C::kThreads>(k, k + C::kTileBytes, static_cast<const bf16*>(p.k_cache),
                                                           static_cast<const bf16*>(p.v_cache), rows,
                                                           begin + tile * C::kTileN, begin, end, tid);
    }
  };
#pragma unroll
  for (int s = 0; s < C::kStages - 1; ++s) {  // the first group carries Q too
    if (s < n_tiles) load_tile(s);
    attn::cp_async_commit();
  }

  // ldmatrix lane bases within this warp's 16 keys: K rows (lane / 16) * 8 + lane % 8, chunk
  // (lane / 8) % 2; V (.trans) rows lane % 16, chunk lane / 16.
  const uint32_t k_lane = attn::lane_offset<kHeadDim>(warp * 16 + (lane / 16) * 8 + lane % 8, (lane / 8) % 2);
  const uint32_t v_lane = attn::lane_offset<kHeadDim>(warp * 16 + lane % 16, lane / 16);
  const float scale_log2 = p.scale * p.k_scale * kLog2e;  // k_scale: the fp8 cache's K scale (1 for bf16)
  uint32_t qf[kHeadDim / 16][4];
  float o[kHeadDim / 8][4] = {};
  float m[1][2] = {{-INFINITY, -INFINITY}}, l[1][2] = {{0.f, 0.f}};
  for (int it = 0; it < n_tiles; ++it) {
    attn::cp_async_wait<C::kStages - 2>();
    if (!kFp8 || it == 0) {
      __syncthreads();  // bf16: tiles are loaded by the whole CTA; both: Q is
    } else {
      __syncwarp();  // fp8: this warp's rows of tile `it` landed, and it is done with stage it - 1
    }
    if (it == 0) {
#pragma unroll
      for (int kk = 0; kk < kHeadDim / 16; ++kk)
        attn::ldmatrix_x4(qf[kk], q_tile + attn::tile_offset<kHeadDim>(lane % 16, 2 * kk + lane / 16));
    }
    if (it + C::kStages - 1 < n_tiles) load_tile(it + C::kStages - 1);  // into the stage freed at it - 1
    attn::cp_async_commit();

    uint32_t k_tile = stages + (it % C::kStages) * C::kStageBytes;
    uint32_t v_tile = k_tile + C::kTileBytes;
    if constexpr (kFp8) {
      const uint8_t* raw = smem + (k_tile - q_tile);
      attn::widen_fp8_rows<kHeadDim, 16, 32>(raw, raw + C::kTileBytes, smem + (wide - q_tile),
                                             smem + (wide - q_tile) + C::kWideTileBytes, warp * 16, lane);
      __syncwarp();
      k_tile = wide;
      v_tile = wide + C::kWideTileBytes;
    }
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
  merge_warps<kHeadDim, kFp8>(p, o, m[0], l[0], smem + C::kQBytes, b, kvh, split, q_row, scale_log2);
  if (p.num_splits == 1) return;
  // Split-K: the last CTA of this (sequence, kv head) to finish combines every split's partial.
  __shared__ int last;
  __threadfence();  // this CTA's partials are visible before its count is
  __syncthreads();
  const int n_splits = (kv_len - first + p.split_len - 1) / p.split_len;
  if (tid == 0) {
    int* counter = p.split_counters + static_cast<int64_t>(b) * p.num_kv_heads + kvh;
    last = atomicAdd(counter, 1) == n_splits - 1;
    if (last) *counter = 0;  // every split has counted: reset for the next launch
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  merge_splits<kHeadDim>(p, b, kvh, n_splits, q_row, reinterpret_cast<float*>(smem));
}

template <int kHeadDim, bool kFp8>
Status launch_decode(const PagedAttentionParams& p, CUstream_st* stream) {
  using C = DecodeConfig<kHeadDim, kFp8>;
  static const cudaError_t attr = cudaFuncSetAttribute(decode_attention_kernel<kHeadDim, kFp8>,
                                                       cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmemBytes);
  if (attr != cudaSuccess) return internal_error(std::string("decode_attention: ") + cudaGetErrorString(attr));
  if (p.batch == 0) return ok_status();
  decode_attention_kernel<kHeadDim, kFp8>
      <<<dim3(p.num_kv_heads, p.batch, p.num_splits), C::kThreads, C::kSmemBytes, stream>>>(p);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return internal_error(std::string("decode_attention launch: ") + cudaGetErrorString(err));
  return ok_status();
}

template <int kHeadDim, bool kFp8>
int decode_ctas_per_sm() {
  using C = DecodeConfig<kHeadDim, kFp8>;
  static const int n = [] {
    int ctas = 0;
    (void)cudaFuncSetAttribute(decode_attention_kernel<kHeadDim, kFp8>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               C::kSmemBytes);
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ctas, decode_attention_kernel<kHeadDim, kFp8>, C::kThreads,
                                                      C::kSmemBytes) != cudaSuccess)
      return 1;
    return ctas > 0 ? ctas : 1;
  }();
  return n;
}

// q dtype, head_dim, launch, occupancy, cache dtype.
constexpr AttentionVariant kDecodeVariants[] = {
    {DType::kBF16, 64, &launch_decode<64, false>, &decode_ctas_per_sm<64, false>, DType::kBF16},
    {DType::kBF16, 128, &launch_decode<128, false>, &decode_ctas_per_sm<128, false>, DType::kBF16},
    {DType::kBF16, 64, &launch_decode<64, true>, &decode_ctas_per_sm<64, true>, DType::kFp8E4M3},
    {DType::kBF16, 128, &launch_decode<128, true>, &decode_ctas_per_sm<128, true>, DType::kFp8E4M3},
};

}  // namespace

std::span<const AttentionVariant> decode_attention_variants() { return kDecodeVariants; }

}  // namespace kiln::cuda
