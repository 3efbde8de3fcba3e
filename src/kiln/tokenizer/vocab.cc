#include "kiln/tokenizer/vocab.h"

#include <algorithm>
#include <cctype>

namespace kiln {
namespace {

// Pieces that end a turn in the chat formats kiln serves; llama.cpp treats them as end of
// generation even where the file names only one eos id.
constexpr std::string_view kEndOfTurnPieces[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>",
    "<EOT>",      "</s>",       "<｜end▁of▁sentence｜>",
};

int32_t optional_id(const GgufFile& gguf, const std::string& key) {
  if (gguf.find(key) == nullptr) return -1;
  auto v = gguf.get_int(key);
  return v.ok() ? static_cast<int32_t>(*v) : -1;
}

// Phi-3's tokenizer.json strips the white space after its chat tokens ("<|end|>\n" is one
// token); GGUF does not record that, so, as llama.cpp does, it is restored by model name.
void apply_phi3_rstrip(const GgufFile& gguf, Vocab& v) {
  const GgufValue* name = gguf.find("general.name");
  if (name == nullptr) return;
  std::string lower = name->s;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower.find("phi-3") == std::string::npos && lower.find("phi3") == std::string::npos) return;
  for (AddedToken& a : v.added) {
    a.rstrip = (a.special || a.content == "</s>") && a.content != "<unk>" && a.content != "<s>" &&
               a.content != "<|endoftext|>";
  }
}

bool optional_bool(const GgufFile& gguf, const std::string& key, bool fallback) {
  const GgufValue* v = gguf.find(key);
  return v == nullptr ? fallback : v->i != 0;
}

}  // namespace

bool Vocab::is_special(int32_t id) const {
  if (id < 0 || id >= size()) return false;
  const TokenType t = types[id];
  return t == TokenType::kControl || t == TokenType::kUnknown;
}

void Vocab::index() {
  token_to_id.clear();
  token_to_id.reserve(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) token_to_id.emplace(tokens[i], static_cast<int32_t>(i));
}

void Vocab::collect_eog(const std::vector<int32_t>& extra_ids) {
  auto add = [&](int32_t id) {
    if (id >= 0 && id < size() && std::find(eog_ids.begin(), eog_ids.end(), id) == eog_ids.end()) {
      eog_ids.push_back(id);
    }
  };
  add(eos_id);
  for (int32_t id : extra_ids) add(id);
  for (std::string_view piece : kEndOfTurnPieces) {
    const int32_t id = find(piece);
    if (id >= 0 && is_special(id)) add(id);
  }
}

Result<Vocab> vocab_from_gguf(const GgufFile& gguf) {
  Vocab v;
  KILN_ASSIGN_OR_RETURN(v.tokens, gguf.get_string_array("tokenizer.ggml.tokens"));
  const size_t n = v.tokens.size();
  v.types.assign(n, TokenType::kNormal);
  if (gguf.find("tokenizer.ggml.token_type") != nullptr) {
    KILN_ASSIGN_OR_RETURN(std::vector<int64_t> types, gguf.get_int_array("tokenizer.ggml.token_type"));
    if (types.size() != n) return data_loss(gguf.path() + ": token_type and tokens differ in length");
    for (size_t i = 0; i < n; ++i) v.types[i] = static_cast<TokenType>(types[i]);
  }
  if (gguf.find("tokenizer.ggml.scores") != nullptr) {
    KILN_ASSIGN_OR_RETURN(std::vector<double> scores, gguf.get_float_array("tokenizer.ggml.scores"));
    if (scores.size() != n) return data_loss(gguf.path() + ": scores and tokens differ in length");
    v.scores.assign(scores.begin(), scores.end());
  }
  v.index();
  v.bos_id = optional_id(gguf, "tokenizer.ggml.bos_token_id");
  v.eos_id = optional_id(gguf, "tokenizer.ggml.eos_token_id");
  v.unk_id = optional_id(gguf, "tokenizer.ggml.unknown_token_id");
  v.pad_id = optional_id(gguf, "tokenizer.ggml.padding_token_id");
  v.collect_eog({optional_id(gguf, "tokenizer.ggml.eot_token_id"),
                 optional_id(gguf, "tokenizer.ggml.eom_token_id")});
  if (gguf.find("tokenizer.chat_template") != nullptr) {
    KILN_ASSIGN_OR_RETURN(v.chat_template, gguf.get_string("tokenizer.chat_template"));
  }
  for (size_t i = 0; i < n; ++i) {
    const TokenType t = v.types[i];
    if (t != TokenType::kControl && t != TokenType::kUserDefined && t != TokenType::kUnknown) continue;
    if (v.tokens[i].empty()) continue;
    AddedToken a;
    a.id = static_cast<int32_t>(i);
    a.content = v.tokens[i];
    a.special = t != TokenType::kUserDefined;
    v.added.push_back(std::move(a));
  }
  apply_phi3_rstrip(gguf, v);
  // llama.cpp's defaults: SentencePiece vocabularies add BOS unless told otherwise.
  const bool spm = !v.scores.empty() && gguf.find("tokenizer.ggml.merges") == nullptr;
  v.add_bos = optional_bool(gguf, "tokenizer.ggml.add_bos_token", spm);
  v.add_eos = optional_bool(gguf, "tokenizer.ggml.add_eos_token", false);
  if (v.bos_id < 0 || v.bos_id >= v.size()) v.add_bos = false;
  if (v.eos_id < 0 || v.eos_id >= v.size()) v.add_eos = false;
  return v;
}

}  // namespace kiln
