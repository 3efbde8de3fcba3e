// Device helpers shared by the decode and prefill attention kernels: async copies, ldmatrix and
// mma.sync m16n8k16 (bf16 in, f32 accumulate), the swizzled shared-memory tile layout, paged K/V
// addressing, and the fp8 e4m3 cache path (raw fp8 rows staged by cp.async, then widened to bf16
// into the same swizzled tiles: every e4m3 value is exact in bf16).
//
// Fragment layouts (PTX ISA, mma.m16n8k16; g = lane / 4, t = lane % 4):
//   A 16x16 row-major, 4 regs: a0 (g, 2t..2t+1) a1 (g+8, 2t..) a2 (g, 2t+8..) a3 (g+8, 2t+8..)
//   B 16x8 "col", 2 regs:      b0 (k 2t..2t+1, n g)  b1 (k 2t+8.., n g)
//   C 16x8 f32, 4 regs:        c0,c1 (g, 2t..2t+1)   c2,c3 (g+8, 2t..2t+1)
// so the C fragments of S for keys [16j, 16j+16) are the A fragment of P for the same keys.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "kiln/kernels/cuda/attention/attention_params.h"

namespace kiln::cuda::attn {

constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, through L2 only; zero-fills the 16 bytes when !valid.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// c += a * b for one m16n8k16 tile.
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Two floats as a bf16x2 register, `lo` in the low half (the lower column of a fragment).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// Byte offset of 16-byte chunk `chunk` of row `row` in a [rows, kHeadDim] bf16 shared tile. Chunks
// are XOR-swizzled by row so that the 8 row addresses of an ldmatrix (one chunk column) and the
// 4-byte fragment stores of an epilogue fall in distinct bank groups.
template <int kHeadDim>
__device__ __forceinline__ uint32_t tile_offset(int row, int chunk) {
  return static_cast<uint32_t>((row * (kHeadDim / 8) + (chunk ^ (row & 7))) * 16);
}

// The same layout split for ldmatrix loops: a lane's row (whose low 3 bits are fixed across the
// loop) and chunk parity give a base; chunk pair kk is then base ^ (kk << 5), because kk only
// touches address bits 5..7 and the row offset starts at bit 7 (128-byte rows) or 8. One LOP3
// per address instead of one live register each.
template <int kHeadDim>
__device__ __forceinline__ uint32_t lane_offset(int row, int chunk_parity) {
  static_assert(kHeadDim == 64 || kHeadDim == 128);
  return static_cast<uint32_t>(row * kHeadDim * 2 + ((chunk_parity ^ (row & 7)) << 4));
}
__device__ __forceinline__ uint32_t chunk_pair(uint32_t lane_off, int kk) { return lane_off ^ (kk << 5); }

// Addresses one KV head's rows in the paged cache: token j lives in block table[j >> log2_bs],
// slot j & (bs - 1).
struct PagedRows {
  const int32_t* table;  // [max_blocks_per_seq] of this sequence
  int log2_bs;
  int64_t token_stride;  // num_kv_heads * head_dim elements between slots
  int64_t head_offset;   // kv_head * head_dim

  __device__ __forceinline__ int64_t offset(int token) const {
    const int64_t block = table[token >> log2_bs];
    const int64_t slot = (block << log2_bs) | (token & ((1 << log2_bs) - 1));
    return slot * token_stride + head_offset;
  }
};

// Async-copies keys/values [tile_start, tile_start + kRows) of one KV head into swizzled [kRows,
// kHeadDim] tiles: rows of keys in [copy_lo, copy_hi) from the cache, rows outside [zero_lo,
// zero_hi) zero-filled (never read from the cache: their block table entries may be garbage, and a
// zero V row keeps a masked key from turning P*V into NaN), the others left as they are. That
// split lets a decode kernel copy the keys earlier steps wrote before its griddepcontrol.wait and
// the newest key (written by the kernel before it) after.
template <int kHeadDim, int kRows, int kThreads>
__device__ __forceinline__ void load_kv_rows(uint32_t k_tile, uint32_t v_tile, const __nv_bfloat16* k_cache,
                                             const __nv_bfloat16* v_cache, const PagedRows& rows, int tile_start,
                                             int copy_lo, int copy_hi, int zero_lo, int zero_hi, int tid) {
  constexpr int kChunks = kHeadDim / 8;
  constexpr int kRowsPerPass = kThreads / kChunks;
  static_assert(kThreads % kChunks == 0 && kRows % kRowsPerPass == 0);
  const int chunk = tid % kChunks;
#pragma unroll
  for (int i = 0; i < kRows / kRowsPerPass; ++i) {
    const int r = tid / kChunks + i * kRowsPerPass;
    const int token = tile_start + r;
    const bool copy = token >= copy_lo && token < copy_hi;
    if (!copy && token >= zero_lo && token < zero_hi) continue;
    const int64_t off = copy ? rows.offset(token) + chunk * 8 : 0;
    const uint32_t dst = tile_offset<kHeadDim>(r, chunk);
    cp_async_16(k_tile + dst, k_cache + off, copy);
    cp_async_16(v_tile + dst, v_cache + off, copy);
  }
}

// The whole tile: rows of keys in [lo, hi) copied, the others zero-filled.
template <int kHeadDim, int kRows, int kThreads>
__device__ __forceinline__ void load_kv_tile(uint32_t k_tile, uint32_t v_tile, const __nv_bfloat16* k_cache,
                                             const __nv_bfloat16* v_cache, const PagedRows& rows, int tile_start,
                                             int lo, int hi, int tid) {
  load_kv_rows<kHeadDim, kRows, kThreads>(k_tile, v_tile, k_cache, v_cache, rows, tile_start, lo, hi, lo, hi, tid);
}

// ---- fp8 e4m3 cache ------------------------------------------------------------------------

// Two e4m3 values (low byte = first) -> bf16x2 (first in the low half), exactly: e4m3 -> f16x2 in
// one instruction, then f16 -> f32 -> bf16 (both exact for e4m3 values).
__device__ __forceinline__ uint32_t fp8x2_to_bf16x2(uint32_t two) {
  const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(two & 0xffffu), __NV_E4M3);
  const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&h));
  return pack_bf16(f.x, f.y);
}

