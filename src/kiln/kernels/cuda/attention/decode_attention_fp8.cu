// Decode attention over an fp8 e4m3 paged KV cache (q_len == 1 per sequence), GQA-aware like the
// bf16 kernel (decode_attention.cu): one CTA per (kv head, sequence, KV split) computes all query
// heads of the group, 4 warps take 16 keys each of a 64-key tile, split-K partials are merged
// in-kernel by the last CTA (decode_merge.cuh). The cache bytes go global -> shared raw (cp.async,
// each warp its own rows, no CTA barrier in the loop) and from there straight into f16 mma
// operands in registers (no widened copy in shared memory: each byte crosses shared memory once).
// The products are transposed, S^T = K Q^T and O^T = V^T P^T, so that the group's heads are the
// mma's n = 8: no padded rows, ~95 registers and 40 KB of shared memory (d128) per CTA, 5 CTAs
// (20 warps) per SM. k_scale and v_scale fold into the softmax scale and the output.
//
// Layouts (g = lane / 4, t = lane % 4; mma fragments as in attention_device.cuh), chosen so that
// every lane reads whole 16-byte (8-byte for d64 V) runs of cache rows from shared memory:
//  - keys: S^T row g is key 4 (g / 2) + g % 2 of the warp's 16, row g + 8 that key + 2, so that
//    P^T's k index 2t, 2t + 1, 2t + 8, 2t + 9 (S^T rows moved to B by movmatrix) is keys
//    4t .. 4t + 3: the 4 V rows this lane reads;
//  - K (A operand): lane (g, t) reads bytes [t d/4, (t + 1) d/4) of its 2 keys; the k index of
//    chunk kk maps to head-dim element t d/4 + 4 kk + {0, 1, 2, 3} (cvt) or {0, 2, 1, 3} (bit
//    moves), and Q^T's B fragments are gathered the same way;
//  - V^T (A operand): lane (g, t) reads bytes [g d/8, (g + 1) d/8) of keys 4t .. 4t + 3; rows g,
//    g + 8 of m-tile mt are head-dim elements g d/8 + 2 mt and + 1, put back in order when the
//    warps merge.
// Variants: head_dim {64, 128} x group {<= 8: one head tile, <= 16: two}, and the unpacking and
// CTAs per SM of the explicit configurations below (the bench compares them).
#include <cuda_runtime.h>

#include <climits>
#include <string>

#include "kiln/kernels/cuda/attention/decode_merge.cuh"
#include "kiln/kernels/cuda/attention/decode_rope.cuh"
#include "kiln/kernels/cuda/common/pdl.cuh"

