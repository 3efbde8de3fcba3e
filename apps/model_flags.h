// Quantization flags shared by the commands that build a model (generate, serve, bench latency,
// eval kl), spelled as vLLM users expect: --quantization fp8 (or --dtype fp8) for fp8 e4m3
// weights, --kv-cache-dtype fp8 for an fp8 KV cache, plus --kv-cache-scale and --fp8-per-tensor.
// fp8 weights change storage, not the compute dtype: the GPU computes in bf16 (fp8 GEMMs with
// bf16 outputs), the CPU dequantizes them to --dtype (f32 unless told otherwise).
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "apps/flag_ranges.h"

#include "kiln/core/dtype.h"
#include "kiln/models/model.h"

namespace kiln::apps {

struct QuantFlags {
  std::string quantization = "none";   // none | fp8
  std::string kv_cache_dtype = "auto";  // auto | fp8 (= fp8_e4m3)
  float kv_cache_scale = 1.0f;
  bool fp8_per_tensor = false;
  bool fp8_activations = false;
  std::string kv_cache_key_rotation = "hadamard";  // hadamard | none
};

// prefix: "" for the model's own flags, "base-" etc. where a command builds two models.
inline void add_quant_flags(CLI::App* cmd, QuantFlags& f, const std::string& prefix = "") {
  cmd->add_option("--" + prefix + "quantization", f.quantization,
                  "Weight quantization: none, or fp8 (e4m3, quantized at load; fp8 checkpoints are detected)")
      ->capture_default_str();
  cmd->add_option("--" + prefix + "kv-cache-dtype", f.kv_cache_dtype, "KV cache dtype: auto (the compute dtype) or fp8 (e4m3)")
      ->capture_default_str();
  cmd->add_option("--" + prefix + "kv-cache-scale", f.kv_cache_scale,
                  "fp8 KV cache scale for every layer (the checkpoint's k_scale/v_scale win)")
      ->capture_default_str()
      ->check(finite_positive());
  cmd->add_option("--" + prefix + "kv-cache-key-rotation", f.kv_cache_key_rotation,
                  "fp8 KV cache: hadamard (rotate q and k heads after RoPE so fp8 rounds keys with less damage; scores unchanged; "
                  "power-of-two head_dim) or none")
      ->capture_default_str();
  cmd->add_flag("--" + prefix + "fp8-per-tensor", f.fp8_per_tensor,
                "fp8 weights quantized at load: one scale per matrix instead of per output channel");
  cmd->add_flag("--" + prefix + "fp8-activations", f.fp8_activations,
                "CPU with fp8 weights: round each fp8 layer's input to fp8 per token, as the GPU's fp8 prefill "
                "GEMMs do (the GPU itself decides by batch size; this flag only changes CPU runs)");
}

// Applies the flags to `options` and returns the dtype to load the weights in. dtype_flag may be
// "fp8" (vLLM-style shorthand for --quantization fp8 with the command's default compute dtype).
inline Result<DType> apply_quant_flags(const QuantFlags& f, const std::string& dtype_flag, DType default_compute,
                                       ModelOptions* options) {
  DType dtype = default_compute;
  bool fp8 = false;
  if (dtype_flag == "fp8" || dtype_flag == "fp8_e4m3") {
    fp8 = true;
  } else if (!dtype_flag.empty()) {
    KILN_ASSIGN_OR_RETURN(dtype, dtype_from_name(dtype_flag));
    if (dtype != DType::kF32 && dtype != DType::kBF16 && dtype != DType::kF16)
      return unimplemented("--dtype " + dtype_flag + " (supported: f32, bf16, f16, fp8 = fp8 weights)");
  }
  if (f.quantization == "fp8") fp8 = true;
  else if (f.quantization != "none" && !f.quantization.empty())
    return unimplemented("--quantization " + f.quantization + " (supported: none, fp8)");
  if (f.kv_cache_dtype == "fp8" || f.kv_cache_dtype == "fp8_e4m3") options->fp8_kv_cache = true;
  else if (f.kv_cache_dtype != "auto")
    return unimplemented("--kv-cache-dtype " + f.kv_cache_dtype + " (supported: auto, fp8 = fp8_e4m3)");
  if (f.kv_cache_key_rotation != "hadamard" && f.kv_cache_key_rotation != "none")
    return invalid_argument("--kv-cache-key-rotation " + f.kv_cache_key_rotation + " (supported: hadamard, none)");
  options->fp8_kv_hadamard = f.kv_cache_key_rotation == "hadamard";
  options->fp8_weights = fp8;
  options->fp8_per_tensor = f.fp8_per_tensor;
  options->fp8_activations = f.fp8_activations;
  options->kv_cache_scale = f.kv_cache_scale;
  return dtype;
}

}  // namespace kiln::apps