// 16 e4m3 values -> 16 bf16 (two 16-byte chunks, in order).
__device__ __forceinline__ void fp8x16_to_bf16(const uint4& in, uint4& lo, uint4& hi) {
  lo = make_uint4(fp8x2_to_bf16x2(in.x), fp8x2_to_bf16x2(in.x >> 16), fp8x2_to_bf16x2(in.y),
                  fp8x2_to_bf16x2(in.y >> 16));
  hi = make_uint4(fp8x2_to_bf16x2(in.z), fp8x2_to_bf16x2(in.z >> 16), fp8x2_to_bf16x2(in.w),
                  fp8x2_to_bf16x2(in.w >> 16));
}

// Async-copies fp8 keys/values of rows [row0, row0 + kRows) of a tile starting at token tile_start
// into raw [tile rows, kHeadDim] byte tiles (row r at r * kHeadDim, unswizzled), `idx` in
// [0, kThreads) being this thread's index among the kThreads that share the copy (a warp or the
// CTA). Rows outside [lo, hi) are zero-filled (fp8 zero widens to bf16 zero: see load_kv_tile).
template <int kHeadDim, int kRows, int kThreads>
__device__ __forceinline__ void load_fp8_rows(uint32_t k_raw, uint32_t v_raw, const uint8_t* k_cache,
                                              const uint8_t* v_cache, const PagedRows& rows, int tile_start,
                                              int row0, int lo, int hi, int idx) {
  constexpr int kChunks = kHeadDim / 16;  // 16-byte chunks per fp8 row
  static_assert((kRows * kChunks) % kThreads == 0);
#pragma unroll
  for (int i = 0; i < kRows * kChunks / kThreads; ++i) {
    const int item = idx + i * kThreads, r = row0 + item / kChunks, chunk = item % kChunks;
    const int token = tile_start + r;
    const bool valid = token >= lo && token < hi;
    const int64_t off = valid ? rows.offset(token) + chunk * 16 : 0;
    const uint32_t dst = static_cast<uint32_t>(r * kHeadDim + chunk * 16);
    cp_async_16(k_raw + dst, k_cache + off, valid);
    cp_async_16(v_raw + dst, v_cache + off, valid);
  }
}

// Widens raw fp8 rows [row0, row0 + kRows) (layout of load_fp8_rows) into the swizzled bf16
// tiles (layout of tile_offset). Generic shared pointers; the same kThreads / idx split.
template <int kHeadDim, int kRows, int kThreads>
__device__ __forceinline__ void widen_fp8_rows(const uint8_t* k_raw, const uint8_t* v_raw, uint8_t* k_tile,
                                               uint8_t* v_tile, int row0, int idx) {
  constexpr int kChunks = kHeadDim / 16;
  static_assert((kRows * kChunks) % kThreads == 0);
#pragma unroll
  for (int i = 0; i < kRows * kChunks / kThreads; ++i) {
    const int item = idx + i * kThreads, r = row0 + item / kChunks, chunk = item % kChunks;
    const uint4 k = *reinterpret_cast<const uint4*>(k_raw + r * kHeadDim + chunk * 16);
    const uint4 v = *reinterpret_cast<const uint4*>(v_raw + r * kHeadDim + chunk * 16);
    uint4 lo, hi;
    fp8x16_to_bf16(k, lo, hi);
    *reinterpret_cast<uint4*>(k_tile + tile_offset<kHeadDim>(r, 2 * chunk)) = lo;
    *reinterpret_cast<uint4*>(k_tile + tile_offset<kHeadDim>(r, 2 * chunk + 1)) = hi;
    fp8x16_to_bf16(v, lo, hi);
    *reinterpret_cast<uint4*>(v_tile + tile_offset<kHeadDim>(r, 2 * chunk)) = lo;
    *reinterpret_cast<uint4*>(v_tile + tile_offset<kHeadDim>(r, 2 * chunk + 1)) = hi;
  }
}

