// Merging decode attention's partial softmax states, shared by the bf16 and fp8 decode kernels
// (128-thread CTAs of 4 warps, one kv head's 16-row group of query heads each): across the warps
// of a CTA (each warp saw a quarter of every key tile), then across the split-K CTAs of one
// (sequence, kv head), merged by whichever of them finishes last (an atomic counter, no second
// kernel), or, with p.cluster_merge, by split 0 of their thread-block cluster over distributed
// shared memory. Also the NaN rows a non-decode batch gets.
#pragma once
#include <cooperative_groups.h>

#include "kiln/kernels/cuda/attention/attention_device.cuh"
#include "kiln/kernels/cuda/common/pdl.cuh"

namespace kiln::cuda::decode {

using bf16 = __nv_bfloat16;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRows = 16;  // query heads of one group, padded to an mma tile

// The warps' states in shared memory after the key loop: [warps, rows, kAccStride] f32
// accumulators (the +8 puts the 8 rows of a half-warp's float2 stores in distinct banks), then
// [warps, rows] running maxima and sums.
template <int kHeadDim>
struct WarpStates {
  static constexpr int kAccStride = kHeadDim + 8;
  static constexpr int kBytes = kWarps * kRows * (kAccStride + 2) * 4;
  float* acc;
  float* m;
  float* l;
  __device__ explicit WarpStates(uint8_t* scratch)
      : acc(reinterpret_cast<float*>(scratch)),
        m(acc + kWarps * kRows * kAccStride),
        l(m + kWarps * kRows) {}
  __device__ float* row(int warp, int r) const { return acc + (warp * kRows + r) * kAccStride; }
};

// merge_splits' scratch: [kMaxDecodeSplits, 16] weights, 16 inverse sums, then up to
// max(16 * d / 4, kThreads) float4 shares.
template <int kHeadDim>
constexpr int kSplitMergeBytes = (kMaxDecodeSplits * kRows + kRows) * 4 + (kRows * kHeadDim / 4 + kThreads) * 16;

// A warp's running max m (score units) and thread-partial sum l of its rows g and g + 8
// (g = lane / 4), reduced over the quad, into the WarpStates; the accumulators are stored by the
// kernel (their column layout is the kernel's).
template <int kHeadDim>
__device__ __forceinline__ void store_warp_max_sum(const WarpStates<kHeadDim>& st, const float (&m)[2],
                                                   const float (&l_part)[2], int warp, int lane) {
  const float l0 = attn::quad_sum(l_part[0]), l1 = attn::quad_sum(l_part[1]);
  const int g = lane / 4;
  if (lane % 4 == 0) {
    st.m[warp * kRows + g] = m[0];
    st.m[warp * kRows + g + 8] = m[1];
    st.l[warp * kRows + g] = l0;
    st.l[warp * kRows + g + 8] = l1;
  }
}

// Combines the 4 warps' (m, l, O) of one CTA (stored, then a __syncthreads) and writes the group's
// output rows (one split) or this split's partial (O / l and log2 of its softmax sum): to the
// workspace, or (p.cluster_merge) into this CTA's WarpStates, O of row r over warp 0's row r and
// its log2 sum at warp 1's row r (each (row, chunk) is read and written by one thread).
// out_scale multiplies O (the fp8 cache's V scale and storage factor; 1 for bf16).
template <int kHeadDim>
__device__ __forceinline__ void merge_warp_states(const PagedAttentionParams& p, const WarpStates<kHeadDim>& st, int b,
                                                  int kvh, int split, int q_row, float scale_log2, float out_scale) {
  constexpr int kChunks = kHeadDim / 8;
  for (int i = threadIdx.x; i < p.group * kChunks; i += kThreads) {
    const int r = i / kChunks, c = i % kChunks;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, st.m[w * kRows + r]);
    float sum = 0.f, v[8] = {};
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float f = attn::exp2_approx((st.m[w * kRows + r] - mx) * scale_log2);  // 0 for an idle warp
      sum += f * st.l[w * kRows + r];
      const float4* src = reinterpret_cast<const float4*>(st.row(w, r) + c * 8);
      const float4 lo = src[0], hi = src[1];
      v[0] += f * lo.x, v[1] += f * lo.y, v[2] += f * lo.z, v[3] += f * lo.w;
      v[4] += f * hi.x, v[5] += f * hi.y, v[6] += f * hi.z, v[7] += f * hi.w;
    }
    const float inv = out_scale / sum;
    const int head = kvh * p.group + r;
    if (p.num_splits == 1) {
      const uint4 packed = {attn::pack_bf16(v[0] * inv, v[1] * inv), attn::pack_bf16(v[2] * inv, v[3] * inv),
                            attn::pack_bf16(v[4] * inv, v[5] * inv), attn::pack_bf16(v[6] * inv, v[7] * inv)};
      bf16* out = static_cast<bf16*>(p.out) + (static_cast<int64_t>(q_row) * p.num_q_heads + head) * kHeadDim;
      *reinterpret_cast<uint4*>(out + c * 8) = packed;
    } else if (p.cluster_merge) {
      float4* dst = reinterpret_cast<float4*>(st.row(0, r) + c * 8);
      dst[0] = make_float4(v[0] * inv, v[1] * inv, v[2] * inv, v[3] * inv);
      dst[1] = make_float4(v[4] * inv, v[5] * inv, v[6] * inv, v[7] * inv);
      if (c == 0) st.row(1, r)[0] = mx * scale_log2 + __log2f(sum);
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
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, group = p.group;
  const int64_t split_stride = static_cast<int64_t>(p.batch) * p.num_q_heads;  // slots between splits
  const int64_t slot0 = static_cast<int64_t>(b) * p.num_q_heads + kvh * group;
  float* weight = scratch;                                   // [n_splits, group]
  float* inv_sum = weight + kMaxDecodeSplits * kRows;        // [group]
  float4* shares = reinterpret_cast<float4*>(inv_sum + 16);  // [share, item], 16-byte aligned
  for (int i = tid; i < n_splits * group; i += kThreads)
    weight[i] = __ldcg(p.partial_lse + slot0 + (i / group) * split_stride + i % group);
  __syncthreads();
  for (int r = warp; r < group; r += kWarps) {
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
  const int items = group * kSlices, n_shares = max(1, kThreads / items);
  for (int i = tid; i < items * n_shares; i += kThreads) {
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
  for (int item = tid; item < items; item += kThreads) {
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

// After merge_warp_states wrote this split's partial: counts the split done and, in the last CTA
// of this (sequence, kv head) to finish, merges every split's partial into the output. All
// threads call it; `scratch` is shared memory of kSplitMergeBytes.
template <int kHeadDim>
__device__ __forceinline__ void finish_split(const PagedAttentionParams& p, int b, int kvh, int n_splits, int q_row,
                                             uint8_t* scratch) {
  __shared__ int last;
  // fence.acq_rel rather than __threadfence's sequentially consistent MEMBAR.SC: the release of
  // this CTA's partials before its count (and below, the acquire of the others' after it) is all
  // the merge needs.
  asm volatile("fence.acq_rel.gpu;" ::: "memory");
  __syncthreads();
  if (threadIdx.x == 0) {
    int* counter = p.split_counters + static_cast<int64_t>(b) * p.num_kv_heads + kvh;
    last = atomicAdd(counter, 1) == n_splits - 1;
    if (last) *counter = 0;  // every split has counted: reset for the next launch
  }
  __syncthreads();
  if (!last) return;
  asm volatile("fence.acq_rel.gpu;" ::: "memory");
  merge_splits<kHeadDim>(p, b, kvh, n_splits, q_row, reinterpret_cast<float*>(scratch));
}

// p.cluster_merge, after merge_warp_states left this split's partial in `st`: a cluster barrier
// (release / acquire: every split's partial is visible), then split 0 combines the first n_splits
// CTAs' partials read from their shared memory (each thread one 4-float slice of a head's row, an
// online merge over the splits, 4 splits' loads at a time), and a second barrier keeps the
// others' shared memory until it has. Every CTA of the cluster calls it, those without keys too
// (cluster_idle_split). Not inlined: inlined, ptxas spilled 8-16 bytes in the 96-register fp8
// kernel (5 CTAs per SM), whose key loop is the hot part.
template <int kHeadDim>
__device__ __noinline__ void finish_split_cluster(const PagedAttentionParams& p, const WarpStates<kHeadDim>& st,
                                                     int kvh, int n_splits, int q_row) {
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();
  if (cluster.block_rank() == 0) {
    constexpr int kSlices = kHeadDim / 4;
    bf16* out = static_cast<bf16*>(p.out) + (static_cast<int64_t>(q_row) * p.num_q_heads + kvh * p.group) * kHeadDim;
    for (int item = threadIdx.x; item < p.group * kSlices; item += kThreads) {
      const int r = item / kSlices, slice = item % kSlices;
      float mx = -INFINITY, sum = 0.f;
      float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 4
      for (int s = 0; s < n_splits; ++s) {
        const float4 o = *reinterpret_cast<const float4*>(cluster.map_shared_rank(st.row(0, r) + slice * 4, s));
        const float lse = *cluster.map_shared_rank(st.row(1, r), s);
        const float m_new = fmaxf(mx, lse), a = attn::exp2_approx(mx - m_new), w = attn::exp2_approx(lse - m_new);
        mx = m_new;
        sum = sum * a + w;
        acc.x = acc.x * a + w * o.x, acc.y = acc.y * a + w * o.y, acc.z = acc.z * a + w * o.z, acc.w = acc.w * a + w * o.w;
      }
      const float inv = 1.f / sum;
      *reinterpret_cast<uint2*>(out + r * kHeadDim + slice * 4) =
          make_uint2(attn::pack_bf16(acc.x * inv, acc.y * inv), attn::pack_bf16(acc.z * inv, acc.w * inv));
    }
  }
  cluster.sync();
}

// A CTA of a p.cluster_merge launch whose split has no keys (past a shorter sequence's end) still
// takes part in its cluster's two barriers.
__device__ __forceinline__ void cluster_idle_split() {
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();
  cluster.sync();
}

// After merge_warp_states, with split K: this (sequence, kv head)'s splits combined, in the
// cluster's shared memory or through the workspace. All threads call it.
template <int kHeadDim>
__device__ __forceinline__ void finish_splits(const PagedAttentionParams& p, const WarpStates<kHeadDim>& st, int b,
                                              int kvh, int kv_len, int first, int q_row, uint8_t* scratch) {
  if (p.num_splits == 1) return;
  const int n_splits = (kv_len - first + p.split_len - 1) / p.split_len;
  if (p.cluster_merge)
    finish_split_cluster<kHeadDim>(p, st, kvh, n_splits, q_row);
  else
    finish_split<kHeadDim>(p, b, kvh, n_splits, q_row, scratch);
}

// A sequence with q_len != 1 is no decode: q_len 0 has nothing to do, q_len > 1 gets NaN rows
// (loudly wrong; the entry point never sends one). Split 0's CTA writes them.
template <int kHeadDim>
__device__ __forceinline__ void write_nan_rows(const PagedAttentionParams& p, int q_row, int q_len, int kvh) {
  bf16* out = static_cast<bf16*>(p.out);
  for (int i = threadIdx.x; i < q_len * p.group * kHeadDim; i += kThreads) {
    const int t = i / (p.group * kHeadDim), r = i % (p.group * kHeadDim);
    out[(static_cast<int64_t>(q_row + t) * p.num_q_heads + kvh * p.group) * kHeadDim + r] = __float2bfloat16(NAN);
  }
}

// The keys [begin, end) that split `split` of sequence b covers, and b's query row. False when the
// CTA has nothing to do: a q_len != 1 row (its NaN rows written by split 0; so for every split of
// the sequence) or a split past a shorter sequence's end (it does not count toward the merge; it has
// triggered the next kernel, and with p.cluster_merge taken part in its cluster's barriers when
// this returns). The three
// metadata loads go out together: a kernel's start is a chain of dependent loads.
struct SplitKeys {
  int q_row, kv_len, first, begin, end;  // first: the window's first key (0 without one)
};
template <int kHeadDim>
__device__ __forceinline__ bool split_keys(const PagedAttentionParams& p, int b, int kvh, int split, SplitKeys& r) {
  r.q_row = p.cu_seqlens_q[b];
  const int q_len = p.cu_seqlens_q[b + 1] - r.q_row;
  r.kv_len = p.kv_lens[b];
  if (q_len != 1) {
    cuda::pdl_wait();  // the kernels call this before their wait: the NaN rows are a write
    if (split == 0) write_nan_rows<kHeadDim>(p, r.q_row, q_len, kvh);
    return false;
  }
  r.first = p.sliding_window > 0 ? max(0, r.kv_len - p.sliding_window) : 0;
  r.begin = r.first + split * p.split_len;
  r.end = min(r.kv_len, r.begin + p.split_len);
  if (r.begin < r.end) return true;
  // The next kernel (PDL) is launched only once every CTA of this grid has triggered or exited, and
  // an idle split of a cluster launch stays in its cluster's barriers until the merge is done: so
  // it triggers first. Batch-1 decode graphs, captured for a longer context than the sequence's,
  // have such splits; without this o_proj launched only after attention ended (perf.md, session 29).
  cuda::pdl_trigger();
  if (p.cluster_merge) cluster_idle_split();
  return false;
}

}  // namespace kiln::cuda::decode
