// Decode attention over the paged KV cache (q_len == 1 per sequence), GQA-aware: one CTA per
// (kv head, sequence, KV split) computes all query heads of the group, so each K/V byte is read
// once per KV head. The group's heads are the 16 rows of an mma tile (rows >= group are zero);
// the 4 warps take 16 keys each of a 64-key tile, cp.async-pipelined 3 stages deep, and merge
// their (max, sum, acc) at the end. Split-K (flash-decoding) writes per-split partials that
// decode_attention_reduce_kernel combines. Variants: bf16 x head_dim {64, 128}.
#include <cuda_runtime.h>

#include "kiln/kernels/cuda/attention/attention_device.cuh"

namespace kiln::cuda {
namespace {

using attn::kLog2e;
using bf16 = __nv_bfloat16;

template <int kHeadDim>
struct DecodeConfig {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kRows = 16;                 // query heads of one group, padded
  static constexpr int kTileN = kWarps * 16;       // keys per stage, 16 per warp
  static constexpr int kStages = 3;
  static constexpr int kTileBytes = kTileN * kHeadDim * 2;
  static constexpr int kQBytes = kRows * kHeadDim * 2;
  static constexpr int kStageBytes = 2 * kTileBytes;  // K then V
  // After the loop the stages hold each warp's [kRows, kHeadDim + 8] f32 accumulators, m and l
  // (the +8 puts the 8 rows of a half-warp's float2 stores in distinct banks).
  static constexpr int kAccStride = kHeadDim + 8;
  static constexpr int kMergeBytes = kWarps * kRows * (kAccStride + 2) * 4;
  static constexpr int kSmemBytes = kQBytes + kStages * kStageBytes;
  static_assert(kTileN == kDecodeTileKeys);
  static_assert(kMergeBytes <= kStages * kStageBytes);
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
  const int q_row = p.cu_seqlens_q[b];
  const int q_len = p.cu_seqlens_q[b + 1] - q_row;
  bf16* out = static_cast<bf16*>(p.out);
  if (q_len != 1) {  // not a decode batch: q_len 0 has nothing to do, q_len > 1 is loudly wrong
    for (int i = tid; split == 0 && i < q_len * p.group * kHeadDim; i += C::kThreads) {
      const int t = i / (p.group * kHeadDim), r = i % (p.group * kHeadDim);
      out[(static_cast<int64_t>(q_row + t) * p.num_q_heads + kvh * p.group) * kHeadDim + r] = __float2bfloat16(NAN);
    }
    return;
  }
  const int kv_len = p.kv_lens[b];
  const int first = p.sliding_window > 0 ? max(0, kv_len - p.sliding_window) : 0;
  const int begin = first + split * p.split_len;
  const int end = min(kv_len, begin + p.split_len);
  if (begin >= end) return;  // a shorter sequence needs fewer splits; the reduce skips this one
  const int n_tiles = (end - begin + C::kTileN - 1) / C::kTileN;