// ---- fp8 e4m3 cache straight into f16 mma operands (decode) --------------------------------
// An e4m3 byte becomes an f16 by bit moves alone: with its sign replicated into a 16-bit half
// (prmt), shifting left by 7 puts its sign at bit 15 and its exponent and mantissa bits at f16's
// bits 13..7; masking clears bit 14. The f16 equals the e4m3 value times 2^-8 exactly (biases 7
// and 15; e4m3 subnormals become f16 subnormals with the same factor), which the kernel folds
// into its scales. 3 integer ops per 2 values, no conversion unit. (e4m3 NaN, 0x7f, would read as
// 480: caches are written saturating and hold none.)
constexpr float kFp8F16Factor = 256.f;  // real e4m3 value = f16 operand * kFp8F16Factor

// Two e4m3 bytes picked by the prmt selector `sel` from {hi, lo} as [sign(b) b sign(a) a] ->
// f16x2 (a low, b high), each value * 2^-8.
__device__ __forceinline__ uint32_t e4m3x2_to_f16x2(uint32_t lo, uint32_t hi, uint32_t sel) {
  uint32_t p;
  asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(p) : "r"(lo), "r"(hi), "r"(sel));
  return (p << 7) & 0xbf80bf80u;
}
// prmt selectors: bytes 0 and 2 (even) or 1 and 3 (odd) of one word; byte i of two words.
constexpr uint32_t kPrmtEven = 0xA280u, kPrmtOdd = 0xB391u;
__host__ __device__ constexpr uint32_t prmt_byte_pair(int i) {
  return static_cast<uint32_t>(i | (8 + i) << 4 | (4 + i) << 8 | (12 + i) << 12);
}

// The conversion unit's way: 4 e4m3 bytes [b3 b2 b1 b0] -> f16x2 (b0, b1) and (b2, b3), exact
// values (no 2^-8), one cvt per pair.
__device__ __forceinline__ void e4m3x4_to_f16x2x2(uint32_t x, uint32_t& lo, uint32_t& hi) {
  asm("{\n.reg .b16 l, h;\nmov.b32 {l, h}, %2;\ncvt.rn.f16x2.e4m3x2 %0, l;\ncvt.rn.f16x2.e4m3x2 %1, h;\n}\n"
      : "=r"(lo), "=r"(hi)
      : "r"(x));
}
__device__ __forceinline__ uint32_t prmt(uint32_t lo, uint32_t hi, uint32_t sel) {
  uint32_t p;
  asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(p) : "r"(lo), "r"(hi), "r"(sel));
  return p;
}
// Bytes i and i + 1 of two words a, b interleaved as [b(i+1) a(i+1) b(i) a(i)].
__host__ __device__ constexpr uint32_t prmt_interleave(int i) {
  return static_cast<uint32_t>(i | (4 + i) << 4 | (i + 1) << 8 | (5 + i) << 12);
}

