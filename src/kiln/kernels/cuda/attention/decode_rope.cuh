// RoPE and the KV-cache write fused into the decode attention kernels (PagedAttentionParams::rope,
// decode_attention_rope_cuda): the CTA of (kv head, sequence, split) rotates its group's query
// heads itself, and the one split that holds the newest key rotates that key, writes it and its
// value into the cache (fp8 caches: quantized, after the Hadamard rotation when asked) and into its
// first K/V tiles. The same rotation code as rope_kv_write_cuda (rope/rope_device.cuh): the same
// bits as RoPE, then attention. Saves the RoPE kernel and its kernel boundary in every decode layer.
#pragma once
#include <cuda_bf16.h>

#include "kiln/kernels/cuda/attention/attention_device.cuh"
#include "kiln/kernels/cuda/attention/attention_params.h"
#include "kiln/kernels/cuda/attention/decode_merge.cuh"
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

// The group's q heads [kvh group, + group) of token q_row, unrotated.
__device__ __forceinline__ const __nv_bfloat16* group_q(const PagedAttentionParams& p, int q_row, int kvh, int head_dim) {
  return static_cast<const __nv_bfloat16*>(p.q) + static_cast<int64_t>(q_row) * p.q_stride + kvh * p.group * head_dim;
}

// The group's q heads of token q_row rotated and rounded to bf16, in pieces of 8 pairs: threads
// i0, i0 + stride, ... call store(r, c, lo, hi) for head r < kRows (rows >= group: zeros), lo =
// elements [8c, 8c + 8), hi = [d/2 + 8c, + 8).
template <int kHeadDim, int kRows, typename Store>
__device__ __forceinline__ void rotated_q_pieces(const PagedAttentionParams& p, int q_row, int kvh, const float* cs,
                                                 int i0, int stride, Store store) {
  constexpr int kHalfChunks = kHeadDim / 16;  // 8-element pieces per half head
  const __nv_bfloat16* q = group_q(p, q_row, kvh, kHeadDim);
  for (int i = i0; i < kRows * kHalfChunks; i += stride) {
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
    store(r, c, lo, hi);
  }
}

