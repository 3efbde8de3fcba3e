// Host side of the Hopper prefill attention: argument checks and the variant table (cache dtype x
// head_dim: bf16 / fp8 e4m3 x 64 / 128). Each variant's tuning rows and their kernels live in their own
// file (hopper_prefill_bf16.cu, hopper_prefill_fp8_d64.cu, hopper_prefill_fp8_d128.cu) so they
// compile in parallel; the launch itself is hopper_prefill_launch.cuh.
#include <string>

#include "kiln/kernels/attention_hopper.h"
#include "kiln/kernels/cuda/attention/hopper_prefill_launch.cuh"
#include "kiln/kernels/cuda/attention/hopper_prefill_variants.h"

namespace kiln {

using hopper_launch::check_int32;
using hopper_launch::device_is_sm90;
using hopper_launch::on_device;

std::span<const HopperPrefillVariant> hopper_prefill_variants() {
  static const HopperPrefillVariant kVariants[] = {
      hopper_launch::bf16_d64_variant(),
      hopper_launch::bf16_d128_variant(),
      hopper_launch::fp8_d64_variant(),
      hopper_launch::fp8_d128_variant(),
  };
  return kVariants;
}

Status hopper_prefill_check(const PagedAttentionArgs& a) {
  const Tensor &q = a.q, &kc = a.k_cache, &vc = a.v_cache, &out = a.out;
  if (!device_is_sm90()) return unimplemented("prefill_attention_hopper: needs an sm_90 (Hopper) device");
  if (q.ndim != 3 || kc.ndim != 4 || vc.ndim != 4 || out.ndim != 3 || q.shape != out.shape ||
      kc.shape != vc.shape || kc.shape[3] != q.shape[2] || kc.shape[2] == 0 || q.shape[1] % kc.shape[2] != 0)
    return invalid_argument(
        "prefill_attention_hopper: want q/out [tokens, hq, d], k/v cache [blocks, block_size, hkv, d] with "
        "hq % hkv == 0; got q " +
        q.shape_string() + ", k_cache " + kc.shape_string() + ", v_cache " + vc.shape_string() + ", out " +
        out.shape_string());
  if (q.dtype != DType::kBF16 || out.dtype != DType::kBF16 || kc.dtype != vc.dtype ||
      (kc.dtype != DType::kBF16 && kc.dtype != DType::kFp8E4M3))
    return unimplemented("prefill_attention_hopper: want bf16 q/out and bf16 or fp8_e4m3 caches; got q " +
                         q.shape_string() + ", k_cache " + kc.shape_string() + ", v_cache " + vc.shape_string());
  for (const Tensor* t : {&q, &kc, &vc, &out})
    if (!on_device(*t) || !t->is_contiguous())
      return invalid_argument("prefill_attention_hopper: tensors must be contiguous and on the device; got " +
                              t->shape_string());
  KILN_RETURN_IF_ERROR(check_int32(a.cu_seqlens_q, "cu_seqlens_q", 1));
  KILN_RETURN_IF_ERROR(check_int32(a.kv_lens, "kv_lens", 1));
  KILN_RETURN_IF_ERROR(check_int32(a.block_tables, "block_tables", 2));
  const int64_t batch = a.kv_lens.numel();
  if (a.cu_seqlens_q.numel() != batch + 1 || a.block_tables.shape[0] != batch)
    return invalid_argument("prefill_attention_hopper: cu_seqlens_q [batch + 1] and block_tables [batch, blocks] "
                            "must match kv_lens [batch]");
  const int64_t bs = kc.shape[1];
  if (bs < 16 || (bs & (bs - 1)) != 0)
    return unimplemented("prefill_attention_hopper: block_size " + std::to_string(bs) +
                         " is not a power of two >= 16 (TMA boxes are 16 tokens)");
  if (!(a.scale > 0.f) || a.sliding_window < 0 || !(a.k_scale > 0.f) || !(a.v_scale > 0.f) ||
      kc.shape[0] >= (int64_t{1} << 31) - 1 || q.shape[0] * q.shape[1] > (int64_t{1} << 31) - 1 ||
      a.block_tables.shape[1] * bs > (int64_t{1} << 30))
    return invalid_argument(
        "prefill_attention_hopper: need scale, k_scale, v_scale > 0, sliding_window >= 0 and sizes that fit int32");
  for (const HopperPrefillVariant& v : hopper_prefill_variants())
    if (v.cache_dtype == kc.dtype && v.head_dim == q.shape[2]) return ok_status();
  return unimplemented("prefill_attention_hopper: no variant for head_dim " + std::to_string(q.shape[2]) +
                       "; supported: bf16 / fp8_e4m3 caches x head_dim 64, 128");
}

bool hopper_prefill_supported(const PagedAttentionArgs& args) { return hopper_prefill_check(args).ok(); }

Status prefill_attention_hopper_cuda(const PagedAttentionArgs& args, const HopperPrefillOptions& options,
                                     CUstream_st* stream) {
  KILN_RETURN_IF_ERROR(hopper_prefill_check(args));
  for (const HopperPrefillVariant& v : hopper_prefill_variants())
    if (v.cache_dtype == args.k_cache.dtype && v.head_dim == args.q.shape[2]) return v.run(args, options, stream);
  return unimplemented("prefill_attention_hopper: no variant");  // unreachable after the check
}

Status prefill_attention_hopper_cuda(const PagedAttentionArgs& args, CUstream_st* stream) {
  return prefill_attention_hopper_cuda(args, HopperPrefillOptions{}, stream);
}

}  // namespace kiln
