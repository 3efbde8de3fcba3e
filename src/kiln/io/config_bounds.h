// Sane bounds on a ModelConfig, checked as soon as a config.json or GGUF metadata is parsed and
// before anything is sized by it: a layer count of 2^32 - 1 or a NaN epsilon is a data_loss error
// that names the file and the field, not a bad_alloc or garbage logits later.
#pragma once
#include <cstdint>
#include <string>

#include "kiln/core/status.h"
#include "kiln/models/model_config.h"

namespace kiln {

// The largest values kiln accepts; each is several times the largest public model's.
struct ConfigLimits {
  static constexpr int64_t kMaxLayers = 1024;
  static constexpr int64_t kMaxHiddenSize = int64_t{1} << 17;
  static constexpr int64_t kMaxIntermediateSize = int64_t{1} << 20;
  static constexpr int64_t kMaxHeads = 1024;
  static constexpr int64_t kMaxHeadDim = 1024;
  static constexpr int64_t kMaxVocabSize = int64_t{1} << 24;  // as tokenizer.json ids
  static constexpr int64_t kMaxContext = (int64_t{1} << 31) - 1;  // positions are int32
  static constexpr int64_t kMaxExperts = 1024;
};

// What a config source calls each field, for the messages ("num_hidden_layers" in config.json,
// "llama.block_count" in GGUF metadata).
struct ConfigFieldNames {
  std::string layers, hidden_size, intermediate_size, q_heads, kv_heads, head_dim, vocab_size, context;
  std::string rms_norm_eps, rope_theta, rope_scaling, experts, experts_per_tok, sliding_window;
};
ConfigFieldNames hf_config_field_names();
ConfigFieldNames gguf_config_field_names(const std::string& arch);

// Every size in [1, limit] (experts may be 0 for dense models), epsilon and rope theta finite and
// positive, rope scaling factors finite and positive (llama3: low_freq_factor < high_freq_factor).
Status check_config_bounds(const ModelConfig& c, const ConfigFieldNames& names, const std::string& path);

}  // namespace kiln
