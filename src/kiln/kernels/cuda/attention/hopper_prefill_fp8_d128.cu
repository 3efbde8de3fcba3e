// fp8 e4m3-cache, head_dim 128 variant of the Hopper prefill attention and its tuning rows: row 0
// ships, the others are the bench's A/B rows; "probe:" rows are the bench's bounds (a step skipped,
// wrong results; the tests skip them).
#include "kiln/kernels/cuda/attention/hopper_prefill_launch.cuh"
#include "kiln/kernels/cuda/attention/hopper_prefill_variants.h"

namespace kiln::hopper_launch {
namespace {

// Features (hopper_prefill_kernel.cuh): v2 = fast V transpose, tree softmax reductions, row sums on
// the tensor cores, lazy max.
constexpr int kFastVt = cuda::hopper::kFeatFastVt, kTree = cuda::hopper::kFeatTree,
              kRowSum = cuda::hopper::kFeatRowSum, kLazy = cuda::hopper::kFeatLazy;
constexpr int kV2 = kFastVt | kTree | kRowSum | kLazy;
constexpr int kSolo = cuda::hopper::kFeatSolo, kLdsm = cuda::hopper::kFeatLdsmVt;

// "kKvV": K (and raw V) / transposed V stages; "overlap": P of tile j is computed and packed (into
// a second register set) while this warpgroup's PV product of tile j - 1 runs; "solo": no ping-pong
// between the consumer warpgroups (compiled out; "nopp": launched off); "ldsm": the V transpose by
// ldmatrix.trans / stmatrix; "polyA/B": A in B column groups of exponentials on the FMA pipe;
// "split-q": Q as two e4m3 parts (max error 2.5e-2 instead of 4.0e-2, twice the QK
// work: 606 vs 682 at causal 8K); "s2": the kernel before v2.
constexpr HopperPrefillTuning kFp8D128[] = {
    // Row 0 ships (2026-11-23, sixteenth session): row 1's kernel computing the row max only when
    // some P of the warp saturates e4m3 (kFeatNoMax: P against the running max as it stands, the
    // max and the tile again only then; bias 7 and lazy 1.75 instead of 8 and 0.75). The fast path
    // drops the 64 FMNMX, 4 quad shuffles and the rescale test a tile (the loop ~460 -> ~290
    // instructions). H100, causal, one call, vs row 1 (shipped before): 8K 833.7 / 838.0 vs 754.4 /
    // 758.6 TFLOP/s (A/B loop, two passes); 1K / 2K / 4K / 16K / 32K 443.8 / 627.3 / 775.3 / 865.5 /
    // 891.8 vs 427.0 / 581.2 / 709.1 / 804.6 / 810.8. Max error unchanged (3.97e-2).
    // Then (same session) the loop two tiles a trip for no-max rows (P alternates between two
    // fragment sets, no copy) and no anchor arrive (the saturation vote orders the wait): one call,
    // four timings each alternated, first timing at 8K 959.4-965.7 vs 895.5-909.2, the A/B loop
    // 883.8-938.4 vs 826.0-882.4; 1K-32K (one sweep) 450 / 650 / 831 / 869 / 930 / 951 vs 445 /
    // 625 / 790 / 843 / 878 / 896.
    {"persistent k4v4 vtpre overlap solo nomax", fp8_d128_vtpre_k4v4_solo_nomax},
    // Row 1 shipped before (2026-11-22, helper h18): row 20's kernel (k4v4 vtpre) compiled without the
    // consumers' ping-pong (kFeatSolo: both warpgroups run their softmax at the same time, two warps
    // a scheduler to hide its latency; ncu: issue 43 -> 46%, barrier stalls 0.26 -> 0.06 per
    // instruction, no pipe above 45%). H100, causal, one call, vs row 20 (the ping-pong row shipped
    // before): 1K / 2K / 4K / 8K / 16K / 32K 418 / 568 / 685 / 754 / 778 / 815 TFLOP/s vs 390 / 540 /
    // 653 / 729 / 767 / 797 (8K: better of two passes; others one timing, +-3%); the ping-pong row
    // run with options.pingpong = false measured 745 / 754 / 755 at 8K in three calls. Same numerics
    // (max error 3.97e-2). Without a workspace: the in-kernel transpose, k3v3 ldsm solo (row 8).
    {"persistent k4v4 vtpre overlap solo", fp8_d128_vtpre_k4v4_solo},
    // Row 2 shipped before row 1 (2026-11-22): 682 TFLOP/s at causal 8K vs 651 for row 3 (shipped
    // before it); 16K 693 vs 676, 32K 721 vs 700; 1K / 2K 3-5% below it (373 / 512 vs 391 / 534). Max error
    // 3.97e-2 on the tests.
    {"persistent k3v3 v2 overlap ldsm", tuned<true, 128, 3, 3, true, 0, true, false, kV2 | kLdsm>},
    {"persistent k3v2 v2", tuned<true, 128, 3, 2, true, 0, false, false, kV2>},
    {"persistent k3v3 v2 overlap ldsm split-q", tuned<true, 128, 3, 3, true, 0, true, true, kV2 | kLdsm>},
    {"persistent k3v2 v2 split-q", tuned<true, 128, 3, 2, true, 0, false, true, kV2>},
    {"persistent k3v2 v2 overlap", tuned<true, 128, 3, 2, true, 0, true, false, kV2>},
    {"persistent k3v2 v2 overlap ldsm", tuned<true, 128, 3, 2, true, 0, true, false, kV2 | kLdsm>},
    {"persistent k3v3 v2 overlap ldsm solo", tuned<true, 128, 3, 3, true, 0, true, false, kV2 | kLdsm | kSolo>},
    {"persistent k2v3 v2 overlap ldsm", tuned<true, 128, 2, 3, true, 0, true, false, kV2 | kLdsm>},
    {"persistent k3v3 v2 ldsm", tuned<true, 128, 3, 3, true, 0, false, false, kV2 | kLdsm>},
    {"persistent k3v3 v2 overlap ldsm poly1/8", tuned<true, 128, 3, 3, true, 0x80, true, false, kV2 | kLdsm>},
    {"persistent s2", tuned<true, 128, 2, 2, true>},
    // V from the pre-pass (hopper_vt_prepass, timed with the kernel; without options.workspace these
    // rows run their Fallback, the in-kernel transpose) and f16x2 exponentials: see their files.
    {"persistent k3v3 vtpre overlap", fp8_d128_vtpre_k3v3},
    {"persistent k3v3 vtpre overlap r240", fp8_d128_vtpre_k3v3_r240},
    {"persistent k2v4 vtpre overlap", fp8_d128_vtpre_k2v4},
    {"persistent k3v3 vtpre overlap h2", fp8_d128_vtpre_k3v3_h2},
    {"persistent k3v3 vtpre overlap poly1/8", fp8_d128_vtpre_k3v3_poly8},
    {"persistent k3v3 vtpre overlap solo", fp8_d128_vtpre_k3v3_solo},
    // The polynomial exponentials on row 1's kernel (2026-11-22, helper h18; rows removed, numbers in
    // docs/perf.md): no gain (ncu: no pipe above 45%, the softmax's latency is what the GEMMs wait
    // for). "nopp": row 20's kernel launched with the ping-pong off (HopperPrefillParams::pingpong).
    {"persistent k4v4 vtpre overlap nopp", fp8_d128_vtpre_k4v4_nopp},
    // Shipped before row 1 (92087cb), ping-pong on, V from the pre-pass (timed with it, 12.5 us at
    // 8K). Helper h17's call (k3v3, this row's k3v3 sibling, row 13): 1K / 2K / 4K / 8K / 16K / 32K
    // 394 / 537 / 664 / 730 / 761 / 766 TFLOP/s vs 372 / 515 / 615 / 670 / 688 / 729 for row 2.
    // At 8K within the +-3% noise: k3v3 solo 727 / 726, poly1/8 721 / 743, k2v4 720 / 719; r240 700 /
    // 708, h2 689 / 693. Three calls put k4v4 above k3v3 (713 / 727 / 742 vs 706 / 711 / 707).
    {"persistent k4v4 vtpre overlap", fp8_d128_vtpre_k4v4},
    // Row 1 with FADD row sums instead of the tensor-core ones, and with 24 / 240 registers: 626.2 and
    // 749.8 vs 772.1 TFLOP/s at causal 8K (H100, one call, 2026-11-22 ninth session; rows removed).
    // Row 1 with Q quantized by producer warps 2 and 3 into two Q buffers (bit-exact to row 1): 731 /
    // 729 vs 753 / 756 at 8K, 299 vs 420 at 1K (the two warps quantize a work's Q slower than the
    // consumers do; ded1175, reverted). Row 1 with the next work's Q rows prefetched to L2 at the last
    // key tile (prefetch.global.L2, the address from find_work of the next work): 703.7 / 709.9 vs
    // 747.6 / 752.3 at 8K (2c0c3c2, reverted).
    // Row 1 with Q quantized outside the kernel (options.q_fp8, e.g. quantize_fp8_cuda) and
    // TMA-loaded per consumer warpgroup by producer warps 2 / 3; without q_fp8 it is row 1. H100,
    // causal, one call (2026-11-22, tenth session), vs row 1: 1K / 2K / 4K / 8K 471 / 603 / 679 / 734
    // vs 417 / 572 / 681 / 741 TFLOP/s (the per-work Q quantization gone; long works unchanged). The
    // quantization itself (quantize_fp8_cuda, 2.6 TB/s) costs more than that saving when run as its
    // own pass, so nothing ships it: a RoPE kernel writing the e4m3 Q would (not done). An earlier
    // build with one shared 128-row Q tile (and the main loop's slower code, before the __syncwarp
    // in consume): 469 / 611 / 697 / 733.
    {"persistent k4v4 vtpre overlap solo qtma", fp8_d128_vtpre_k4v4_solo_qtma},
    {"persistent k4v4 vtpre overlap nomax", fp8_d128_vtpre_k4v4_nomax},
    {"persistent k3v3 vtpre overlap solo nomax", fp8_d128_vtpre_k3v3_solo_nomax},
    // Row 0 with kPBias 6 / kLazyLog2 2.75 (the max moving rarer still): 782.2 / 786.2 vs 886.4 /
    // 868.9 at causal 8K (one call, two passes); removed. Rows 22 / 23 (ping-pong; k3v3 solo) with
    // kFeatNoMax: 806.5 / 792.6 and 821.1 / 810.0 vs 824.6 / 822.4 for row 0 in their call.
    {"probe: k3v3 v2 overlap ldsm no transpose", tuned<true, 128, 3, 3, true, 0, true, false, kV2 | kLdsm, 1>},
    {"probe: k3v3 v2 overlap ldsm no exp", tuned<true, 128, 3, 3, true, 0, true, false, kV2 | kLdsm, 2>},
    {"probe: k3v3 v2 overlap ldsm no Q loads", tuned<true, 128, 3, 3, true, 0, true, false, kV2 | kLdsm, 4>},
    {"probe: k3v3 vtpre overlap no exp", fp8_d128_vtpre_k3v3_noexp},
    {"probe: k3v3 v2 overlap ldsm no transpose/exp", tuned<true, 128, 3, 3, true, 0, true, false, kV2 | kLdsm, 3>},
};

Status run_fp8_d128(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s) {
  return run_table(kFp8D128, a, o, s);
}

}  // namespace

HopperPrefillVariant fp8_d128_variant() { return {DType::kFp8E4M3, 128, &run_fp8_d128, kFp8D128}; }

}  // namespace kiln::hopper_launch
