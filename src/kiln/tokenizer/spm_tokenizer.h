// SpmTokenizer: SentencePiece BPE driven by piece scores, for GGUF "llama" vocabularies (Llama 2,
// Mistral, Mixtral, Phi-3). Spaces become '▁', a '▁' prefix is added at the start and after
// special tokens (add_space_prefix), then adjacent symbols merge highest score first (a bigram
// heap over UTF-8 characters, as llama.cpp and sentencepiece do); characters without a piece fall
// back to <0xNN> byte tokens.
#pragma once
#include <memory>
#include <string_view>
#include <vector>

#include "kiln/tokenizer/vocab_tokenizer.h"
#include "kiln/tokenizer/word_cache.h"

namespace kiln {

class SpmTokenizer : public VocabTokenizer {
 public:
  // vocab must carry scores. add_space_prefix: GGUF tokenizer.ggml.add_space_prefix (default on).
  static Result<std::unique_ptr<SpmTokenizer>> create(Vocab vocab, bool add_space_prefix);

 protected:
  void encode_text(std::string_view text, TextSpan span, std::vector<int32_t>& out) const override;

 private:
  SpmTokenizer(Vocab vocab, bool add_space_prefix);
  void build_token_bytes();
  // Piece id usable as a merge result (normal, user-defined or unused), else -1.
  int32_t mergeable_id(std::string_view piece) const;
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;
  void append_bytes(std::string_view text, std::vector<int32_t>& out) const;

  bool add_space_prefix_ = true;
  bool words_splittable_ = false;
  int32_t byte_ids_[256] = {};
  WordCache cache_;
};

}  // namespace kiln