namespace kiln::cuda {
namespace {

using bf16 = __nv_bfloat16;

// How e4m3 bytes become f16 mma operands: the conversion unit (cvt, exact values), bit moves on
// the integer pipe (attn::e4m3x2_to_f16x2, values * 2^-8), or cvt for K and bit moves for V.
enum class Fp8Unpack { kBits, kCvt, kCvtK };

// Shared memory: [kStages][kWarps][K rows | V rows] of [16, kHeadDim] e4m3 tiles, swizzled
// (attn::fp8_tile_offset); after the loop the same bytes hold the merges' scratch. More resident
// CTAs, fewer stages: 5 per SM keep one tile in flight per warp beyond the one computed (20 warps
// x 4 KB per SM), enough for the copy bandwidth when the grid fills them (the bench's 2 per SM rows
// keep 5).
template <int kHeadDim, Fp8Unpack kUnpack, int kMinBlocks>
struct Fp8DecodeConfig {
  static constexpr int kKeys = 16;  // keys per warp per stage
  static constexpr int kTileN = decode::kWarps * kKeys;
  static constexpr int kStages = kMinBlocks >= 5 ? 2 : kMinBlocks == 4 ? 3 : kMinBlocks == 3 ? 4 : 6;
  static constexpr int kWarpTileBytes = kKeys * kHeadDim;  // a warp's K (or V) rows of one stage
  static constexpr int kWarpStageBytes = 2 * kWarpTileBytes;
  static constexpr int kStageBytes = decode::kWarps * kWarpStageBytes;
  static constexpr int kPipeBytes = kStages * kStageBytes;
  static constexpr int kMergeBytes = decode::WarpStates<kHeadDim>::kBytes > decode::kSplitMergeBytes<kHeadDim>
                                         ? decode::WarpStates<kHeadDim>::kBytes
                                         : decode::kSplitMergeBytes<kHeadDim>;
  // p.rope: the rotated Q rows (bf16) and the token's cos | sin after the pipeline (inside the
  // merge scratch's bytes where it is larger, so that 5 CTAs still fit per SM).
  static constexpr int kRopeBytes = decode::kRows * kHeadDim * 2 + kHeadDim * 4;
  static constexpr int kSmemBytes = kPipeBytes + kRopeBytes > kMergeBytes ? kPipeBytes + kRopeBytes : kMergeBytes;
  static constexpr int kKSlice = kHeadDim / 4;  // bytes of a K row one lane reads
  static constexpr int kVSlice = kHeadDim / 8;  // bytes of a V row one lane reads
  static constexpr int kKK = kHeadDim / 16;     // k chunks of Q K^T
  static constexpr bool kBitsK = kUnpack == Fp8Unpack::kBits, kBitsV = kUnpack != Fp8Unpack::kCvt;
  static constexpr float kKFactor = kBitsK ? attn::kFp8F16Factor : 1.f;  // real K = operand * kKFactor
  static constexpr float kVFactor = kBitsV ? attn::kFp8F16Factor : 1.f;
  static_assert(kTileN == kDecodeTileKeys);
};

// Q row r of the group (r >= group: zero) as f16 Q^T B fragments in the K operand's head-dim order,
// e = t d/4 + 4 kk: bit-moved K (kBitsK) lo[kk] = (q[e], q[e + 2]), hi[kk] = (q[e + 1], q[e + 3]);
// converted K lo = (q[e], q[e + 1]), hi = (q[e + 2], q[e + 3]). |q| beyond the f16 range
// saturates to +-65504 (NaN stays NaN); bf16 values inside it are exact in f16.
template <int kHeadDim, bool kBitsK>
__device__ __forceinline__ void load_q_fragments(const bf16* q, int r, int group, int t, uint32_t (&lo)[kHeadDim / 16],
                                                 uint32_t (&hi)[kHeadDim / 16]) {
  constexpr int kSlice = kHeadDim / 4;
  auto sat = [](float x) { return fabsf(x) > 65504.f ? copysignf(65504.f, x) : x; };
#pragma unroll
  for (int i = 0; i < kSlice / 8; ++i) {
    uint4 w = make_uint4(0, 0, 0, 0);
    if (r < group) w = *reinterpret_cast<const uint4*>(q + r * kHeadDim + t * kSlice + i * 8);
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
    float f[8];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      f[2 * j] = sat(__uint_as_float(words[j] << 16));
      f[2 * j + 1] = sat(__uint_as_float(words[j] & 0xffff0000u));
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      constexpr int kStep = kBitsK ? 2 : 1, kHi = kBitsK ? 1 : 2;
      lo[2 * i + h] = attn::pack_f16(f[4 * h], f[4 * h + kStep]);
      hi[2 * i + h] = attn::pack_f16(f[4 * h + kHi], f[4 * h + kHi + kStep]);
    }
  }
}

// 16-byte (or 8-byte) shared loads of a lane's slices, as 32-bit words.
template <int kWords>
__device__ __forceinline__ void load_shared_words(uint32_t addr, uint32_t* w) {
  static_assert(kWords == 2 || kWords == 4);
  if constexpr (kWords == 4) {
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(w[0]), "=r"(w[1]), "=r"(w[2]), "=r"(w[3])
                 : "r"(addr));
  } else {
    asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];\n" : "=r"(w[0]), "=r"(w[1]) : "r"(addr));
  }
}

