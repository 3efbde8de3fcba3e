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
// between the consumer warpgroups; "ldsm": the V transpose by ldmatrix.trans / stmatrix; "poly1/N":
// 1 in N column groups of exponentials on the FMA pipe; "split-q": Q as two e4m3 parts (max error
// 2.5e-2 instead of 4.0e-2, twice the QK work: 606 vs 682 at causal 8K); "s2": the kernel before v2.
constexpr HopperPrefillTuning kFp8D128[] = {
    // Row 0 ships (k3v3 measured here, see below): V from the pre-pass when options.workspace is given (timed with it, 12.5 us at
    // 8K), else its fallback, row 1's kernel. H100, causal, one call (2026-11-22, helper h17): 1K / 2K
    // / 4K / 8K / 16K / 32K 394 / 537 / 664 / 730 / 761 / 766 TFLOP/s vs 372 / 515 / 615 / 670 / 688
    // / 729 for row 1 (8K table, best of two passes, two bench runs: 706 / 711 vs 673 / 670). Same
    // numerics as row 1 (the same P and V bytes reach the PV wgmma; max error 3.97e-2). At 8K only,
    // within the +-3% noise: solo 727 / 726, poly1/8 721 / 743, k4v4 713 / 727, k2v4 720 / 719, row 0
    // without ping-pong 745; r240 700 / 708, h2 689 / 693. Probe without exponentials: 928 / 885.
    // Three calls at 8K put k4v4 (4 K and 4 Vt stages) above k3v3 (713 / 727 / 742 vs 706 / 711 /
    // 707), so it ships; k3v3 is row 12.
    {"persistent k4v4 vtpre overlap", fp8_d128_vtpre_k4v4},
    // Row 1 shipped before (2026-11-22): 682 TFLOP/s at causal 8K vs 651 for row 2 (shipped before
    // it); 16K 693 vs 676, 32K 721 vs 700; 1K / 2K 3-5% below it (373 / 512 vs 391 / 534). Max error
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
    {"persistent k3v3 v2 overlap ldsm poly1/8", tuned<true, 128, 3, 3, true, 8, true, false, kV2 | kLdsm>},
    {"persistent s2", tuned<true, 128, 2, 2, true>},
    // V from the pre-pass (hopper_vt_prepass, timed with the kernel; without options.workspace these
    // rows run their Fallback, the in-kernel transpose) and f16x2 exponentials: see their files.
    {"persistent k3v3 vtpre overlap", fp8_d128_vtpre_k3v3},
    {"persistent k3v3 vtpre overlap r240", fp8_d128_vtpre_k3v3_r240},
    {"persistent k2v4 vtpre overlap", fp8_d128_vtpre_k2v4},
    {"persistent k3v3 vtpre overlap h2", fp8_d128_vtpre_k3v3_h2},
    {"persistent k3v3 vtpre overlap poly1/8", fp8_d128_vtpre_k3v3_poly8},
    {"persistent k3v3 vtpre overlap solo", fp8_d128_vtpre_k3v3_solo},
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