__device__ __forceinline__ uint32_t pack_f16(float lo, float hi) {
  __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// c += a * b for one m16n8k16 tile of f16 operands.
__device__ __forceinline__ void mma_f16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// Byte offset of 16-byte chunk `offset / 16` of a [16, kHeadDim] e4m3 tile, XOR-swizzled per
// 128-byte line so that the fp8 decode kernel's fragment reads hit distinct banks: K, a quarter
// warp reading 2 rows (d128) or 1 line (d64) across; V, lanes of 4 rows 4 apart reading one
// 16-byte (d128) or 8-byte (d64) column each. Rows 2 apart (lines 2 or 1 apart) get the same
// swizzle, which the kernel relies on.
template <int kHeadDim>
__device__ __forceinline__ uint32_t fp8_tile_offset(uint32_t offset) {
  static_assert(kHeadDim == 64 || kHeadDim == 128);
  const uint32_t line = offset >> 7;
  const uint32_t swz = kHeadDim == 128 ? ((line & 1) | ((line >> 1) & 6)) : (line & 6);
  return offset ^ (swz << 4);
}

// Tree reductions over a fragment row: independent chains instead of one serial one.
template <int kN, typename Op>
__device__ __forceinline__ float tree_reduce(float (&v)[kN], Op op) {
#pragma unroll
  for (int w = kN / 2; w > 0; w /= 2)
#pragma unroll
    for (int j = 0; j < w; ++j) v[j] = op(v[j], v[j + w]);
  return v[0];
}

// Online-softmax step for the rows a warp holds in the C fragments s[kM][kN][4] (per m16 tile mt:
// row g in c0,c1, row g+8 in c2,c3; kN fragments of 8 keys): updates the running max m (in score
// units) and the thread-partial sum l, and overwrites s with P = exp(scale * (s - m)). The max is
// lazy: it moves only when a row's new max exceeds it by more than 2^8 in P (so P <= 256,
// harmless in bf16 and f32), which makes the O rescale rare after the first tiles; the final
// O / l is exact either way. Returns whether any row of the warp moved its max; then O must be
// multiplied by `rescale` (1 for unmoved rows). A row with no unmasked key yet keeps m = -inf and
// gets P = 0. All rows are reduced side by side so their dependency chains overlap.
// kHalves = 1 skips rows g + 8 (their m, l and rescale stay as they are; a tile whose rows 8..15
// are padding).
template <int kM, int kN, int kHalves = 2>
__device__ __forceinline__ bool softmax_step(float (&s)[kM][kN][4], float (&m)[kM][2], float (&l)[kM][2],
                                             float (&rescale)[kM][2], float scale_log2) {
  static_assert((kN & (kN - 1)) == 0 && (kHalves == 1 || kHalves == 2));
  constexpr float kLazyLog2 = 8.f;
  float mx[kM][2];
#pragma unroll
  for (int mt = 0; mt < kM; ++mt) {
    rescale[mt][1] = 1.f;
#pragma unroll
    for (int h = 0; h < kHalves; ++h) {
      float v[kN];
#pragma unroll
      for (int j = 0; j < kN; ++j) v[j] = fmaxf(s[mt][j][2 * h], s[mt][j][2 * h + 1]);
      mx[mt][h] = fmaxf(m[mt][h], tree_reduce(v, [](float a, float b) { return fmaxf(a, b); }));
    }
  }
#pragma unroll
  for (int mt = 0; mt < kM; ++mt)
#pragma unroll
    for (int h = 0; h < kHalves; ++h) mx[mt][h] = quad_max(mx[mt][h]);
  bool moved = false;
#pragma unroll
  for (int mt = 0; mt < kM; ++mt)
#pragma unroll
    for (int h = 0; h < kHalves; ++h) {
      const bool move = (mx[mt][h] - m[mt][h]) * scale_log2 > kLazyLog2;  // false while both are -inf (NaN)
      rescale[mt][h] = move ? exp2_approx((m[mt][h] - mx[mt][h]) * scale_log2) : 1.f;
      m[mt][h] = move ? mx[mt][h] : m[mt][h];
      moved |= move;
      const float base = m[mt][h] == -INFINITY ? 0.f : m[mt][h] * scale_log2;
      float v[kN];
#pragma unroll
      for (int j = 0; j < kN; ++j) {
        s[mt][j][2 * h] = exp2_approx(fmaf(s[mt][j][2 * h], scale_log2, -base));
        s[mt][j][2 * h + 1] = exp2_approx(fmaf(s[mt][j][2 * h + 1], scale_log2, -base));
        v[j] = s[mt][j][2 * h] + s[mt][j][2 * h + 1];
      }
      l[mt][h] = l[mt][h] * rescale[mt][h] + tree_reduce(v, [](float a, float b) { return a + b; });
    }
  return __any_sync(0xffffffffu, moved);
}

// CTA `block` of the flattened per-sequence row blocks -> (sequence, block within it). Row blocks
// of sequence b: ceil(q_len(b) * group / kBlockM). Whole-warp call; false past the last block.
template <int kBlockM>
__device__ __forceinline__ bool find_row_block(const int32_t* cu, int batch, int group, int block, int lane, int& b_out,
                                               int& local_out) {
  int base = 0;
  for (int b0 = 0; b0 < batch; b0 += 32) {
    const int b = b0 + lane;
    const int n = b < batch ? ((cu[b + 1] - cu[b]) * group + kBlockM - 1) / kBlockM : 0;
    int incl = n;
#pragma unroll
    for (int off = 1; off < 32; off *= 2) {
      const int y = __shfl_up_sync(0xffffffffu, incl, off);
      if (lane >= off) incl += y;
    }
    const int total = __shfl_sync(0xffffffffu, incl, 31);
    if (block < base + total) {
      const int src = __ffs(__ballot_sync(0xffffffffu, base + incl > block)) - 1;
      b_out = b0 + src;
      local_out = block - base - __shfl_sync(0xffffffffu, incl - n, src);
      return true;
    }
    base += total;
  }
  return false;
}

}  // namespace kiln::cuda::attn
