// RoPE and the KV-cache write fused into the bf16 decode attention kernel
// (PagedAttentionParams::rope, decode_attention_rope_cuda): the CTA of (kv head, sequence, split)
// rotates its group's query heads into its Q tile itself, and the one split that holds the newest
// key rotates that key, writes it and its value into the cache and into its first K/V tiles. The
// same rotation code as rope_kv_write_cuda (rope/rope_device.cuh): the same bits as RoPE, then
// attention. Saves the RoPE kernel and its kernel boundary in every decode layer.
#pragma once
#include <cuda_bf16.h>

#include "kiln/kernels/cuda/attention/attention_device.cuh"
#include "kiln/kernels/cuda/attention/attention_params.h"
#include "kiln/kernels/cuda/common/bf16.cuh"
#include "kiln/kernels/cuda/rope/rope_device.cuh"

namespace kiln::cuda::decode {

// cs[0, d/2) = cos, cs[d/2, d) = sin of the token's angles. Reads only positions and inv_freq (the
// step's metadata, uploaded before it), so it runs before the PDL wait. The caller syncs.
template <int kHeadDim, int kThreads>
__device__ __forceinline__ void rope_table(const PagedAttentionParams& p, int q_row, float* cs, int tid) {
  rope::angle_table(static_cast<float>(p.positions[q_row]), p.inv_freq, kHeadDim / 2, cs, cs + kHeadDim / 2, tid,
                    kThreads);
}

// The group's q heads [kvh group, + group) of token q_row, rotated and rounded to bf16, into the
// swizzled Q tile (tile_offset layout, kRows rows; rows >= group zero). After the PDL wait.
template <int kHeadDim, int kRows, int kThreads>
__device__ __forceinline__ void rope_q_tile(const PagedAttentionParams& p, int q_row, int kvh, uint8_t* q_tile,
                                            const float* cs, int tid) {
  constexpr int kHalfChunks = kHeadDim / 16;  // 8-element pieces per half head
  const __nv_bfloat16* q =
      static_cast<const __nv_bfloat16*>(p.q) + static_cast<int64_t>(q_row) * p.q_stride + kvh * p.group * kHeadDim;
  for (int i = tid; i < kRows * kHalfChunks; i += kThreads) {
    const int r = i / kHalfChunks, c = i % kHalfChunks;
    uint4 lo = make_uint4(0, 0, 0, 0), hi = lo;
    if (r < p.group) {
      float x1[8], x2[8];
      load_bf16x8(q + r * kHeadDim + c * 8, x1);
      load_bf16x8(q + r * kHeadDim + kHeadDim / 2 + c * 8, x2);
      rope::rotate_pair(x1, x2, cs + c * 8, cs + kHeadDim / 2 + c * 8);
      lo = f32_to_bf16x8(x1);
      hi = f32_to_bf16x8(x2);
    }
    *reinterpret_cast<uint4*>(q_tile + attn::tile_offset<kHeadDim>(r, c)) = lo;
    *reinterpret_cast<uint4*>(q_tile + attn::tile_offset<kHeadDim>(r, c + kHalfChunks)) = hi;
  }
}

// The newest key of (token q_row, kv head kvh): k rotated and rounded to bf16, v as is, written to
// the cache at slots[q_row] (when inside the cache) and, when k_tile is not null, into row `row`
// of the K / V tiles (tile_offset layout). Threads [0, 3 kHeadDim / 16) of the CTA work.
template <int kHeadDim>
__device__ __forceinline__ void rope_newest_kv(const PagedAttentionParams& p, int q_row, int kvh, uint8_t* k_tile,
                                               uint8_t* v_tile, int row, const float* cs, int tid) {
  constexpr int kHalfChunks = kHeadDim / 16, kChunks = kHeadDim / 8;
  const int64_t slot = p.slots[q_row];
  const bool write = slot >= 0 && slot < p.num_slots;
  const int64_t cache_off = (slot * p.num_kv_heads + kvh) * kHeadDim;
  if (tid < kHalfChunks) {
    const int c = tid;
    const __nv_bfloat16* k =
        static_cast<const __nv_bfloat16*>(p.k_new) + static_cast<int64_t>(q_row) * p.k_stride + kvh * kHeadDim;
    float x1[8], x2[8];
    load_bf16x8(k + c * 8, x1);
    load_bf16x8(k + kHeadDim / 2 + c * 8, x2);
    rope::rotate_pair(x1, x2, cs + c * 8, cs + kHeadDim / 2 + c * 8);
    const uint4 lo = f32_to_bf16x8(x1), hi = f32_to_bf16x8(x2);
    if (write) {
      __nv_bfloat16* kc = static_cast<__nv_bfloat16*>(const_cast<void*>(p.k_cache)) + cache_off;
      *reinterpret_cast<uint4*>(kc + c * 8) = lo;
      *reinterpret_cast<uint4*>(kc + kHeadDim / 2 + c * 8) = hi;
    }
    if (k_tile) {
      *reinterpret_cast<uint4*>(k_tile + attn::tile_offset<kHeadDim>(row, c)) = lo;
      *reinterpret_cast<uint4*>(k_tile + attn::tile_offset<kHeadDim>(row, c + kHalfChunks)) = hi;
    }
  } else if (tid < kHalfChunks + kChunks) {
    const int c = tid - kHalfChunks;
    const uint4 v = *reinterpret_cast<const uint4*>(static_cast<const __nv_bfloat16*>(p.v_new) +
                                                    static_cast<int64_t>(q_row) * p.v_stride + kvh * kHeadDim + c * 8);
    if (write)
      *reinterpret_cast<uint4*>(static_cast<__nv_bfloat16*>(const_cast<void*>(p.v_cache)) + cache_off + c * 8) = v;
    if (v_tile) *reinterpret_cast<uint4*>(v_tile + attn::tile_offset<kHeadDim>(row, c)) = v;
  }
}

}  // namespace kiln::cuda::decode