// Async-copies one warp's 16 keys of a tile (K and V rows from key0) into its swizzled stage
// tiles: keys in [copy_lo, copy_hi) from the cache, keys >= zero_from zero-filled (never read from
// the cache: their block table entries may be garbage; a zero V row keeps P V finite), the others
// left as they are (a kernel's newest key, copied after its griddepcontrol.wait). When the 16 keys
// lie in one cache block (block size >= 16, key0 aligned) and are all copied, one table lookup
// serves all of them.
template <int kHeadDim>
__device__ __forceinline__ void load_warp_keys(uint32_t k_dst, uint32_t v_dst, const uint8_t* k_cache,
                                               const uint8_t* v_cache, const attn::PagedRows& rows, int key0,
                                               int copy_lo, int copy_hi, int zero_from, int lane) {
  constexpr int kChunks = kHeadDim / 16, kRowsPerPass = 32 / kChunks, kPasses = 16 / kRowsPerPass;
  const int r0 = lane / kChunks, c = lane % kChunks;
  if (rows.log2_bs >= 4 && (key0 & 15) == 0 && key0 >= copy_lo && key0 + 16 <= copy_hi) {
    const int64_t slot = (static_cast<int64_t>(rows.table[key0 >> rows.log2_bs]) << rows.log2_bs) +
                         (key0 & ((1 << rows.log2_bs) - 1)) + r0;
    const int64_t off = slot * rows.token_stride + rows.head_offset + c * 16;
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
      const uint32_t dst = attn::fp8_tile_offset<kHeadDim>((r0 + i * kRowsPerPass) * kHeadDim + c * 16);
      const int64_t src = off + i * kRowsPerPass * rows.token_stride;
      attn::cp_async_16(k_dst + dst, k_cache + src, true);
      attn::cp_async_16(v_dst + dst, v_cache + src, true);
    }
    return;
  }
#pragma unroll
  for (int i = 0; i < kPasses; ++i) {
    const int r = r0 + i * kRowsPerPass;
    const bool copy = key0 + r >= copy_lo && key0 + r < copy_hi;
    if (!copy && key0 + r < zero_from) continue;
    const int64_t off = copy ? rows.offset(key0 + r) + c * 16 : 0;
    const uint32_t dst = attn::fp8_tile_offset<kHeadDim>(r * kHeadDim + c * 16);
    attn::cp_async_16(k_dst + dst, k_cache + off, copy);
    attn::cp_async_16(v_dst + dst, v_cache + off, copy);
  }
}

// One K word (4 e4m3 values of a key) -> the B fragment pair for one k chunk.
template <bool kBits>
__device__ __forceinline__ void unpack_k(uint32_t x, uint32_t& b0, uint32_t& b1) {
  if constexpr (kBits) {
    b0 = attn::e4m3x2_to_f16x2(x, x, attn::kPrmtEven);
    b1 = attn::e4m3x2_to_f16x2(x, x, attn::kPrmtOdd);
  } else {
    attn::e4m3x4_to_f16x2x2(x, b0, b1);
  }
}

// Online softmax over the columns of S^T [16 keys, 8 heads] tiles (lane: keys g and g + 8 in s[h][0..1]
// and s[h][2..3], heads 8h + 2t + e): the running max m (score units, lazy as in
// attn::softmax_step: it moves only when the new max exceeds it by 2^8 in P) is shared by the 8
// lanes of a column, the sum l is this lane's share (reduced over g at the end). Overwrites s
// with P; returns whether any column moved its max (then O must be multiplied by `rescale`).
template <int kHeadTiles>
__device__ __forceinline__ bool softmax_columns(float (&s)[kHeadTiles][4], float (&m)[kHeadTiles][2],
                                                float (&l)[kHeadTiles][2], float (&rescale)[kHeadTiles][2],
                                                float scale_log2) {
  constexpr float kLazyLog2 = 8.f;
  float mx[kHeadTiles][2];
#pragma unroll
  for (int h = 0; h < kHeadTiles; ++h)
#pragma unroll
    for (int e = 0; e < 2; ++e) mx[h][e] = fmaxf(s[h][e], s[h][2 + e]);
#pragma unroll
  for (int off = 4; off < 32; off *= 2)
#pragma unroll
    for (int h = 0; h < kHeadTiles; ++h)
#pragma unroll
      for (int e = 0; e < 2; ++e) mx[h][e] = fmaxf(mx[h][e], __shfl_xor_sync(0xffffffffu, mx[h][e], off));
  bool moved = false;
#pragma unroll
  for (int h = 0; h < kHeadTiles; ++h)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const float new_max = fmaxf(m[h][e], mx[h][e]);
      const bool move = (new_max - m[h][e]) * scale_log2 > kLazyLog2;  // false while both are -inf (NaN)
      rescale[h][e] = move ? attn::exp2_approx((m[h][e] - new_max) * scale_log2) : 1.f;
      m[h][e] = move ? new_max : m[h][e];
      moved |= move;
      const float base = m[h][e] == -INFINITY ? 0.f : m[h][e] * scale_log2;
      s[h][e] = attn::exp2_approx(fmaf(s[h][e], scale_log2, -base));
      s[h][2 + e] = attn::exp2_approx(fmaf(s[h][2 + e], scale_log2, -base));
      l[h][e] = l[h][e] * rescale[h][e] + (s[h][e] + s[h][2 + e]);
    }
  return __any_sync(0xffffffffu, moved);
}