  const uint32_t q_tile = attn::smem_u32(smem);
  const uint32_t stages = q_tile + C::kQBytes;
  const bf16* q = static_cast<const bf16*>(p.q) + (static_cast<int64_t>(q_row) * p.num_q_heads + kvh * p.group) * kHeadDim;
  for (int i = tid; i < C::kRows * kChunks; i += C::kThreads) {
    const int r = i / kChunks, c = i % kChunks;
    attn::cp_async_16(q_tile + attn::tile_offset<kHeadDim>(r, c), q + (r < p.group ? r : 0) * kHeadDim + c * 8, r < p.group);
  }
  const attn::PagedRows rows{p.block_tables + static_cast<int64_t>(b) * p.table_stride, p.block_size_log2,
                             static_cast<int64_t>(p.num_kv_heads) * kHeadDim, static_cast<int64_t>(kvh) * kHeadDim};
  const bf16* k_cache = static_cast<const bf16*>(p.k_cache);
  const bf16* v_cache = static_cast<const bf16*>(p.v_cache);
  auto load_tile = [&](int tile) {
    const uint32_t k = stages + (tile % C::kStages) * C::kStageBytes;
    attn::load_kv_tile<kHeadDim, C::kTileN, C::kThreads>(k, k + C::kTileBytes, k_cache, v_cache, rows,
                                                         begin + tile * C::kTileN, begin, end, tid);
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
  const float scale_log2 = p.scale * kLog2e;
  uint32_t qf[kHeadDim / 16][4];
  float o[kHeadDim / 8][4] = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  for (int it = 0; it < n_tiles; ++it) {
    attn::cp_async_wait<C::kStages - 2>();
    __syncthreads();
    if (it == 0) {
#pragma unroll
      for (int kk = 0; kk < kHeadDim / 16; ++kk)
        attn::ldmatrix_x4(qf[kk], q_tile + attn::tile_offset<kHeadDim>(lane % 16, 2 * kk + lane / 16));
    }
    if (it + C::kStages - 1 < n_tiles) load_tile(it + C::kStages - 1);  // into the stage freed at it - 1
    attn::cp_async_commit();

    const uint32_t k_tile = stages + (it % C::kStages) * C::kStageBytes;
    const uint32_t v_tile = k_tile + C::kTileBytes;
    // S [16 heads, 16 keys] = Q K^T for this warp's keys.
    float s[2][4] = {};
#pragma unroll
    for (int kk = 0; kk < kHeadDim / 16; ++kk) {
      uint32_t kb[4];
      attn::ldmatrix_x4(kb, k_tile + attn::chunk_pair(k_lane, kk));
      attn::mma_bf16(s[0], qf[kk], kb[0], kb[1]);
      attn::mma_bf16(s[1], qf[kk], kb[2], kb[3]);
    }
    const int key0 = begin + it * C::kTileN + warp * 16;
    if (key0 + 16 > end) {
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (key0 + j * 8 + 2 * (lane % 4) + (e & 1) >= end) s[j][e] = -INFINITY;
    }
    float rescale[2];
    if (attn::softmax_step<2>(s, m, l, rescale, scale_log2)) {
#pragma unroll
      for (int n = 0; n < kHeadDim / 8; ++n) {
        o[n][0] *= rescale[0];
        o[n][1] *= rescale[0];
        o[n][2] *= rescale[1];
        o[n][3] *= rescale[1];
      }
    }
    const uint32_t pa[4] = {attn::pack_bf16(s[0][0], s[0][1]), attn::pack_bf16(s[0][2], s[0][3]),
                            attn::pack_bf16(s[1][0], s[1][1]), attn::pack_bf16(s[1][2], s[1][3])};
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
  float* acc = reinterpret_cast<float*>(smem + C::kQBytes);             // [warps, rows, kAccStride]
  float* ms = acc + C::kWarps * C::kRows * C::kAccStride;                 // [warps, rows]
  float* ls = ms + C::kWarps * C::kRows;                                  // [warps, rows]
  const int g = lane / 4, t = lane % 4;
  l[0] = attn::quad_sum(l[0]);
  l[1] = attn::quad_sum(l[1]);
#pragma unroll
  for (int n = 0; n < kHeadDim / 8; ++n) {
    float* row = acc + (warp * C::kRows + g) * C::kAccStride + n * 8 + 2 * t;
    *reinterpret_cast<float2*>(row) = make_float2(o[n][0], o[n][1]);
    *reinterpret_cast<float2*>(row + 8 * C::kAccStride) = make_float2(o[n][2], o[n][3]);
  }
  if (t == 0) {
    ms[warp * C::kRows + g] = m[0];
    ms[warp * C::kRows + g + 8] = m[1];
    ls[warp * C::kRows + g] = l[0];
    ls[warp * C::kRows + g + 8] = l[1];
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
    const float inv = 1.f / sum;
    const int head = kvh * p.group + r;
    if (p.num_splits == 1) {
      uint4 packed;
      packed.x = attn::pack_bf16(v[0] * inv, v[1] * inv);
      packed.y = attn::pack_bf16(v[2] * inv, v[3] * inv);
      packed.z = attn::pack_bf16(v[4] * inv, v[5] * inv);
      packed.w = attn::pack_bf16(v[6] * inv, v[7] * inv);
      *reinterpret_cast<uint4*>(out + (static_cast<int64_t>(q_row) * p.num_q_heads + head) * kHeadDim + c * 8) = packed;
    } else {
      const int64_t slot = (static_cast<int64_t>(split) * p.batch + b) * p.num_q_heads + head;
      float4* dst = reinterpret_cast<float4*>(p.partial_o + slot * kHeadDim + c * 8);
      dst[0] = make_float4(v[0] * inv, v[1] * inv, v[2] * inv, v[3] * inv);
      dst[1] = make_float4(v[4] * inv, v[5] * inv, v[6] * inv, v[7] * inv);
      if (c == 0) p.partial_lse[slot] = mx * scale_log2 + __log2f(sum);
    }
  }
}

// Combines the split partials: one CTA per (sequence, query head); warp w takes splits w, w + 4, ..
// and each lane kHeadDim / 32 dims; the 4 warps meet in shared memory. Launched as a programmatic
// dependent of the main kernel, so its launch overlaps the main kernel's tail.
template <int kHeadDim>
__global__ void __launch_bounds__(128) decode_attention_reduce_kernel(const __grid_constant__ PagedAttentionParams p) {
  constexpr int kPerLane = kHeadDim / 32;
  __shared__ float warp_max[4], warp_sum[4];
  __shared__ __align__(16) float warp_acc[4][kHeadDim];
  cudaGridDependencySynchronize();  // the partials of the main kernel are visible after this
  const int b = blockIdx.x / p.num_q_heads, h = blockIdx.x % p.num_q_heads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int q_row = p.cu_seqlens_q[b];
  if (p.cu_seqlens_q[b + 1] - q_row != 1) return;
  const int kv_len = p.kv_lens[b];
  const int first = p.sliding_window > 0 ? max(0, kv_len - p.sliding_window) : 0;
  const int n_splits = (kv_len - first + p.split_len - 1) / p.split_len;
  const int64_t split_stride = static_cast<int64_t>(p.batch) * p.num_q_heads;
  const float* lse = p.partial_lse + static_cast<int64_t>(b) * p.num_q_heads + h;
  const float* po = p.partial_o + (static_cast<int64_t>(b) * p.num_q_heads + h) * kHeadDim + lane * kPerLane;
  float mx = -INFINITY;
  for (int s = threadIdx.x; s < n_splits; s += 128) mx = fmaxf(mx, lse[s * split_stride]);
#pragma unroll
  for (int off = 16; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
  if (lane == 0) warp_max[warp] = mx;
  __syncthreads();
  mx = fmaxf(fmaxf(warp_max[0], warp_max[1]), fmaxf(warp_max[2], warp_max[3]));
  float sum = 0.f, v[kPerLane] = {};
#pragma unroll 4
  for (int s = warp; s < n_splits; s += 4) {
    const float w = attn::exp2_approx(lse[s * split_stride] - mx);
    sum += w;
    const float* src = po + s * split_stride * kHeadDim;
    if constexpr (kPerLane == 4) {
      const float4 x = *reinterpret_cast<const float4*>(src);
      v[0] += w * x.x, v[1] += w * x.y, v[2] += w * x.z, v[3] += w * x.w;
    } else {
      const float2 x = *reinterpret_cast<const float2*>(src);
      v[0] += w * x.x, v[1] += w * x.y;
    }
  }
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) warp_acc[warp][lane * kPerLane + e] = v[e];
  if (lane == 0) warp_sum[warp] = sum;
  __syncthreads();
  if (warp != 0) return;
  const float inv = 1.f / (warp_sum[0] + warp_sum[1] + warp_sum[2] + warp_sum[3]);
  uint32_t packed[kPerLane / 2];
#pragma unroll
  for (int e = 0; e < kPerLane; e += 2) {
    float x[2];
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      const int d = lane * kPerLane + e + k;
      x[k] = (warp_acc[0][d] + warp_acc[1][d] + warp_acc[2][d] + warp_acc[3][d]) * inv;
    }
    packed[e / 2] = attn::pack_bf16(x[0], x[1]);
  }
  bf16* dst = static_cast<bf16*>(p.out) + (static_cast<int64_t>(q_row) * p.num_q_heads + h) * kHeadDim + lane * kPerLane;
  if constexpr (kPerLane == 4) {
    *reinterpret_cast<uint2*>(dst) = make_uint2(packed[0], packed[1]);
  } else {
    *reinterpret_cast<uint32_t*>(dst) = packed[0];
  }
}

template <int kHeadDim>
Status launch_decode(const PagedAttentionParams& p, CUstream_st* stream) {
  using C = DecodeConfig<kHeadDim>;
  static const cudaError_t attr = cudaFuncSetAttribute(decode_attention_kernel<kHeadDim>,
                                                       cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmemBytes);
  if (attr != cudaSuccess) return internal_error(std::string("decode_attention: ") + cudaGetErrorString(attr));
  if (p.batch == 0) return ok_status();
  decode_attention_kernel<kHeadDim>
      <<<dim3(p.num_kv_heads, p.batch, p.num_splits), C::kThreads, C::kSmemBytes, stream>>>(p);
  if (p.num_splits > 1) {
    cudaLaunchAttribute attr_pdl{};
    attr_pdl.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr_pdl.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = dim3(static_cast<unsigned>(p.batch * p.num_q_heads));
    cfg.blockDim = dim3(128);
    cfg.stream = stream;
    cfg.attrs = &attr_pdl;
    cfg.numAttrs = 1;
    const cudaError_t err = cudaLaunchKernelEx(&cfg, decode_attention_reduce_kernel<kHeadDim>, p);
    if (err != cudaSuccess) return internal_error(std::string("decode_attention_reduce launch: ") + cudaGetErrorString(err));
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return internal_error(std::string("decode_attention launch: ") + cudaGetErrorString(err));
  return ok_status();
}

template <int kHeadDim>
int decode_ctas_per_sm() {
  static const int n = [] {
    int ctas = 0;
    (void)cudaFuncSetAttribute(decode_attention_kernel<kHeadDim>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               DecodeConfig<kHeadDim>::kSmemBytes);
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ctas, decode_attention_kernel<kHeadDim>,
                                                      DecodeConfig<kHeadDim>::kThreads,
                                                      DecodeConfig<kHeadDim>::kSmemBytes) != cudaSuccess)
      return 1;
    return ctas > 0 ? ctas : 1;
  }();
  return n;
}

constexpr AttentionVariant kDecodeVariants[] = {
    {DType::kBF16, 64, &launch_decode<64>, &decode_ctas_per_sm<64>},
    {DType::kBF16, 128, &launch_decode<128>, &decode_ctas_per_sm<128>},
};

}  // namespace

std::span<const AttentionVariant> decode_attention_variants() { return kDecodeVariants; }

}  // namespace kiln::cuda
