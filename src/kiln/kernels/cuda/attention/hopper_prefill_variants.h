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

}  // namespace kiln::hopper_launch