// The B operand P^T [16 keys, 8 heads] of O^T += V^T P^T from the C fragments of S^T = P: pairs of
// heads packed per key, then each 8 x 8 half transposed in registers.
__device__ __forceinline__ void p_transposed(const float (&p)[4], uint32_t& b0, uint32_t& b1) {
  const uint32_t lo = attn::pack_f16(p[0], p[1]), hi = attn::pack_f16(p[2], p[3]);
  asm("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(b0) : "r"(lo));
  asm("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(b1) : "r"(hi));
}

// [num_kv_heads, batch, num_splits] CTAs of 128 threads. Transposed products, so that the group's
// heads are the mma's n = 8 (no padded rows for groups <= 8) and each lane's registers hold only
// real data: S^T [16 keys, 8 heads] = K Q^T per head tile (K the A operand, Q^T the B fragments),
// then O^T [d, 8 heads] += V^T P^T (V^T the A operand, P^T moved from S^T's C fragments).
// kHeadTiles = ceil(group / 8).
template <int kHeadDim, int kHeadTiles, Fp8Unpack kUnpack, int kMinBlocks>
__global__ void __launch_bounds__(decode::kThreads, kMinBlocks)
    decode_attention_fp8_kernel(const __grid_constant__ PagedAttentionParams p) {
  using C = Fp8DecodeConfig<kHeadDim, kUnpack, kMinBlocks>;
  constexpr int kMTiles = kHeadDim / 16;  // d-row tiles of O^T
  extern __shared__ __align__(128) uint8_t smem[];
  const int kvh = blockIdx.x, b = blockIdx.y, split = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  decode::SplitKeys keys;
  if (!decode::split_keys<kHeadDim>(p, b, kvh, split, keys)) return;
  const int q_row = keys.q_row, kv_len = keys.kv_len, first = keys.first, begin = keys.begin, end = keys.end;
  const int n_tiles = (end - begin + C::kTileN - 1) / C::kTileN;

  const attn::PagedRows rows{p.block_tables + static_cast<int64_t>(b) * p.table_stride, p.block_size_log2,
                             static_cast<int64_t>(p.num_kv_heads) * kHeadDim, static_cast<int64_t>(kvh) * kHeadDim};
  const uint32_t warp_base = attn::smem_u32(smem) + warp * C::kWarpStageBytes;
  // Keys [copy_lo, copy_hi) of tile `tile` (this warp's 16), keys >= end zero-filled.
  auto load_tile = [&](int tile, int copy_lo, int copy_hi, int zero_from) {
    const uint32_t k_dst = warp_base + (tile % C::kStages) * C::kStageBytes;
    load_warp_keys<kHeadDim>(k_dst, k_dst + C::kWarpTileBytes, static_cast<const uint8_t*>(p.k_cache),
                             static_cast<const uint8_t*>(p.v_cache), rows, begin + tile * C::kTileN + warp * C::kKeys,
                             copy_lo, copy_hi, zero_from, lane);
  };
  // Programmatic dependent launch: the first tiles' keys that earlier steps wrote are requested
  // before the wait for the kernel before (which writes the newest key, kv_len - 1, and Q); that
  // key's rows follow the wait. The metadata and block tables come from the host.
  const int ready = kv_len - 1;
#pragma unroll
  for (int s = 0; s < C::kStages - 1; ++s) {
    if (s < n_tiles) load_tile(s, begin, min(end, ready), end);
    attn::cp_async_commit();
  }
  bf16* const rope_q = reinterpret_cast<bf16*>(smem + C::kPipeBytes);  // p.rope: [kRows, d] rotated Q
  float* const rope_cs = reinterpret_cast<float*>(smem + C::kPipeBytes + decode::kRows * kHeadDim * 2);  // cos | sin
  if (p.rope) {
    decode::rope_table<kHeadDim, decode::kThreads>(p, q_row, rope_cs, threadIdx.x);
    __syncthreads();
  }
  cuda::pdl_wait();
  cuda::pdl_trigger();
  const bf16* q = static_cast<const bf16*>(p.q) + static_cast<int64_t>(q_row) * p.q_stride + kvh * p.group * kHeadDim;
  if (p.rope) {  // Q rotated here; this split's newest key (if any) rotated, quantized, cached and put in its tile
    // Warp 0 of the split holding the newest key issues its loads first, then its q rows' (one
    // load latency for both, not three in a row).
    const bool newest = warp == 0 && ready >= begin && ready < end;
    decode::NewestKvFp8<kHeadDim> nk;
    if (newest) decode::load_newest_kv_fp8<kHeadDim>(p, q_row, kvh, lane, nk);
    decode::rope_q_rows<kHeadDim, decode::kRows>(p, q_row, kvh, rope_q, rope_cs, warp, lane);
    if (newest) {
      const int tile = (ready - begin) / C::kTileN, w = (ready - begin) % C::kTileN / C::kKeys;
      uint8_t* k_rows = tile < C::kStages - 1 ? smem + w * C::kWarpStageBytes + tile * C::kStageBytes : nullptr;
      decode::rope_newest_kv_fp8<kHeadDim>(p, q_row, kvh, k_rows, k_rows ? k_rows + C::kWarpTileBytes : nullptr,
                                           (ready - begin) % C::kKeys, rope_cs, lane, nk);
    }
    __syncthreads();  // Q rows and the newest key's rows (another warp's) written
    q = rope_q;
  } else {
#pragma unroll
    for (int s = 0; s < C::kStages - 1; ++s)
      if (s < n_tiles && ready < end) load_tile(s, ready, end, INT_MAX);  // no-op unless the tile holds it
  }
  attn::cp_async_commit();

  // Q^T B fragments of head tile h: head 8h + g (the loads overlap the first tiles' copies).
  uint32_t qb0[kHeadTiles][C::kKK], qb1[kHeadTiles][C::kKK];
#pragma unroll
  for (int h = 0; h < kHeadTiles; ++h)
    load_q_fragments<kHeadDim, C::kBitsK>(q, 8 * h + g, p.group, t, qb0[h], qb1[h]);

  // This lane's slices within its warp's K / V rows of a stage. S^T row g is key key_row, row g + 8
  // is key_row + 2, so that P^T's k index 2t, 2t + 1, 2t + 8, 2t + 9 is keys 4t .. 4t + 3: the V
  // rows this lane reads. Rows two apart share their swizzle (attn::fp8_tile_offset), so only the
  // first row's offsets take registers; the others are + 2 rows, an immediate.
  const int key_row = 4 * (g / 2) + g % 2;
  uint32_t k_off[C::kKSlice / 16], v_off[2];
#pragma unroll
  for (int c = 0; c < C::kKSlice / 16; ++c)
    k_off[c] = attn::fp8_tile_offset<kHeadDim>(key_row * kHeadDim + t * C::kKSlice + c * 16);
#pragma unroll
  for (int j = 0; j < 2; ++j) v_off[j] = attn::fp8_tile_offset<kHeadDim>((4 * t + j) * kHeadDim + g * C::kVSlice);
  constexpr int kTwoRows = 2 * kHeadDim;

  const float scale_log2 = p.scale * p.k_scale * C::kKFactor * attn::kLog2e;
  // O^T [d, heads]: o[h][mt] = (d g d/8 + 2 mt, heads 8h + 2t, + 1), then (d + 1, the same heads).
  float o[kHeadTiles][kMTiles][4] = {};
  float m[kHeadTiles][2], l[kHeadTiles][2];
#pragma unroll
  for (int h = 0; h < kHeadTiles; ++h) m[h][0] = m[h][1] = -INFINITY, l[h][0] = l[h][1] = 0.f;
  for (int it = 0; it < n_tiles; ++it) {
    if (it == 0)
      attn::cp_async_wait<0>();  // the prologue's tiles and the newest key (the last group; or stored, p.rope)
    else
      attn::cp_async_wait<C::kStages - 2>();
    __syncwarp();  // this warp's rows of tile `it` landed, and every lane is done with stage it - 1
    if (it + C::kStages - 1 < n_tiles) load_tile(it + C::kStages - 1, begin, end, end);  // into the stage freed at it - 1
    attn::cp_async_commit();
    const uint32_t k_tile = warp_base + (it % C::kStages) * C::kStageBytes, v_tile = k_tile + C::kWarpTileBytes;

    // S^T [16 keys, 8 heads] = K Q^T per head tile, one 16-byte K chunk of both rows at a time.
    float s[kHeadTiles][4] = {};
#pragma unroll
    for (int c = 0; c < C::kKSlice / 16; ++c) {
      uint32_t kw[2][4];
#pragma unroll
      for (int j = 0; j < 2; ++j) load_shared_words<4>(k_tile + k_off[c] + j * kTwoRows, kw[j]);
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        uint32_t a[4];  // rows g, g + 8 (keys key_row, key_row + 2) x k 2t.., 2t + 8..
        unpack_k<C::kBitsK>(kw[0][w], a[0], a[2]);
        unpack_k<C::kBitsK>(kw[1][w], a[1], a[3]);
#pragma unroll
        for (int h = 0; h < kHeadTiles; ++h) attn::mma_f16(s[h], a, qb0[h][4 * c + w], qb1[h][4 * c + w]);
      }
    }
    const int key0 = begin + it * C::kTileN + warp * C::kKeys;
    if (key0 + C::kKeys > end) {
#pragma unroll
      for (int h = 0; h < kHeadTiles; ++h)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (key0 + key_row + (e >= 2 ? 2 : 0) >= end) s[h][e] = -INFINITY;
    }
    float rescale[kHeadTiles][2];
    if (softmax_columns<kHeadTiles>(s, m, l, rescale, scale_log2)) {
#pragma unroll
      for (int h = 0; h < kHeadTiles; ++h)
#pragma unroll
        for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
          for (int e = 0; e < 4; ++e) o[h][mt][e] *= rescale[h][e % 2];
    }
    uint32_t pb0[kHeadTiles], pb1[kHeadTiles];  // P <= 2^8 by the lazy max: f16 holds it
#pragma unroll
    for (int h = 0; h < kHeadTiles; ++h) p_transposed(s[h], pb0[h], pb1[h]);

    // O^T [d, 8 heads] += V^T P^T: m-tile mt's rows g, g + 8 are bytes 2 mt, 2 mt + 1 of this
    // lane's V slices of keys 4t, 4t + 1 (a0, a1) and 4t + 2, 4t + 3 (a2, a3).
    uint32_t vw[4][C::kVSlice / 4];
#pragma unroll
    for (int j = 0; j < 4; ++j) load_shared_words<C::kVSlice / 4>(v_tile + v_off[j % 2] + (j / 2) * kTwoRows, vw[j]);
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
      const int w = mt / 2, i = (2 * mt) % 4;
      uint32_t a[4];
      if constexpr (C::kBitsV) {
        a[0] = attn::e4m3x2_to_f16x2(vw[0][w], vw[1][w], attn::prmt_byte_pair(i));
        a[1] = attn::e4m3x2_to_f16x2(vw[0][w], vw[1][w], attn::prmt_byte_pair(i + 1));
        a[2] = attn::e4m3x2_to_f16x2(vw[2][w], vw[3][w], attn::prmt_byte_pair(i));
        a[3] = attn::e4m3x2_to_f16x2(vw[2][w], vw[3][w], attn::prmt_byte_pair(i + 1));
      } else {
        attn::e4m3x4_to_f16x2x2(attn::prmt(vw[0][w], vw[1][w], attn::prmt_interleave(i)), a[0], a[1]);
        attn::e4m3x4_to_f16x2x2(attn::prmt(vw[2][w], vw[3][w], attn::prmt_interleave(i)), a[2], a[3]);
      }
#pragma unroll
      for (int h = 0; h < kHeadTiles; ++h) attn::mma_f16(o[h][mt], a, pb0[h], pb1[h]);
    }
  }

  // Merge the 4 warps through shared memory (the stages are free now), head-dim order restored.
  attn::cp_async_wait<0>();
  __syncthreads();
  const decode::WarpStates<kHeadDim> st(smem);
#pragma unroll
  for (int h = 0; h < kHeadTiles; ++h) {
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int e = 0; e < 4; ++e) st.row(warp, 8 * h + 2 * t + e % 2)[g * C::kVSlice + 2 * mt + e / 2] = o[h][mt][e];
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      float sum = l[h][e];
#pragma unroll
      for (int off = 4; off < 32; off *= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
      if (g == 0) {
        st.m[warp * decode::kRows + 8 * h + 2 * t + e] = m[h][e];
        st.l[warp * decode::kRows + 8 * h + 2 * t + e] = sum;
      }
    }
  }
  __syncthreads();
  decode::merge_warp_states<kHeadDim>(p, st, b, kvh, split, q_row, scale_log2, p.v_scale * C::kVFactor);
  decode::finish_splits<kHeadDim>(p, st, b, kvh, kv_len, first, q_row, smem);
}

