// QuantizationConfig: what a checkpoint's config.json "quantization_config" says about its
// weights. Supported: fp8 e4m3 weights with one scale per tensor or per output channel, written
// either by vLLM / transformers (quant_method "fp8") or by llm-compressor (quant_method
// "compressed-tensors", format "float-quantized" / "naive-quantized"). Anything else (block-wise
// weight_block_size, int4/int8, GPTQ, AWQ, ...) is an Unimplemented error naming the file.
#pragma once
#include <string>
#include <vector>

#include "kiln/core/status.h"

namespace kiln {

struct QuantizationConfig {
  enum class Method { kNone, kFp8, kCompressedTensors } method = Method::kNone;
  // Weights: fp8 e4m3 per tensor (weight_scale [] / [1]) or per output channel ([n] / [n, 1]).
  // The loader reads the scale's shape, so this is informational.
  bool per_channel = false;
  // Activation scales (input_scale) are read and ignored: kiln quantizes activations dynamically.
  bool static_activations = false;
  bool kv_cache_fp8 = false;           // compressed-tensors kv_cache_scheme present (k_scale / v_scale)
  std::vector<std::string> ignored;    // layers kept in the compute dtype ("lm_head", ...)

  bool fp8() const { return method != Method::kNone; }
};

// json_text: the whole config.json; path is for messages only. No quantization_config: kNone.
Result<QuantizationConfig> parse_quantization_config(const std::string& json_text, const std::string& path);

// The quantization_config objects `kiln quantize` writes (as JSON text): per_channel picks
// compressed-tensors (channel strategy, as llm-compressor's FP8_DYNAMIC), per tensor picks
// vLLM's "fp8" method. kv_cache_scales: the checkpoint carries self_attn.k_scale / v_scale.
std::string fp8_quantization_config_json(bool per_channel, bool kv_cache_scales);

}  // namespace kiln