// The group's q heads of token q_row, rotated and rounded to bf16, into the swizzled Q tile
// (tile_offset layout, kRows rows; rows >= group zero). After the PDL wait.
template <int kHeadDim, int kRows, int kThreads>
__device__ __forceinline__ void rope_q_tile(const PagedAttentionParams& p, int q_row, int kvh, uint8_t* q_tile,
                                            const float* cs, int tid) {
  rotated_q_pieces<kHeadDim, kRows>(p, q_row, kvh, cs, tid, kThreads, [&](int r, int c, uint4 lo, uint4 hi) {
    *reinterpret_cast<uint4*>(q_tile + attn::tile_offset<kHeadDim>(r, c)) = lo;
    *reinterpret_cast<uint4*>(q_tile + attn::tile_offset<kHeadDim>(r, c + kHeadDim / 16)) = hi;
  });
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

// ---- fp8 e4m3 caches (decode_attention_fp8.cu) ---------------------------------------------

// The newest key and value of (token q_row, kv head kvh) for an fp8 cache, as one warp holds them
// between their loads and their quantization: with p.rope_hadamard lane l has k elements [l E,
// l E + E); else lanes < d / 16 have k's pieces [8 l, + 8) and [d/2 + 8 l, + 8); lanes < d / 8
// have v's [8 l, + 8).
template <int kHeadDim>
struct NewestKvFp8 {
  float k1[8], k2[8], v[8];
};

// Issues the loads of NewestKvFp8 (no use of them yet, so a warp's later loads overlap them).
template <int kHeadDim>
__device__ __forceinline__ void load_newest_kv_fp8(const PagedAttentionParams& p, int q_row, int kvh, int lane,
                                                   NewestKvFp8<kHeadDim>& nk) {
  const __nv_bfloat16* k =
      static_cast<const __nv_bfloat16*>(p.k_new) + static_cast<int64_t>(q_row) * p.k_stride + kvh * kHeadDim;
  const __nv_bfloat16* v =
      static_cast<const __nv_bfloat16*>(p.v_new) + static_cast<int64_t>(q_row) * p.v_stride + kvh * kHeadDim;
  if (p.rope_hadamard) {
    constexpr int E = kHeadDim / 32;
#pragma unroll
    for (int j = 0; j < E; ++j) nk.k1[j] = __bfloat162float(k[lane * E + j]);
  } else if (lane < kHeadDim / 16) {
    load_bf16x8(k + lane * 8, nk.k1);
    load_bf16x8(k + kHeadDim / 2 + lane * 8, nk.k2);
  }
  if (lane < kHeadDim / 8) load_bf16x8(v + lane * 8, nk.v);
}

// The group's q heads of token q_row rotated (RoPE, then with p.rope_hadamard the Walsh-Hadamard
// transform) and rounded to bf16, into q_s [kRows, kHeadDim] (rows >= group zero); the 4 warps
// of the CTA. A warp issues the loads of all its rows before it rotates any (one load latency).
template <int kHeadDim, int kRows>
__device__ __forceinline__ void rope_q_rows(const PagedAttentionParams& p, int q_row, int kvh, __nv_bfloat16* q_s,
                                            const float* cs, int warp, int lane) {
  const __nv_bfloat16* q = group_q(p, q_row, kvh, kHeadDim);
  if (p.rope_hadamard) {  // a warp per head, E elements a lane (rope_kv_write_hadamard_kernel's layout)
    constexpr int E = kHeadDim / 32, kPerWarp = kRows / decode::kWarps;
    static_assert(kRows % decode::kWarps == 0);
    float x[kPerWarp][E];
#pragma unroll
    for (int i = 0; i < kPerWarp; ++i) {
      const int r = warp + i * decode::kWarps;
#pragma unroll
      for (int j = 0; j < E; ++j) x[i][j] = r < p.group ? __bfloat162float(q[r * kHeadDim + lane * E + j]) : 0.f;
    }
#pragma unroll
    for (int i = 0; i < kPerWarp; ++i) {
      const int r = warp + i * decode::kWarps;
      if (r < p.group) rope::rope_hadamard<E, 32>(x[i], lane, 0xffffffffu, cs, cs + kHeadDim / 2, p.hadamard_norm);
#pragma unroll
      for (int j = 0; j < E; ++j) q_s[r * kHeadDim + lane * E + j] = __float2bfloat16_rn(x[i][j]);
    }
    return;
  }
  rotated_q_pieces<kHeadDim, kRows>(p, q_row, kvh, cs, warp * 32 + lane, decode::kThreads,
                                    [&](int r, int c, uint4 lo, uint4 hi) {
                                      *reinterpret_cast<uint4*>(q_s + r * kHeadDim + c * 8) = lo;
                                      *reinterpret_cast<uint4*>(q_s + r * kHeadDim + kHeadDim / 2 + c * 8) = hi;
                                    });
}

// The newest key of (token q_row, kv head kvh) into an fp8 cache, by one warp, from its loads nk:
// k rotated (and Hadamard-rotated with p.rope_hadamard) and quantized from f32 as fp8(x /
// k_scale), v quantized, both written at slots[q_row] (when inside the cache) and, when k_rows is
// not null, into row `row` of a warp's raw [16, kHeadDim] K / V tiles (attn::fp8_tile_offset layout).
template <int kHeadDim>
__device__ __forceinline__ void rope_newest_kv_fp8(const PagedAttentionParams& p, int q_row, int kvh, uint8_t* k_rows,
                                                   uint8_t* v_rows, int row, const float* cs, int lane,
                                                   NewestKvFp8<kHeadDim>& nk) {
  const int64_t slot = p.slots[q_row];
  const bool write = slot >= 0 && slot < p.num_slots;
  uint8_t* kc = static_cast<uint8_t*>(const_cast<void*>(p.k_cache)) + (slot * p.num_kv_heads + kvh) * kHeadDim;
  uint8_t* vc = static_cast<uint8_t*>(const_cast<void*>(p.v_cache)) + (slot * p.num_kv_heads + kvh) * kHeadDim;
  auto put = [&](uint8_t* cache, uint8_t* tile, int at, const uint8_t* bytes, int n) {
#pragma unroll 8
    for (int j = 0; j < n; ++j) {
      if (write) cache[at + j] = bytes[j];
      if (tile) tile[attn::fp8_tile_offset<kHeadDim>(row * kHeadDim + at + j)] = bytes[j];
    }
  };
  if (p.rope_hadamard) {
    constexpr int E = kHeadDim / 32;
    float x[E];
#pragma unroll
    for (int j = 0; j < E; ++j) x[j] = nk.k1[j];
    rope::rope_hadamard<E, 32>(x, lane, 0xffffffffu, cs, cs + kHeadDim / 2, p.hadamard_norm);
    uint8_t b[E];
#pragma unroll
    for (int j = 0; j < E; ++j) b[j] = static_cast<uint8_t>(rope::quantize_fp8(x[j], p.k_scale));
    put(kc, k_rows, lane * E, b, E);
  } else if (lane < kHeadDim / 16) {
    const int c = lane;
    rope::rotate_pair(nk.k1, nk.k2, cs + c * 8, cs + kHeadDim / 2 + c * 8);
    const uint2 lo = rope::quantize_fp8x8(nk.k1, p.k_scale), hi = rope::quantize_fp8x8(nk.k2, p.k_scale);
    put(kc, k_rows, c * 8, reinterpret_cast<const uint8_t*>(&lo), 8);
    put(kc, k_rows, kHeadDim / 2 + c * 8, reinterpret_cast<const uint8_t*>(&hi), 8);
  }
  if (lane < kHeadDim / 8) {
    const uint2 q = rope::quantize_fp8x8(nk.v, p.v_scale);
    put(vc, v_rows, lane * 8, reinterpret_cast<const uint8_t*>(&q), 8);
  }
}

}  // namespace kiln::cuda::decode