template <int kHeadDim, int kHeadTiles, Fp8Unpack kUnpack, int kMinBlocks>
Status launch(const PagedAttentionParams& p, CUstream_st* stream) {
  using C = Fp8DecodeConfig<kHeadDim, kUnpack, kMinBlocks>;
  auto* kernel = decode_attention_fp8_kernel<kHeadDim, kHeadTiles, kUnpack, kMinBlocks>;
  static const cudaError_t attr =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmemBytes);
  if (attr != cudaSuccess) return internal_error(std::string("decode_attention_fp8: ") + cudaGetErrorString(attr));
  if (p.batch == 0) return ok_status();
  const cudaError_t err = cuda::launch_pdl(kernel, dim3(p.num_kv_heads, p.batch, p.num_splits), dim3(decode::kThreads),
                                           C::kSmemBytes, stream, p, dim3(1, 1, p.cluster_merge ? p.num_splits : 1));
  if (err != cudaSuccess) return internal_error(std::string("decode_attention_fp8 launch: ") + cudaGetErrorString(err));
  return ok_status();
}

// Groups of up to 8 take one head tile, up to 16 two. Two tiles need ~155 registers at d128 (~110
// at d64), so they run fewer CTAs per SM than the split planner assumes (ctas_per_sm: one tile's).
template <int kHeadDim, Fp8Unpack kUnpack, int kMinBlocks>
Status launch_any_group(const PagedAttentionParams& p, CUstream_st* stream) {
  if (p.group > decode::kRows) return unimplemented("decode_attention_fp8: at most 16 query heads per kv head");
  constexpr int kTwoTileBlocks = kMinBlocks < (kHeadDim == 128 ? 3 : 4) ? kMinBlocks : (kHeadDim == 128 ? 3 : 4);
  return p.group > 8 ? launch<kHeadDim, 2, kUnpack, kTwoTileBlocks>(p, stream)
                     : launch<kHeadDim, 1, kUnpack, kMinBlocks>(p, stream);
}

