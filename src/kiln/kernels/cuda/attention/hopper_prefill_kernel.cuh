// The Hopper prefill attention kernel, one template over <kFp8 cache, kHeadDim, Tune>. A CTA owns
// 128 query tokens of one q head at a time (persistent tunings: a strided list of such works, the
// loads of the next overlapping the last tiles and the epilogue of the current one): warpgroup 0
// produces (TMA loads of the Q tile and of K/V tiles of 128 keys, 16-token boxes addressed through
// the block table, K and V from separate warps; for fp8 it also transposes V in shared memory,
// since fp8 wgmma wants both operands K-major), warpgroups 1 and 2 consume 64 rows each: S = Q K^T
// (wgmma SS), masked online softmax in registers, O += P V (wgmma RS, P straight from the S
// accumulators), the softmax of one warpgroup overlapping the products of the other (ping-pong).
#pragma once
#include <cuda.h>
#include <cuda_runtime.h>

#include "kiln/kernels/cuda/attention/attention_device.cuh"
#include "kiln/kernels/cuda/attention/hopper_device.cuh"
#include "kiln/kernels/cuda/attention/hopper_v_transpose.cuh"

namespace kiln::cuda::hopper {

// Everything the kernel reads; passed __grid_constant__ so the tensor maps stay in param space.
struct HopperPrefillParams {
  CUtensorMap q_map;            // bf16: 3-D over q [num_tokens, hq, d], box [128 rows, 1, 64]; kQTma: over q_fp8, box [64, 1, 128]
  CUtensorMap k_map, v_map;     // 4-D over the caches [blocks, bs, hkv, d], box [1, 16, 1, row]
  CUtensorMap vt_map;           // kVtPre: 4-D over the pre-pass tiles [hkv, cap_tiles, d, 128 keys], one tile a box
  const int32_t* vt_offsets;    // kVtPre: [batch + 1] first pre-pass tile of each sequence
  const void* q;                // [num_tokens, num_q_heads, head_dim] bf16
  const float* q_scales;        // kQTma: [num_tokens, num_q_heads], the row scales of q_fp8 (q_map)
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
  int pingpong;         // consumer warpgroups take turns issuing their GEMMs (named barriers 4, 5)
  int heads_per_chunk;  // q heads scheduled together (a multiple of group dividing num_q_heads)
  int row_blocks;       // bound on the row blocks of all sequences (sum ceil(q_len / 128) <= it)
  int num_works;        // num_q_heads * row_blocks: the linear work ids (some past the end, skipped)
  float scale_log2;     // softmax scale * log2(e) (fp8: times k_scale)
  float v_scale;        // 1 for bf16
};

// One compiled tuning (the bench times them side by side; the variant table ships one).
// kKStages / kVStages: shared-memory stages of K and of V (fp8: of Vt and the raw V tiles; equal).
// kPersistent: grid of one CTA per SM walking works blockIdx.x, + gridDim.x, ... (else one CTA per
// work). kPolyMask (fp8): column group j of the exponentials (2 of the 16 per row a thread holds)
// by a polynomial on the FMA pipe (exp2_poly) instead of MUFU.EX2 when bit j % 8 is set (0: none;
// 0x80: 1/8, 0x88: 1/4, 0x92: 3/8, 0xaa: 1/2). kOverlap: the softmax of tile j while this warpgroup's PV
// product of tile j - 1 runs (else ptxas waits for it first: the SASS of the fp8 kernel before had
// all 64 MUFU.EX2 after the wait); bf16: the wait anchored after the row sums; fp8: P packed into a
// second fragment set before the wait, anchored after the pack. kSplitQ (fp8): Q = hi + lo, both e4m3
// (lo: the rounding residual of hi, same row scale), S = hi K^T + lo K^T in one accumulator: Q
// carries ~7 mantissa bits instead of 3, for twice the QK wgmma work. kFeatures (fp8 d128), bits:
//   kFeatFastVt: the producer's V transpose by transpose_v_fast (precomputed addresses, 16-byte
//     stores) with K and raw V tiles kKStages deep (raw V then runs kKStages - 1 tiles ahead) and
//     kVStages transposed tiles;
//   kFeatTree: the softmax's row max and row sums as 4 independent chains each (not 1 and 2);
//   kFeatRowSum: the row sums of P on the tensor cores (P times a tile of ones, m64n8k32 beside each
//     PV step) instead of 64 FADDs a thread, and of the e4m3 P that PV uses;
//   kFeatLazy: the running max moves only when it grows by more than 0.75 (log2 units; P stays
//     below 2^8.75 < 448, e4m3's largest), so O is rescaled less often;
//   kFeatLdsmVt (with kFeatFastVt): the transpose by ldmatrix.trans / stmatrix (transpose_v_ldsm);
//   kFeatSolo: no ping-pong whatever the options say (the consumers issue their GEMMs freely; with
//     the intra-warpgroup overlap the softmax hides behind the own PV product and the other's GEMMs).
//   kFeatVtPre (fp8 d128): V comes pre-transposed by hopper_vt_prepass (a tile per TMA box into the
//     kVStages Vt stages; no raw V, no transpose): producer warp 0 loads K, warp 1 Vt, the other two
//     exit; the producer keeps 40 registers and the consumers get 232 (kFeatRegs240: 24 / 240);
//   kFeatLaunchSolo: the launch turns the ping-pong off (HopperPrefillParams::pingpong = 0) in a
//     kernel compiled with it (kFeatSolo removes it at compile time: different SASS);
//   kFeatQTma (fp8 d128 with kFeatVtPre): Q comes quantized per row from outside the kernel
//     (HopperPrefillOptions::q_fp8 / q_scales): producer warp 2 + wg TMA-loads consumer wg's 64 Q
//     rows of a work once that warpgroup's last QK product of the previous work is done (its own
//     barrier pair: the consumers never wait for each other, as they do not when they quantize Q
//     themselves; one shared 128-row tile was measured only before the __syncwarp in consume).
//     No quantization, global loads or barrier at the start of a work (without q_fp8 the row runs
//     NoQTma);
//   kFeatEx2H2 (fp8, with kFeatRowSum): the exponentials two at a time in f16 (ex2.approx.f16x2 on
//     the scores converted to f16x2), P packed from f16x2 straight to e4m3x2. On sm_90 ptxas emits
//     two MUFU.EX2 per ex2.approx.f16x2 (130 per kernel either way) plus the conversions: slower.
//   kFeatRowSum for bf16 (no-max rows only): the row sums by an m64n8k16 wgmma over a tile of bf16
//     ones beside each PV step, as for fp8.
//   kFeatNoMax (fp8 overlap rows, bf16): no row max in the common case: P of tile j >= 1 is
//     computed against the running max as it stands and the row max only when some P of the warp
//     reached the band where the max would have moved (fp8: e4m3's saturation, a byte >= 0x7E, P >=
//     432; bf16: P >= 2^kLazyLog2 = 256; also a row still without a max: +inf / NaN), then the tile
//     again with the moved max (fp8: update_row_max, the lazy rule, then P again from the kept
//     scores; bf16: P in place, so the moved row's P, O and sum scale by 1 / its largest P,
//     fix_p_bf16). fp8: kPBias 7 and kLazyLog2 1.75 instead of 8 and 0.75 (the same P <= 2^8.75,
//     moves rarer); bf16: the same lazy rule (8) as without.
// kProbe (bench rows only, wrong results): bit 0 skips the V transpose, bit 1 the exponentials, bit 2
// the global loads of Q (fp8: every Q element 1.0).
constexpr int kFeatFastVt = 1, kFeatTree = 2, kFeatRowSum = 4, kFeatLazy = 8, kFeatSolo = 16, kFeatLdsmVt = 32,
              kFeatVtPre = 64, kFeatEx2H2 = 128, kFeatRegs240 = 256, kFeatLaunchSolo = 1024, kFeatQTma = 2048, kFeatNoMax = 4096;
template <int kKStages_, int kVStages_, bool kPersistent_, int kPolyMask_, bool kOverlap_, bool kSplitQ_ = false,
          int kFeatures_ = 0, int kProbe_ = 0>
struct HopperTune {
  static constexpr int kKStages = kKStages_, kVStages = kVStages_, kPolyMask = kPolyMask_, kProbe = kProbe_;
  static constexpr bool kPersistent = kPersistent_, kOverlap = kOverlap_, kSplitQ = kSplitQ_;
  static constexpr bool kFastVt = (kFeatures_ & kFeatFastVt) != 0, kTree = (kFeatures_ & kFeatTree) != 0,
                        kRowSum = (kFeatures_ & kFeatRowSum) != 0, kLazy = (kFeatures_ & kFeatLazy) != 0,
                        kSolo = (kFeatures_ & kFeatSolo) != 0, kLdsmVt = (kFeatures_ & kFeatLdsmVt) != 0,
                        kVtPre = (kFeatures_ & kFeatVtPre) != 0, kEx2H2 = (kFeatures_ & kFeatEx2H2) != 0,
                        kRegs240 = (kFeatures_ & kFeatRegs240) != 0,
                        kLaunchSolo = (kFeatures_ & kFeatLaunchSolo) != 0, kQTma = (kFeatures_ & kFeatQTma) != 0,
                        kNoMax = (kFeatures_ & kFeatNoMax) != 0;
  // What a kVtPre tuning runs without a pre-pass workspace: the shipped in-kernel transpose (3 K / raw
  // V stages, 3 Vt stages, ldmatrix transpose), its other features kept.
  using Fallback = HopperTune<3, 3, kPersistent_, kPolyMask_, kOverlap_, kSplitQ_,
                              (kFeatures_ & ~(kFeatVtPre | kFeatRegs240 | kFeatQTma)) | kFeatFastVt | kFeatLdsmVt,
                              kProbe_>;
  // What a kQTma tuning runs without pre-quantized Q: the same tuning quantizing Q itself.
  using NoQTma = HopperTune<kKStages_, kVStages_, kPersistent_, kPolyMask_, kOverlap_, kSplitQ_,
                            kFeatures_ & ~kFeatQTma, kProbe_>;
};

template <bool kFp8, int kHeadDim, class Tune>
struct HopperConfig {
  static constexpr int kElemBytes = kFp8 ? 1 : 2;
  static constexpr int kRowBytes = kHeadDim * kElemBytes >= 128 ? 128 : 64;  // swizzle width
  static constexpr int kPanels = kHeadDim * kElemBytes / kRowBytes;           // column panels of a tile
  static constexpr int kPanelElems = kRowBytes / kElemBytes;
  static constexpr int kBlockM = 128, kBlockN = 128;
  static constexpr int kKStages = Tune::kKStages, kVStages = Tune::kVStages;
  static constexpr bool kVtPre = kFp8 && Tune::kVtPre;
  static_assert(!kFp8 || Tune::kFastVt || kVtPre || kKStages == kVStages, "fp8 loads K and raw V of a tile together");
  static_assert(!Tune::kVtPre || (kFp8 && kHeadDim == 128 && !Tune::kFastVt), "the V pre-pass is fp8 d128, no transpose");
  static_assert(!Tune::kEx2H2 || (kFp8 && Tune::kRowSum && Tune::kPolyMask == 0 && Tune::kProbe == 0),
                "f16x2 exponentials need the tensor-core row sums");
  static_assert(!Tune::kFastVt || (kFp8 && kHeadDim == 128), "transpose_v_fast is for fp8 d128");
  static_assert(!Tune::kLdsmVt || Tune::kFastVt, "transpose_v_ldsm runs in transpose_v_fast's pipeline");
  static constexpr bool kRowSum = Tune::kRowSum;
  static_assert(!Tune::kRowSum || kFp8 || Tune::kNoMax, "bf16 row sums on the tensor cores: no-max rows");
  static constexpr bool kQTma = kFp8 && Tune::kQTma;
  static_assert(!Tune::kQTma || (kVtPre && !Tune::kSplitQ && Tune::kProbe == 0), "kFeatQTma: fp8 d128 vtpre rows");
  // fp8: raw V tiles are loaded with K (kKStages of them; none with the pre-pass); bf16: the V tiles (kVStages).
  static constexpr int kVTiles = kFp8 ? (kVtPre ? 0 : kKStages) : kVStages;
  static constexpr int kThreads = 384;
  static constexpr int kKStep = kFp8 ? 32 : 16;  // wgmma k (elements); 32 bytes either way
  static constexpr int kStepsPerPanel = kRowBytes / 32;
  static constexpr bool kSplitQ = kFp8 && Tune::kSplitQ;
  static constexpr int kQTileBytes = kBlockM * kHeadDim * kElemBytes;  // one Q tile (fp8 split: hi, then lo)
  static constexpr int kQBytes = kQTileBytes * (kSplitQ ? 2 : 1);
  static constexpr int kTileBytes = kBlockN * kHeadDim * kElemBytes;  // one K or V tile
  static constexpr int kVtBytes = kFp8 ? kHeadDim * kBlockN : 0;      // transposed fp8 V tile
  static constexpr int kOBytes = kBlockM * kHeadDim * 2;              // bf16 O staging (own buffer)
  static constexpr int kQ = 0;
  static constexpr int kK = kQ + kQBytes;
  static constexpr int kV = kK + kKStages * kTileBytes;
  static constexpr int kVt = kV + kVTiles * kTileBytes;
  static constexpr int kO = kVt + kVStages * kVtBytes;
  static constexpr int kScales = kO + kOBytes;  // fp8: Q row scales, float[128]
  static constexpr int kOnes = kScales + 1024;  // kRowSum: 1 KB of ones (e4m3 / bf16; B of the row-sum wgmma)
  static constexpr int kBars = kScales + kBlockM * 4 + (kRowSum ? 1024 + 512 : 0);
  static constexpr int kNumBars = 3 + 3 * kKStages + 2 * kVStages + 4;  // Bars (full_raw: <= kKStages)
  static constexpr int kSmemBytes = kBars + kNumBars * 8 + 1024;  // + alignment slack
  static_assert(kSmemBytes <= 232448, "over the 227 KB of shared memory of a CTA");
  static constexpr int kProducerRegs = kVtPre ? (Tune::kRegs240 ? 24 : 40) : kFp8 ? 56 : 40;
  static constexpr int kConsumerRegs = kVtPre ? (Tune::kRegs240 ? 240 : 232) : kFp8 ? 224 : 232;
  // setmaxnreg moves registers within what the CTA got at launch (168 a thread: __launch_bounds__(384,
  // 1)); asking for more deadlocks the increase (seen with 32 / 240).
  static_assert(kProducerRegs + 2 * kConsumerRegs <= 3 * 168, "more registers than the launch allocated");
  // P = 2^(score log2 units - running max + kPBias), the max moving only when it grows by more than
  // kLazyLog2. fp8: P in (0, 2^(8 + kLazyLog2)] <= 448 uses e4m3's normal range (values down to 2^-14
  // of the max keep 3 mantissa bits; the bias cancels in O / l); bf16 has the exponent range, so lazy
  // and unbiased.
  static constexpr bool kNoMax = Tune::kNoMax;
  static_assert(!Tune::kNoMax || !kFp8 || (Tune::kOverlap && Tune::kLazy && !Tune::kEx2H2 && Tune::kPolyMask == 0),
                "kFeatNoMax: fp8 overlap rows with the lazy max");
  static_assert(!Tune::kNoMax || kFp8 || Tune::kProbe == 0, "kFeatNoMax: no bf16 probes");
  static constexpr float kPBias = kFp8 ? (kNoMax ? 7.f : 8.f) : 0.f;
  static constexpr float kLazyLog2 = kFp8 ? (kNoMax ? 1.75f : Tune::kLazy ? 0.75f : 0.f) : 8.f;
};

// Barrier slots (8 bytes each) after kBars.
template <int kKStages, int kVStages>
struct Bars {
  uint32_t base;
  __device__ uint32_t q() const { return base; }
  __device__ uint32_t q_empty() const { return base + 8; }  // bf16: both warpgroups done with Q
  __device__ uint32_t anchor() const { return base + 16; }  // arrived on, never waited
  __device__ uint32_t full_k(int s) const { return base + 8 * (3 + s); }
  __device__ uint32_t empty_k(int s) const { return base + 8 * (3 + kKStages + s); }
  __device__ uint32_t full_v(int s) const { return base + 8 * (3 + 2 * kKStages + s); }  // bf16: V; fp8: Vt
  __device__ uint32_t empty_v(int s) const { return base + 8 * (3 + 2 * kKStages + kVStages + s); }
  __device__ uint32_t full_raw(int s) const { return base + 8 * (3 + 2 * kKStages + 2 * kVStages + s); }  // fp8, s < kVTiles
  // kQTma: consumer warpgroup wg's half of the Q tile landed / free again.
  __device__ uint32_t q_half(int wg) const { return base + 8 * (3 + 3 * kKStages + 2 * kVStages + wg); }
  __device__ uint32_t q_half_empty(int wg) const { return base + 8 * (5 + 3 * kKStages + 2 * kVStages + wg); }
};

// Stage and phase parity of a CTA's tile counter c (>= 0) in a ring of kStages (unsigned: no sign
// fix-ups in the loop's uniform-datapath code).
template <int kStages>
__device__ __forceinline__ int stage_of(int c) { return static_cast<int>(static_cast<uint32_t>(c) % kStages); }
template <int kStages>
__device__ __forceinline__ uint32_t phase_of(int c) { return (static_cast<uint32_t>(c) / kStages) & 1; }

// What one CTA works on.
struct Work {
  int b, head, kvh, q_row, q_len, kv_len, q_pos0, row0;  // row0: first token of the block in its sequence
  int tile0, n_tiles;                                    // key tiles [tile0, tile0 + n_tiles * kBlockN)
  int vt_tile;                                           // kVtPre: pre-pass tile of key tile0
};

// Work `linear` (< num_works) -> w; false when it lies past the last row block. Whole-warp call.
template <int kBlockM, int kBlockN>
__device__ __forceinline__ bool find_work(const HopperPrefillParams& p, int linear, Work& w) {
  const int lane = threadIdx.x % 32;
  // Work ids run about in launch order: all row blocks of one chunk of heads_per_chunk q heads
  // (whole GQA groups), heads fastest, before the next chunk, so that the keys and values in
  // flight (the chunk's kv heads of about one sequence) stay in L2 on long sequences.
  const int per_chunk = p.heads_per_chunk * p.row_blocks;
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
  w.vt_tile = p.vt_offsets != nullptr ? p.vt_offsets[w.b] + w.tile0 / kBlockN : 0;
  return true;
}

// ---- producer -------------------------------------------------------------------------------

// Warp-wide: TMA of key tile `tile` (kBlockN keys from key0) into `dst`, 16-token boxes per lane,
// boxes past kv_hi pointed out of bounds (zero-filled, no block-table read). The block-table reads
// go out before lane 0 waits for the stage to be empty (their latency hides behind the wait); lane
// 0 then posts the byte count.
template <typename C>
__device__ __forceinline__ void load_kv_tile(const HopperPrefillParams& p, const CUtensorMap* map, const Work& w,
                                             int key0, int kv_hi, uint32_t dst, uint32_t full, uint32_t empty,
                                             uint32_t empty_parity, bool wait_empty, int lane) {
  constexpr int kBoxes = C::kBlockN / 16;
  const int token = key0 + 16 * lane;
  int block = p.num_blocks, slot = 0;
  if (lane < kBoxes && token < kv_hi) {
    block = p.block_tables[static_cast<int64_t>(w.b) * p.table_stride + (token >> p.block_size_log2)];
    slot = token & ((1 << p.block_size_log2) - 1);
  }
  if (lane == 0) {
    if (wait_empty) mbar_wait(empty, empty_parity);
    mbar_expect_tx(full, C::kTileBytes);
  }
  __syncwarp();
  if (lane < kBoxes) {
#pragma unroll
    for (int panel = 0; panel < C::kPanels; ++panel)
      tma_load_4d(dst + panel * (C::kBlockN * C::kRowBytes) + lane * 16 * C::kRowBytes, map, full,
                  panel * C::kPanelElems, w.kvh, slot, block);
  }
}
// fp8, warp-wide: key tile `tile` of K and of V (raw) from one read of the block table, into k_dst /
// v_dst, completing on full_k / full_v (lane 0 first waits for the K stage to be empty; the raw V
// stage of the same tile was freed by the producer's own transpose, in program order).
template <typename C>
__device__ __forceinline__ void load_kv_pair(const HopperPrefillParams& p, const Work& w, int key0, uint32_t k_dst,
                                             uint32_t v_dst, uint32_t full_k, uint32_t full_v, uint32_t empty_k,
                                             uint32_t empty_parity, int lane) {
  constexpr int kBoxes = C::kBlockN / 16;
  const int token = key0 + 16 * lane;
  int block = p.num_blocks, slot = 0;
  if (lane < kBoxes && token < w.kv_len) {
    block = p.block_tables[static_cast<int64_t>(w.b) * p.table_stride + (token >> p.block_size_log2)];
    slot = token & ((1 << p.block_size_log2) - 1);
  }
  if (lane == 0) {
    mbar_wait(empty_k, empty_parity);
    mbar_expect_tx(full_k, C::kTileBytes);
    mbar_expect_tx(full_v, C::kTileBytes);
  }
  __syncwarp();
  if (lane < kBoxes) {
#pragma unroll
    for (int panel = 0; panel < C::kPanels; ++panel) {
      const uint32_t off = panel * (C::kBlockN * C::kRowBytes) + lane * 16 * C::kRowBytes;
      tma_load_4d(k_dst + off, &p.k_map, full_k, panel * C::kPanelElems, w.kvh, slot, block);
      tma_load_4d(v_dst + off, &p.v_map, full_v, panel * C::kPanelElems, w.kvh, slot, block);
    }
  }
}

// bf16: the Q tile of work w once both consumer warpgroups are done with the previous one (their
// last QK product). One thread.
template <typename C, class B>
__device__ __forceinline__ void load_q_tile(const HopperPrefillParams& p, const Work& w, uint32_t smem, const B& bars,
                                            int n_work) {
  mbar_wait(bars.q_empty(), (n_work & 1) ^ 1);
  mbar_expect_tx(bars.q(), C::kQBytes);
#pragma unroll
  for (int panel = 0; panel < C::kPanels; ++panel)
    tma_load_3d(smem + C::kQ + panel * C::kBlockM * C::kRowBytes, &p.q_map, bars.q(), panel * C::kPanelElems, w.head,
                w.q_row + w.row0);
}

// One work's loads. `it`: the CTA's tiles before this work (ring stage and phase of tile j are
// those of it + j); `n_work`: works before this one (phase of the Q barriers).
template <bool kFp8, int kHeadDim, class T>
__device__ __forceinline__ void produce(const HopperPrefillParams& p, const Work& w, uint32_t smem,
                                        uint8_t* smem_ptr, Bars<T::kKStages, T::kVStages> bars, int tid, int it,
                                        int n_work) {
  using C = HopperConfig<kFp8, kHeadDim, T>;
  constexpr int KS = C::kKStages, VS = C::kVStages;
  const int warp = tid / 32, lane = tid % 32;
  const int kv_valid = w.kv_len;  // only boxes below kv_len read the block table
  if constexpr (!kFp8) {
    // Warp 2: Q (once both consumer warpgroups are done with the previous one); warp 0: K tiles;
    // warp 1: V tiles, each at its own pace (V of tile j frees one tile later than K of tile j).
    if (warp == 2 && lane == 0) load_q_tile<C>(p, w, smem, bars, n_work);
    if (warp == 0)
      for (int j = 0; j < w.n_tiles; ++j) {
        const int c = it + j, s = stage_of<KS>(c);
        load_kv_tile<C>(p, &p.k_map, w, w.tile0 + j * C::kBlockN, kv_valid, smem + C::kK + s * C::kTileBytes,
                        bars.full_k(s), bars.empty_k(s), phase_of<KS>(c) ^ 1, true, lane);
      }
    if (warp == 1)
      for (int j = 0; j < w.n_tiles; ++j) {
        const int c = it + j, s = stage_of<VS>(c);
        load_kv_tile<C>(p, &p.v_map, w, w.tile0 + j * C::kBlockN, kv_valid, smem + C::kV + s * C::kTileBytes,
                        bars.full_v(s), bars.empty_v(s), phase_of<VS>(c) ^ 1, true, lane);
      }
  } else if constexpr (C::kVtPre) {
    // Warp 0: K tiles (paged, as bf16 does); warp 1: pre-transposed Vt tiles, one box each; kQTma:
    // warps 2 and 3 the Q rows of consumer warpgroups 0 and 1.
    if (C::kQTma && warp >= 2 && lane == 0) {
      const int half = warp - 2;
      mbar_wait(bars.q_half_empty(half), (n_work & 1) ^ 1);
      mbar_expect_tx(bars.q_half(half), C::kQTileBytes / 2);
      tma_load_3d(smem + C::kQ + half * (C::kQTileBytes / 2), &p.q_map, bars.q_half(half), 0, w.head,
                  w.q_row + w.row0 + 64 * half);
    }
    if (warp == 0)
      for (int j = 0; j < w.n_tiles; ++j) {
        const int c = it + j, s = stage_of<KS>(c);
        load_kv_tile<C>(p, &p.k_map, w, w.tile0 + j * C::kBlockN, kv_valid, smem + C::kK + s * C::kTileBytes,
                        bars.full_k(s), bars.empty_k(s), phase_of<KS>(c) ^ 1, true, lane);
      }
    if (warp == 1 && lane == 0)
      for (int j = 0; j < w.n_tiles; ++j) {
        const int c = it + j, s = stage_of<VS>(c);
        mbar_wait(bars.empty_v(s), phase_of<VS>(c) ^ 1);
        mbar_expect_tx(bars.full_v(s), C::kVtBytes);
        tma_load_4d(smem + C::kVt + s * C::kVtBytes, &p.vt_map, bars.full_v(s), 0, 0, w.vt_tile + j, w.kvh);
      }
  } else if constexpr (T::kFastVt) {
    // Warp 0 loads K and raw V of tile j + KS - 1 (into the raw stage transposed last round), then
    // all four warps transpose tile j once its raw V has landed and its Vt stage is free.
    uint32_t ld[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) ld[j] = ((static_cast<uint32_t>(lane >> 2) ^ j) << 4) | (4 * (lane & 3));
    // transpose_v_ldsm's per-lane offsets (matrix m = lane / 8, row r = lane % 8).
    const uint32_t m8 = static_cast<uint32_t>(lane >> 3), r8 = static_cast<uint32_t>(lane & 7);
    const uint32_t ldsm_ld = (8 * (m8 & 1) + r8) * 128 + (((2 * warp + (m8 >> 1)) ^ r8) << 4);
    const uint32_t ldsm_d = 32 * warp + 16 * (m8 >> 1) + 2 * r8 + (m8 & 1);
    const uint32_t ldsm_st = ldsm_d * 128, ldsm_x = ldsm_d & 7;
    auto issue = [&](int j) {
      const int c = it + j, s = stage_of<KS>(c);
      load_kv_pair<C>(p, w, w.tile0 + j * C::kBlockN, smem + C::kK + s * C::kTileBytes,
                      smem + C::kV + s * C::kTileBytes, bars.full_k(s), bars.full_raw(s), bars.empty_k(s),
                      phase_of<KS>(c) ^ 1, lane);
    };
    if (warp == 0)
      for (int j = 0; j < KS - 1 && j < w.n_tiles; ++j) issue(j);
    for (int j = 0; j < w.n_tiles; ++j) {
      if (warp == 0 && j + KS - 1 < w.n_tiles) issue(j + KS - 1);
      const int c = it + j, sr = stage_of<KS>(c), sv = stage_of<VS>(c);
      mbar_wait(bars.full_raw(sr), phase_of<KS>(c));
      mbar_wait(bars.empty_v(sv), phase_of<VS>(c) ^ 1);
      if constexpr (T::kProbe & 1) {
      } else if constexpr (T::kLdsmVt) {
        transpose_v_ldsm(smem + C::kV + sr * C::kTileBytes, smem + C::kVt + sv * C::kVtBytes, ldsm_ld, ldsm_st,
                         ldsm_x, lane & 3, w.kv_len - (w.tile0 + j * C::kBlockN));
      } else {
        transpose_v_fast(smem + C::kV + sr * C::kTileBytes, smem + C::kVt + sv * C::kVtBytes, ld, lane, warp,
                         w.kv_len - (w.tile0 + j * C::kBlockN));
      }
      fence_async_smem();
      named_sync(3, 128);
      if (tid == 0) mbar_arrive(bars.full_v(sv));
    }
  } else {
    auto issue = [&](int j) {  // warp 0: K tile j and raw V tile j
      const int c = it + j, s = stage_of<KS>(c);
      const int key0 = w.tile0 + j * C::kBlockN;
      load_kv_tile<C>(p, &p.k_map, w, key0, kv_valid, smem + C::kK + s * C::kTileBytes, bars.full_k(s),
                      bars.empty_k(s), phase_of<KS>(c) ^ 1, true, lane);
      load_kv_tile<C>(p, &p.v_map, w, key0, kv_valid, smem + C::kV + s * C::kTileBytes, bars.full_raw(s), 0, 0,
                      false, lane);
    };
    // Raw V tile j + VS - 1 goes into the buffer of tile j - 1, transposed in the last round.
    if (warp == 0)
      for (int j = 0; j < VS - 1 && j < w.n_tiles; ++j) issue(j);
    for (int j = 0; j < w.n_tiles; ++j) {
      if (warp == 0 && j + VS - 1 < w.n_tiles) issue(j + VS - 1);
      const int c = it + j, s = stage_of<VS>(c);
      mbar_wait(bars.full_raw(s), phase_of<VS>(c));
      mbar_wait(bars.empty_v(s), phase_of<VS>(c) ^ 1);
      transpose_v<C, kHeadDim>(smem_ptr + C::kV + s * C::kTileBytes, smem_ptr + C::kVt + s * C::kVtBytes,
                               w.tile0 + j * C::kBlockN, w.kv_len, tid);
      fence_async_smem();
      named_sync(3, 128);
      if (tid == 0) mbar_arrive(bars.full_v(s));
    }
  }
}

}  // namespace kiln::cuda::hopper

#include "kiln/kernels/cuda/attention/hopper_prefill_consumer.cuh"
