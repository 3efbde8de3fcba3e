// Reading a Hugging Face tokenizer directory: tokenizer.json (model, normalizer, pre-tokenizer,
// decoder, added tokens), tokenizer_config.json (bos/eos, add_bos_token, chat_template) and, when
// there is no tokenizer.json, tokenizer.model through libsentencepiece.
#pragma once
#include <memory>
#include <string>

#include "kiln/core/status.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln {

Result<std::unique_ptr<Tokenizer>> tokenizer_from_hf_dir(const std::string& dir);

}  // namespace kiln