// Occupancy of the one-head-tile kernel (the two-tile one has the same launch bounds and shared
// memory).
template <int kHeadDim, Fp8Unpack kUnpack, int kMinBlocks>
int ctas_per_sm() {
  using C = Fp8DecodeConfig<kHeadDim, kUnpack, kMinBlocks>;
  static const int n = [] {
    auto* kernel = decode_attention_fp8_kernel<kHeadDim, 1, kUnpack, kMinBlocks>;
    int ctas = 0;
    (void)cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::kSmemBytes);
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ctas, kernel, decode::kThreads, C::kSmemBytes) != cudaSuccess)
      return 1;
    return ctas > 0 ? ctas : 1;
  }();
  return n;
}

// The shipped configuration: the conversion unit and 5 CTAs (20 warps, 2 stages) per SM. Measured
// on the H100 at B64 x 4096, 32/8, d128 (% of copy): cvt 5/SM 95.6-95.7, bits 5/SM 95.1-95.6,
// cvt 4/SM 92.2-92.4, bits 4/SM 91.7-91.9, 3/SM (4 stages) 86-87 (2 splits).
template <int kHeadDim>
constexpr Fp8Unpack kShippedUnpack = Fp8Unpack::kCvt;
template <int kHeadDim>
constexpr int kShippedMinBlocks = 5;

