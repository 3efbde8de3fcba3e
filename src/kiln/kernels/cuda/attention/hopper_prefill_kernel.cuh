// The Hopper prefill attention kernel, one template over <kFp8 cache, kHeadDim>. A CTA owns 128
// query tokens of one q head: warpgroup 0 produces (TMA loads of the Q tile and of K/V tiles of
// 128 keys, 16-token boxes addressed through the block table; for fp8 it also transposes V in
// shared memory, since fp8 wgmma wants both operands K-major), warpgroups 1 and 2 consume 64 rows
// each: S = Q K^T (wgmma SS), masked online softmax in registers, O += P V (wgmma RS, P straight
// from the S accumulators), the softmax of tile j overlapping the products of tile j+1 / j-1.
#pragma once
#include <cuda.h>
#include <cuda_runtime.h>

#include "kiln/kernels/cuda/attention/attention_device.cuh"
#include "kiln/kernels/cuda/attention/hopper_device.cuh"

namespace kiln::cuda::hopper {

// Everything the kernel reads; passed __grid_constant__ so the tensor maps stay in param space.
struct HopperPrefillParams {
  CUtensorMap q_map;            // bf16 path: 3-D over q [num_tokens, hq, d], box [128 rows, 1, 64]
  CUtensorMap k_map, v_map;     // 4-D over the caches [blocks, bs, hkv, d], box [1, 16, 1, row]
  const void* q;                // [num_tokens, num_q_heads, head_dim] bf16
  const int32_t* cu_seqlens_q;  // [batch + 1]
  const int32_t* kv_lens;       // [batch]
  const int32_t* block_tables;  // [batch, table_stride]
  void* out;                    // [num_tokens, num_q_heads, head_dim] bf16
  int num_tokens, batch, num_q_heads, num_kv_heads, group;
  int num_blocks;       // cache blocks; a box at block num_blocks is out of bounds (TMA zero-fills it)
  int block_size_log2;  // block_size == 1 << block_size_log2, >= 16
  int table_stride;
  int sliding_window;  // 0 = unlimited
  int causal;
  int pingpong;      // consumer warpgroups take turns issuing their GEMMs (named barriers 4, 5)
  int heads_per_chunk;  // q heads scheduled together (a multiple of group dividing num_q_heads)
  float scale_log2;  // softmax scale * log2(e) (fp8: times k_scale)
  float v_scale;     // 1 for bf16
};

template <bool kFp8, int kHeadDim>
struct HopperConfig {
  static constexpr int kElemBytes = kFp8 ? 1 : 2;
  static constexpr int kRowBytes = kHeadDim * kElemBytes >= 128 ? 128 : 64;  // swizzle width
  static constexpr int kPanels = kHeadDim * kElemBytes / kRowBytes;           // column panels of a tile
  static constexpr int kPanelElems = kRowBytes / kElemBytes;
  // kStages of K and V (fp8: of Vt and of the raw V tiles). 3 measured no faster than 2 on the H100
  // (8K causal d128, bf16 and fp8), so 2. bf16 writes O over Q (each warpgroup over its own Q rows,
  // after its last QK product), which leaves room for 3 stages of 32 KB tiles in 227 KB.
  static constexpr int kBlockM = 128, kBlockN = 128, kStages = 2;
  static constexpr int kThreads = 384;
  static constexpr int kKStep = kFp8 ? 32 : 16;  // wgmma k (elements); 32 bytes either way
  static constexpr int kStepsPerPanel = kRowBytes / 32;
  static constexpr int kQBytes = kBlockM * kHeadDim * kElemBytes;
  static constexpr int kTileBytes = kBlockN * kHeadDim * kElemBytes;  // one K or V tile
  static constexpr int kVtBytes = kFp8 ? kHeadDim * kBlockN : 0;      // transposed fp8 V tile
  static constexpr int kRawV = kStages;                               // V tiles as loaded
  static constexpr int kOBytes = kBlockM * kHeadDim * 2;
  static constexpr int kQ = 0;
  static constexpr int kK = kQ + kQBytes;
  static constexpr int kV = kK + kStages * kTileBytes;
  static constexpr int kVt = kV + kRawV * kTileBytes;
  static constexpr int kO = kFp8 ? kVt + kStages * kVtBytes : kQ;
  static constexpr int kScales = kVt + kStages * kVtBytes + (kFp8 ? kOBytes : 0);  // fp8: Q row scales, float[128]
  static constexpr int kBars = kScales + kBlockM * 4;
  static constexpr int kNumBars = 2 + 6 * kStages;
  static constexpr int kSmemBytes = kBars + kNumBars * 8 + 1024;  // + alignment slack
  static constexpr int kProducerRegs = kFp8 ? 40 : 24;
  static constexpr int kConsumerRegs = kFp8 ? 232 : 240;
};

// Barrier slots (8 bytes each) after kBars.
struct Bars {
  uint32_t base;
  static constexpr int kStages = 2;
  __device__ uint32_t q() const { return base; }
  __device__ uint32_t full_k(int s) const { return base + 8 * (1 + s); }
  __device__ uint32_t empty_k(int s) const { return base + 8 * (1 + kStages + s); }
  __device__ uint32_t full_v(int s) const { return base + 8 * (1 + 2 * kStages + s); }  // bf16: V; fp8: Vt
  __device__ uint32_t empty_v(int s) const { return base + 8 * (1 + 3 * kStages + s); }
  __device__ uint32_t full_raw(int i) const { return base + 8 * (1 + 4 * kStages + i); }  // fp8 raw V
  __device__ uint32_t anchor() const { return base + 8 * (1 + 5 * kStages); }  // arrived on, never waited
};

// What one CTA works on.
struct Work {
  int b, head, kvh, q_row, q_len, kv_len, q_pos0, row0;  // row0: first token of the block in its sequence
  int tile0, n_tiles;                                    // key tiles [tile0, tile0 + n_tiles * kBlockN)
};

template <int kBlockM, int kBlockN>
__device__ __forceinline__ bool find_work(const HopperPrefillParams& p, Work& w) {
  const int lane = threadIdx.x % 32;
  // CTAs run about in launch order (x fastest): all row blocks of one chunk of heads_per_chunk q
  // heads (whole GQA groups), heads fastest, before the next chunk, so that the keys and values in
  // flight (the chunk's kv heads of about one sequence) stay in L2 on long sequences.
  const int linear = blockIdx.y * gridDim.x + blockIdx.x, per_chunk = p.heads_per_chunk * gridDim.y;
  const int chunk = linear / per_chunk, rest = linear - chunk * per_chunk;
  int local;
  if (!attn::find_row_block<128>(p.cu_seqlens_q, p.batch, 1, rest / p.heads_per_chunk, lane, w.b, local)) return false;
  w.head = chunk * p.heads_per_chunk + rest % p.heads_per_chunk;
  w.kvh = w.head / p.group;
  w.q_row = p.cu_seqlens_q[w.b];
  w.q_len = p.cu_seqlens_q[w.b + 1] - w.q_row;
  w.kv_len = p.kv_lens[w.b];
  w.q_pos0 = w.kv_len - w.q_len;
  w.row0 = ((w.q_len + kBlockM - 1) / kBlockM - 1 - local) * kBlockM;  // latest (heaviest) rows first
  const int last = min(w.row0 + kBlockM, w.q_len) - 1;
  const int kv_hi = p.causal ? min(w.kv_len, w.q_pos0 + last + 1) : w.kv_len;
  const int pos_lo = p.causal ? w.q_pos0 + w.row0 : w.kv_len - 1;
  const int kv_lo = p.sliding_window > 0 ? max(0, pos_lo - p.sliding_window + 1) : 0;
  w.tile0 = kv_lo / kBlockN * kBlockN;
  w.n_tiles = kv_hi > w.tile0 ? (kv_hi - w.tile0 + kBlockN - 1) / kBlockN : 0;
  return true;
}

// ---- producer -------------------------------------------------------------------------------

// Warp-wide: TMA of key tile `tile` (kBlockN keys from key0) into `dst`, 16-token boxes per lane,
// boxes past kv_hi pointed out of bounds (zero-filled, no block-table read). Lane 0 first waits
// for the stage to be empty and posts the byte count.
template <typename C>
__device__ __forceinline__ void load_kv_tile(const HopperPrefillParams& p, const CUtensorMap* map, const Work& w,
                                             int key0, int kv_hi, uint32_t dst, uint32_t full, uint32_t empty,
                                             uint32_t empty_parity, bool wait_empty, int lane) {
  if (lane == 0) {
    if (wait_empty) mbar_wait(empty, empty_parity);
    mbar_expect_tx(full, C::kTileBytes);
  }
  __syncwarp();
  constexpr int kBoxes = C::kBlockN / 16;
  if (lane < kBoxes) {
    const int token = key0 + 16 * lane;
    int block = p.num_blocks, slot = 0;
    if (token < kv_hi) {
      block = p.block_tables[static_cast<int64_t>(w.b) * p.table_stride + (token >> p.block_size_log2)];
      slot = token & ((1 << p.block_size_log2) - 1);
    }
#pragma unroll
    for (int panel = 0; panel < C::kPanels; ++panel)
      tma_load_4d(dst + panel * (C::kBlockN * C::kRowBytes) + lane * 16 * C::kRowBytes, map, full,
                  panel * C::kPanelElems, w.kvh, slot, block);
  }
}

// fp8: V tile [kBlockN keys, kHeadDim] (as loaded) -> Vt [kHeadDim, kBlockN keys], K-major for the
// PV wgmma. Within each 16 keys, column 4t + i of Vt holds key 2t + (i & 1) + 8 (i >> 1): the key
// order in which the S accumulators of thread t sit in the e4m3 A fragment of P, so P needs no
// shuffle. Keys >= kv_len become 0 (their cache slots may hold anything, NaN included).
// A thread moves 4 keys x 4 columns (4 word loads, 4 word stores). Lane (t = lane % 4, b = lane / 4)
// of item (dqb, r) takes columns 4 (8 dqb + b) .. +3 of key group h16 = b ^ r: with d128's 128-byte
// rows the loads of a warp hit 32 different banks (the swizzle XORs the 16-byte chunk with key % 8 =
// 2t + c, the word is b % 4; d64's 64-byte rows: 2-way), and so do the stores (Vt chunk h16 ^
// (column % 8) = b ^ r ^ 4 (b & 1) ^ e, the word is t). The old mapping stored 4-way conflicted.
template <typename C, int kHeadDim>
__device__ __forceinline__ void transpose_v(const uint8_t* __restrict__ raw, uint8_t* __restrict__ vt, int key0, int kv_len,
                                            int tid) {
  constexpr int kItems = kHeadDim / 32 * 8;  // (32-column block, key-group rotation r)
  constexpr int kBatch = 2;                   // items whose loads are in flight together
  static_assert(kItems % (4 * kBatch) == 0 && C::kBlockN == 128 && C::kPanels == 1);
  const int warp = tid / 32, lane = tid % 32, t = lane % 4, b = lane / 4;
#pragma unroll 1
  for (int k0 = 0; k0 < kItems / 4; k0 += kBatch) {
    uint32_t w[kBatch][4];
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int item = warp + 4 * (k0 + u), d0 = 4 * (8 * (item / 8) + b), h16 = b ^ (item % 8);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int key = 16 * h16 + 2 * t + (i & 1) + 8 * (i >> 1);
        const uint32_t v =
            *reinterpret_cast<const uint32_t*>(raw + swizzled<C::kRowBytes>(key, d0 / 16) + d0 % 16);
        w[u][i] = key0 + key < kv_len ? v : 0u;
      }
    }
#pragma unroll
    for (int u = 0; u < kBatch; ++u) {
      const int item = warp + 4 * (k0 + u), d0 = 4 * (8 * (item / 8) + b), h16 = b ^ (item % 8);
      const uint32_t lo01 = __byte_perm(w[u][0], w[u][1], 0x5140), lo23 = __byte_perm(w[u][2], w[u][3], 0x5140);
      const uint32_t hi01 = __byte_perm(w[u][0], w[u][1], 0x7362), hi23 = __byte_perm(w[u][2], w[u][3], 0x7362);
      const uint32_t out[4] = {__byte_perm(lo01, lo23, 0x5410), __byte_perm(lo01, lo23, 0x7632),
                               __byte_perm(hi01, hi23, 0x5410), __byte_perm(hi01, hi23, 0x7632)};
#pragma unroll
      for (int e = 0; e < 4; ++e) *reinterpret_cast<uint32_t*>(vt + swizzled<128>(d0 + e, h16) + 4 * t) = out[e];
    }
  }
}

