// VocabTokenizer: what every kiln tokenizer shares. encode() splits added tokens out of the text,
// hands each stretch of plain text to the model (encode_text), and adds BOS/EOS; decode() joins
// each id's bytes from a table built at load time.
#pragma once
#include <string>
#include <vector>

#include "kiln/tokenizer/added_token_matcher.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln {

// Where a stretch of plain text sits in the input (SentencePiece prefixes a space at the start,
// and, in llama.cpp and legacy Hugging Face Llama, after every special token).
struct TextSpan {
  bool first = true;               // nothing precedes it in the input
  bool after_added_token = false;  // an added token precedes it
};

class VocabTokenizer : public Tokenizer {
 public:
  Result<std::vector<int32_t>> encode(std::string_view text, bool add_special) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const override;
  std::string token_piece(int32_t id) const override;

 protected:
  explicit VocabTokenizer(Vocab vocab);

  // Appends the ids of one stretch of plain text (no added tokens in it).
  virtual void encode_text(std::string_view text, TextSpan span, std::vector<int32_t>& out) const = 0;

  // The bytes of a SentencePiece-style piece: "<0xNN>" is the byte NN when byte_token, else
  // every '▁' (U+2581) becomes a space. Shared by the SentencePiece and BPE tokenizers.
  static std::string metaspace_piece_bytes(const std::string& piece, bool byte_token);

  // id -> the bytes it decodes to; subclasses fill it in their constructor.
  std::vector<std::string> token_bytes_;

 private:
  AddedTokenMatcher added_;
};

}  // namespace kiln