// The shipped configuration and the alternatives the bench compares (d128): unpacking x resident
// CTAs per SM (2 per SM: 6 stages, 3: 4, 4: 3, 5: 2).
constexpr Fp8DecodeTuning kTunings[] = {
    {"cvt 5/SM (shipped)", &launch_any_group<128, Fp8Unpack::kCvt, 5>, &ctas_per_sm<128, Fp8Unpack::kCvt, 5>},
    {"bits 5/SM", &launch_any_group<128, Fp8Unpack::kBits, 5>, &ctas_per_sm<128, Fp8Unpack::kBits, 5>},
    {"cvtK 5/SM", &launch_any_group<128, Fp8Unpack::kCvtK, 5>, &ctas_per_sm<128, Fp8Unpack::kCvtK, 5>},
    {"cvt 4/SM", &launch_any_group<128, Fp8Unpack::kCvt, 4>, &ctas_per_sm<128, Fp8Unpack::kCvt, 4>},
    {"bits 4/SM", &launch_any_group<128, Fp8Unpack::kBits, 4>, &ctas_per_sm<128, Fp8Unpack::kBits, 4>},
    {"cvt 3/SM", &launch_any_group<128, Fp8Unpack::kCvt, 3>, &ctas_per_sm<128, Fp8Unpack::kCvt, 3>},
    {"cvt 2/SM", &launch_any_group<128, Fp8Unpack::kCvt, 2>, &ctas_per_sm<128, Fp8Unpack::kCvt, 2>},
};

}  // namespace

