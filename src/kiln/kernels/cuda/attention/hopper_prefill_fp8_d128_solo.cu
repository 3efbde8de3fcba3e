// fp8 d128 tuning rows of the Hopper prefill attention without the consumers' ping-pong, V from the
// pre-pass: "nopp" = the ping-pong kernel launched with HopperPrefillParams::pingpong = 0
// (kFeatLaunchSolo: the same SASS as the ping-pong row), "solo" = compiled without it (kFeatSolo).
// Listed in the table of hopper_prefill_fp8_d128.cu.
#include "kiln/kernels/cuda/attention/hopper_prefill_launch.cuh"
#include "kiln/kernels/cuda/attention/hopper_prefill_variants.h"

namespace kiln::hopper_launch {
namespace {
namespace h = cuda::hopper;
constexpr int kPre = h::kFeatTree | h::kFeatRowSum | h::kFeatLazy | h::kFeatVtPre;
}  // namespace

// <K stages, Vt stages, persistent, poly column mask, overlap, split-Q, features>
Status fp8_d128_vtpre_k4v4_nopp(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s) {
  return tuned<true, 128, 4, 4, true, 0, true, false, kPre | h::kFeatLaunchSolo>(a, o, s);
}
Status fp8_d128_vtpre_k4v4_solo(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s) {
  return tuned<true, 128, 4, 4, true, 0, true, false, kPre | h::kFeatSolo>(a, o, s);
}

}  // namespace kiln::hopper_launch
