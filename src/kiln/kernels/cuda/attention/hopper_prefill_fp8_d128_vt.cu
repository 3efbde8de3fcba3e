// fp8 d128 tuning rows of the Hopper prefill attention with V pre-transposed per KV head by
// hopper_vt_prepass ("vtpre": the producer TMA-loads Vt tiles, no raw V stages, no transpose, more
// registers for the consumers). Listed in the table of hopper_prefill_fp8_d128.cu.
#include "kiln/kernels/cuda/attention/hopper_prefill_launch.cuh"
#include "kiln/kernels/cuda/attention/hopper_prefill_variants.h"

namespace kiln::hopper_launch {
namespace {
namespace h = cuda::hopper;
constexpr int kPre = h::kFeatTree | h::kFeatRowSum | h::kFeatLazy | h::kFeatVtPre;
}  // namespace

// <K stages, Vt stages, persistent, poly, overlap, split-Q, features, probe>
Status fp8_d128_vtpre_k3v3(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s) {
  return tuned<true, 128, 3, 3, true, 0, true, false, kPre>(a, o, s);
}
Status fp8_d128_vtpre_k4v4(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s) {
  return tuned<true, 128, 4, 4, true, 0, true, false, kPre>(a, o, s);
}
Status fp8_d128_vtpre_k3v3_r240(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s) {
  return tuned<true, 128, 3, 3, true, 0, true, false, kPre | h::kFeatRegs240>(a, o, s);
}
Status fp8_d128_vtpre_k2v4(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s) {
  return tuned<true, 128, 2, 4, true, 0, true, false, kPre>(a, o, s);
}
Status fp8_d128_vtpre_k3v3_poly8(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s) {
  return tuned<true, 128, 3, 3, true, 0x80, true, false, kPre>(a, o, s);
}
Status fp8_d128_vtpre_k3v3_solo(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s) {
  return tuned<true, 128, 3, 3, true, 0, true, false, kPre | h::kFeatSolo>(a, o, s);
}
Status fp8_d128_vtpre_k3v3_noexp(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s) {
  return tuned<true, 128, 3, 3, true, 0, true, false, kPre, 2>(a, o, s);
}

// Without the consumers' ping-pong: "nopp" = the ping-pong kernel launched with
// HopperPrefillParams::pingpong = 0 (kFeatLaunchSolo: the same SASS as the ping-pong row), "solo" =
// compiled without it (kFeatSolo; row 1 of the table).
Status fp8_d128_vtpre_k4v4_nopp(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s) {
  return tuned<true, 128, 4, 4, true, 0, true, false, kPre | h::kFeatLaunchSolo>(a, o, s);
}
Status fp8_d128_vtpre_k4v4_solo(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s) {
  return tuned<true, 128, 4, 4, true, 0, true, false, kPre | h::kFeatSolo>(a, o, s);
}
// Row 1's kernel computing the row max only when some P saturates (kFeatNoMax; row 0, ships).
Status fp8_d128_vtpre_k4v4_solo_nomax(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s) {
  return tuned<true, 128, 4, 4, true, 0, true, false, kPre | h::kFeatSolo | h::kFeatNoMax>(a, o, s);
}
// kFeatNoMax with the ping-pong (k4v4) and solo at k3v3 (A/B rows).
Status fp8_d128_vtpre_k4v4_nomax(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s) {
  return tuned<true, 128, 4, 4, true, 0, true, false, kPre | h::kFeatNoMax>(a, o, s);
}
Status fp8_d128_vtpre_k3v3_solo_nomax(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s) {
  return tuned<true, 128, 3, 3, true, 0, true, false, kPre | h::kFeatSolo | h::kFeatNoMax>(a, o, s);
}
// Row 1's kernel with Q quantized outside it (HopperPrefillOptions::q_fp8) and TMA-loaded by
// producer warps 2 and 3, one per consumer warpgroup (kFeatQTma).
Status fp8_d128_vtpre_k4v4_solo_qtma(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s) {
  return tuned<true, 128, 4, 4, true, 0, true, false, kPre | h::kFeatSolo | h::kFeatQTma>(a, o, s);
}

}  // namespace kiln::hopper_launch
