// The Hopper prefill attention's variants, one per table file (hopper_prefill_bf16.cu: bf16 x {64,
// 128}; hopper_prefill_fp8_d128.cu, hopper_prefill_fp8_d64.cu), gathered by hopper_prefill.cu into
// hopper_prefill_variants().
#pragma once
#include "kiln/kernels/attention_hopper.h"

namespace kiln::hopper_launch {

HopperPrefillVariant bf16_d64_variant();
HopperPrefillVariant bf16_d128_variant();
HopperPrefillVariant fp8_d64_variant();
HopperPrefillVariant fp8_d128_variant();

// fp8 d128 tuning rows compiled in their own files (so they build in parallel), listed by the
// table in hopper_prefill_fp8_d128.cu. hopper_prefill_fp8_d128_vt.cu: V from the pre-pass
// ("vtpre"); hopper_prefill_fp8_d128_h2.cu: f16x2 exponentials ("h2").
Status fp8_d128_vtpre_k3v3(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s);
Status fp8_d128_vtpre_k4v4(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s);
Status fp8_d128_vtpre_k3v3_r240(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s);
Status fp8_d128_vtpre_k2v4(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s);
Status fp8_d128_vtpre_k3v3_noexp(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s);
Status fp8_d128_vtpre_k3v3_h2(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s);
Status fp8_d128_vtpre_k3v3_poly8(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s);
Status fp8_d128_vtpre_k3v3_solo(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s);
Status fp8_d128_vtpre_k4v4_nopp(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s);
Status fp8_d128_vtpre_k4v4_solo(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s);
Status fp8_d128_vtpre_k4v4_solo_nomax(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s);
Status fp8_d128_vtpre_k4v4_nomax(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s);
Status fp8_d128_vtpre_k3v3_solo_nomax(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s);
Status fp8_d128_vtpre_k4v4_solo_qtma(const PagedAttentionArgs& a, const HopperPrefillOptions& o, CUstream_st* s);

}  // namespace kiln::hopper_launch
