// fp8 d128 tuning rows of the Hopper prefill attention whose exponentials run two at a time in f16
// ("h2": ex2.approx.f16x2, P packed from f16x2 to e4m3x2), V from the pre-pass ("vtpre"). Listed in
// the table of hopper_prefill_fp8_d128.cu. H100: slower than without (causal 4K 633 vs 654, 8K 689 /
// 693 vs 706 / 711 TFLOP/s):
// ptxas splits each ex2.approx.f16x2 into two MUFU.EX2, so only the conversions change.
#include "kiln/kernels/cuda/attention/hopper_prefill_launch.cuh"
#include "kiln/kernels/cuda/attention/hopper_prefill_variants.h"

namespace kiln::hopper_launch {
namespace {
namespace h = cuda::hopper;
constexpr int kH2 = h::kFeatTree | h::kFeatRowSum | h::kFeatLazy | h::kFeatEx2H2;
constexpr int kPreH2 = kH2 | h::kFeatVtPre;
}  // namespace

Status fp8_d128_vtpre_k3v3_h2(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s) {
  return tuned<true, 128, 3, 3, true, 0, true, false, kPreH2>(a, o, s);
}
}  // namespace kiln::hopper_launch
