// Vocab: the token table every tokenizer shares: the pieces as written in the model file, their
// types (GGUF token_type numbering), SentencePiece scores, the special ids, the added tokens that
// are split out of the text before pre-tokenization, and the chat template.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/io/gguf.h"

namespace kiln {

// GGUF tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
enum class TokenType : int32_t {
  kUndefined = 0, kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6,
};

// A token matched as a whole in the input text before the model sees it (Hugging Face
// AddedToken). special tokens are dropped by decode(skip_special=true).
struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool lstrip = false;       // swallow the white space before it
  bool rstrip = false;       // swallow the white space after it
  bool single_word = false;  // only match when not inside a word
};

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenIdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

struct Vocab {
  std::vector<std::string> tokens;  // id -> piece as stored ("Ġhello", "▁hello", "<0x0A>")
  std::vector<TokenType> types;     // id -> type (kNormal when the file has none)
  std::vector<float> scores;        // id -> SentencePiece score (empty for merge-based BPE)
  TokenIdMap token_to_id;

  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int32_t unk_id = -1;
  int32_t pad_id = -1;
  std::vector<int32_t> eog_ids;  // ids that end a generation: eos, eot, eom, <|im_end|>, ...
  bool add_bos = false;
  bool add_eos = false;
  std::vector<AddedToken> added;
  std::string chat_template;

  int64_t size() const { return static_cast<int64_t>(tokens.size()); }
  int32_t find(std::string_view piece) const {
    auto it = token_to_id.find(piece);
    return it == token_to_id.end() ? -1 : it->second;
  }
  bool is_special(int32_t id) const;  // control or unknown, or an added token marked special
  // Fills token_to_id from tokens; the first id wins when a piece repeats.
  void index();
  // Collects eog_ids from eos/eot/eom and the end-of-turn pieces families use.
  void collect_eog(const std::vector<int32_t>& extra_ids);
};

// Reads tokens, types, scores, special ids and chat template from "tokenizer.ggml.*". Control,
// unknown and user-defined tokens become added tokens (special unless user-defined), as llama.cpp
// and Hugging Face treat them.
Result<Vocab> vocab_from_gguf(const GgufFile& gguf);

}  // namespace kiln