template <bool kFp8, int kHeadDim>
__device__ __forceinline__ void produce(const HopperPrefillParams& p, const Work& w, uint32_t smem,
                                        uint8_t* smem_ptr, Bars bars, int tid) {
  using C = HopperConfig<kFp8, kHeadDim>;
  const int warp = tid / 32, lane = tid % 32;
  const int kv_valid = w.kv_len;  // only boxes below kv_len read the block table
  if constexpr (!kFp8) {
    if (warp != 0) return;
    if (lane == 0) {
      mbar_expect_tx(bars.q(), C::kQBytes);
#pragma unroll
      for (int panel = 0; panel < C::kPanels; ++panel)
        tma_load_3d(smem + C::kQ + panel * C::kBlockM * C::kRowBytes, &p.q_map, bars.q(), panel * C::kPanelElems,
                    w.head, w.q_row + w.row0);
    }
    for (int j = 0; j < w.n_tiles; ++j) {
      const int s = j % C::kStages;
      const uint32_t parity = ((j / C::kStages) & 1) ^ 1;
      const int key0 = w.tile0 + j * C::kBlockN;
      load_kv_tile<C>(p, &p.k_map, w, key0, kv_valid, smem + C::kK + s * C::kTileBytes, bars.full_k(s),
                      bars.empty_k(s), parity, true, lane);
      load_kv_tile<C>(p, &p.v_map, w, key0, kv_valid, smem + C::kV + s * C::kTileBytes, bars.full_v(s),
                      bars.empty_v(s), parity, true, lane);
    }
  } else {
    auto issue = [&](int j) {  // warp 0: K tile j and raw V tile j
      const int s = j % C::kStages;
      const int key0 = w.tile0 + j * C::kBlockN;
      load_kv_tile<C>(p, &p.k_map, w, key0, kv_valid, smem + C::kK + s * C::kTileBytes, bars.full_k(s),
                      bars.empty_k(s), ((j / C::kStages) & 1) ^ 1, true, lane);
      load_kv_tile<C>(p, &p.v_map, w, key0, kv_valid, smem + C::kV + s * C::kTileBytes, bars.full_raw(s), 0, 0,
                      false, lane);
    };
    // Raw V tile j + kStages - 1 goes into the buffer of tile j - 1, transposed in the last round.
    if (warp == 0)
      for (int j = 0; j < C::kStages - 1 && j < w.n_tiles; ++j) issue(j);
    for (int j = 0; j < w.n_tiles; ++j) {
      if (warp == 0 && j + C::kStages - 1 < w.n_tiles) issue(j + C::kStages - 1);
      const int s = j % C::kStages;
      mbar_wait(bars.full_raw(s), (j / C::kStages) & 1);
      mbar_wait(bars.empty_v(s), ((j / C::kStages) & 1) ^ 1);
      transpose_v<C, kHeadDim>(smem_ptr + C::kV + s * C::kTileBytes, smem_ptr + C::kVt + s * C::kVtBytes,
                               w.tile0 + j * C::kBlockN, w.kv_len, tid);
      fence_async_smem();
      named_sync(3, 128);
      if (tid == 0) mbar_arrive(bars.full_v(s));
    }
  }
}

static_assert(HopperConfig<false, 128>::kStages == Bars::kStages && HopperConfig<true, 128>::kStages == Bars::kStages);

}  // namespace kiln::cuda::hopper

#include "kiln/kernels/cuda/attention/hopper_prefill_consumer.cuh"
