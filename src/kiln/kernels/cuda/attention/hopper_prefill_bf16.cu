// bf16-cache variants of the Hopper prefill attention (head_dim 64 and 128) and their tuning rows:
// row 0 ships, the others are the bench's A/B rows (every row is tested against the CPU reference).
#include "kiln/kernels/cuda/attention/hopper_prefill_launch.cuh"
#include "kiln/kernels/cuda/attention/hopper_prefill_variants.h"

namespace kiln::hopper_launch {
namespace {

constexpr int kTree = cuda::hopper::kFeatTree, kNoMax = cuda::hopper::kFeatNoMax,
              kRowSum = cuda::hopper::kFeatRowSum;

// "overlap": the softmax of tile j runs while this warpgroup's PV product of tile j - 1 does (the
// wgmma wait anchored after the row sums); "tree": max and sums in 4 independent chains. H100,
// causal 8K, best of two passes in one call: 555 (row 0), 561 (overlap), 548 / 544 (tree rows), 541
// (k3v2); k2v3 (528) and k2v3 overlap (533) were dropped. Row 0 alone, first in each call: 570-607.
// (Those rows are now 1-6: row 0 is the no-max row.)
constexpr HopperPrefillTuning kBf16D128[] = {
    // Row 0 ships (2026-11-23, sixteenth session): row 1 without the row max in the common case
    // (kFeatNoMax: P against the running max as it stands, a row's max and P fixed only when some P
    // reaches 2^8). H100, causal, one call, vs row 1 (shipped before), A/B loop: 8K 596.7 / 592.4
    // vs 557.9 / 551.8 TFLOP/s (two passes); 1K / 2K / 4K / 16K / 32K 451.2 / 556.8 / 578.6 / 623.7 /
    // 609.0 vs 431.0 / 525.0 / 553.3 / 568.0 / 582.0 (first timings). Max error 3.4e-3 as before.
    // Row 5 with it (overlap tree nomax): 592.3 / 580.3 at 8K, mixed elsewhere; not kept.
    {"persistent k2v2 nomax", tuned<false, 128, 2, 2, true, 0, false, false, kNoMax>},
    {"persistent k2v2", tuned<false, 128, 2, 2, true>},
    {"grid k2v2", tuned<false, 128, 2, 2, false>},
    {"persistent k3v2", tuned<false, 128, 3, 2, true>},
    {"persistent k2v2 overlap", tuned<false, 128, 2, 2, true, 0, true>},
    {"persistent k2v2 overlap tree", tuned<false, 128, 2, 2, true, 0, true, false, kTree>},
    {"persistent k3v2 overlap tree", tuned<false, 128, 3, 2, true, 0, true, false, kTree>},
    // Row 0 with the row sums on the tensor cores (an m64n8k16 product over ones beside each PV step):
    // 574.0 / 576.4 vs 571.2 / 568.1 at causal 8K (one call, two passes): within the spread.
    {"persistent k2v2 nomax rowsum", tuned<false, 128, 2, 2, true, 0, false, false, kNoMax | kRowSum>},
};
constexpr HopperPrefillTuning kBf16D64[] = {
    // Row 0 ships (2026-11-23, sixteenth session): row 1 with kFeatNoMax. H100, causal 8K, one call,
    // A/B loop, two passes: 427.8 / 432.0 vs 390.6 / 396.7 TFLOP/s.
    {"persistent k2v2 nomax", tuned<false, 64, 2, 2, true, 0, false, false, kNoMax>},
    {"persistent k2v2", tuned<false, 64, 2, 2, true>},
    {"grid k2v2", tuned<false, 64, 2, 2, false>},
    {"persistent k3v3", tuned<false, 64, 3, 3, true>},
};

Status run_bf16_d128(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s) {
  return run_table(kBf16D128, a, o, s);
}
Status run_bf16_d64(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s) {
  return run_table(kBf16D64, a, o, s);
}

}  // namespace

HopperPrefillVariant bf16_d64_variant() { return {DType::kBF16, 64, &run_bf16_d64, kBf16D64}; }
HopperPrefillVariant bf16_d128_variant() { return {DType::kBF16, 128, &run_bf16_d128, kBf16D128}; }

}  // namespace kiln::hopper_launch
