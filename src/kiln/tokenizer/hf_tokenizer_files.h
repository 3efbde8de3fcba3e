// Reading a Hugging Face tokenizer directory: tokenizer.json (model, normalizer, pre-tokenizer,
// decoder, post-processor, added tokens) plus tokenizer_config.json (bos/eos, add_bos_token,
// chat_template) and generation_config.json (eos ids); or, when there is no tokenizer.json,
// tokenizer.model through libsentencepiece.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/core/status.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln {

// What tokenizer_config.json and generation_config.json add to the vocabulary.
struct HfTokenizerConfig {
  std::string bos_token, eos_token;  // "" when absent
  std::optional<bool> add_bos, add_eos;
  std::string chat_template;
  std::vector<int64_t> eos_ids;  // generation_config.json eos_token_id
};

Result<HfTokenizerConfig> read_hf_tokenizer_config(const std::string& dir);

// A tokenizer from the parsed tokenizer.json; dir is for error messages.
Result<std::unique_ptr<Tokenizer>> tokenizer_from_json(const nlohmann::json& j, const HfTokenizerConfig& config,
                                                       const std::string& dir);

Result<std::unique_ptr<Tokenizer>> tokenizer_from_hf_dir(const std::string& dir);

// Sets bos/eos/eog/add_bos/chat template of a vocabulary from the configuration.
void apply_hf_config(const HfTokenizerConfig& config, Vocab& vocab);

}  // namespace kiln