// The 2-per-SM row with 6-stage rings streams sparse grids faster as a kernel (attention_bench graph,
// H100, 32/8, d128, us, shipped -> it: B1 x 32K 32.7 -> 29.2, x 16K 20.7 -> 17.9, x 64K 55.9 ->
// 52.3, x 8K 14.3 -> 13.3; denser grids lose: B4 x 32K 103.9 -> 109.4) but made whole decode steps
// slower wherever it ran (batch-1 Llama-3-8B, fp8 KV: 128-token prompt 278.2 -> 270.1 tok/s, 32K
// prompt 149.9 -> 147.9): it is not shipped. Batched plans again (2026-11-23, after the planner's
// batched rule: 1.5-2 CTAs per SM): the kernel gains (B16 x 1K fp8 19.9 -> 17.7 us, B32 x 1K 29.6 ->
// 27.2) and the steps lose (Llama-3-8B fp8 + fp8 KV, 64 new tokens: batch 16 x 1K 4.41 -> 4.49 ms,
// batch 32 x 1K 4.99 -> 5.22): not for them either.
template <int kHeadDim>
Status launch_decode_fp8(const PagedAttentionParams& p, CUstream_st* stream) {
  return launch_any_group<kHeadDim, kShippedUnpack<kHeadDim>, kShippedMinBlocks<kHeadDim>>(p, stream);
}

template <int kHeadDim>
int decode_fp8_ctas_per_sm() {
  return ctas_per_sm<kHeadDim, kShippedUnpack<kHeadDim>, kShippedMinBlocks<kHeadDim>>();
}

template Status launch_decode_fp8<64>(const PagedAttentionParams&, CUstream_st*);
template Status launch_decode_fp8<128>(const PagedAttentionParams&, CUstream_st*);
template int decode_fp8_ctas_per_sm<64>();
template int decode_fp8_ctas_per_sm<128>();

std::span<const Fp8DecodeTuning> decode_fp8_tunings() { return kTunings; }

}  // namespace kiln::cuda
