// fp8 e4m3-cache, head_dim 64 variant of the Hopper prefill attention and its tuning rows (row 0
// ships; split Q: each Q row as two e4m3 parts, see HopperTune).
#include "kiln/kernels/cuda/attention/hopper_prefill_launch.cuh"
#include "kiln/kernels/cuda/attention/hopper_prefill_variants.h"

namespace kiln::hopper_launch {
namespace {

constexpr HopperPrefillTuning kFp8D64[] = {
    {"persistent s2 split-q", tuned<true, 64, 2, 2, true, 0, false, true>},
    {"persistent s2", tuned<true, 64, 2, 2, true>},
    {"grid s2", tuned<true, 64, 2, 2, false>},
    {"persistent s3 poly1/4", tuned<true, 64, 3, 3, true, 0x88>},
};

Status run_fp8_d64(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s) {
  return run_table(kFp8D64, a, o, s);
}

}  // namespace

HopperPrefillVariant fp8_d64_variant() { return {DType::kFp8E4M3, 64, &run_fp8_d64, kFp8D64}; }

}  // namespace kiln::hopper_launch
