// Model loading: a Hugging Face directory (config.json + model.safetensors or sharded
// *.safetensors with model.safetensors.index.json) or a GGUF file, into a ModelConfig and
// host weights under Hugging Face names, converted to the compute dtype.
// fp8 checkpoints (safetensors F8_E4M3 + quantization_config, see quantization_config.h) keep
// their fp8 weights as stored (never converted to the compute dtype); every "*_scale" tensor
// (weight_scale, input_scale, k_scale, v_scale) is loaded as f32, scalars as shape [1].
// GGUF llama-family Q/K weights are stored permuted for interleaved RoPE; the loader undoes that,
// so every model runs the Hugging Face (rotate-half) RoPE.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "kiln/core/status.h"
#include "kiln/core/tensor.h"
#include "kiln/io/gguf.h"
#include "kiln/io/quantization_config.h"
#include "kiln/models/model_config.h"

namespace kiln {

struct LoadedModel {
  ModelConfig config;
  std::string path;                           // what was asked for (dir or .gguf)
  std::string hf_dir;                         // the HF directory ("" for GGUF): tokenizer.json etc.
  std::shared_ptr<const GgufFile> gguf;       // null for HF dirs (but see tokenizer.gguf below)
  DType dtype = DType::kF32;                  // the compute dtype the weights were converted to
  QuantizationConfig quantization;            // from config.json (HF dirs)
  std::map<std::string, HostTensor> weights;  // "model.layers.0.self_attn.q_proj.weight", ...

  const Tensor* find(const std::string& name) const;
};

// progress(done_bytes, total_bytes) is called as tensors are converted.
using LoadProgress = std::function<void(int64_t, int64_t)>;

// Parse a Hugging Face config.json text. path is used in error messages only.
Result<ModelConfig> parse_hf_config(const std::string& json_text, const std::string& path);
// A config.json text for c (HF keys of c.arch) that parse_hf_config reads back as c: how
// `kiln quantize` describes a GGUF model as a Hugging Face directory.
std::string hf_config_json(const ModelConfig& c);
// Build a ModelConfig from GGUF metadata ("general.architecture", "<arch>.block_count", ...).
Result<ModelConfig> config_from_gguf(const GgufFile& gguf);

// A directory with config.json and model.safetensors (or model.safetensors.index.json + shards),
// or a GGUF file. dtype: f32, f16 or bf16. Tied models have no "lm_head.weight".
// A directory without tokenizer.json but with tokenizer.gguf (a vocab-only GGUF, as `kiln
// quantize` writes for GGUF sources) gets that file as `gguf`, for the tokenizer.
Result<LoadedModel> load_model(const std::string& path, DType dtype, const LoadProgress& progress = {});

// --load-format dummy: only dir/config.json is read (no weights, no tokenizer); the model is
// then built with ModelOptions::dummy_weights.
Result<LoadedModel> load_config_only(const std::string& dir);

// Undoes llama.cpp's Q/K row permutation in place (t: [num_heads * head_dim, ...], contiguous):
// GGUF row h*head_dim + 2j + s becomes HF row h*head_dim + s*head_dim/2 + j. num_heads is the
// query head count for Q and the KV head count for K.
Status unpermute_gguf_qk(const Tensor& t, int64_t num_heads);

}  // namespace kiln
