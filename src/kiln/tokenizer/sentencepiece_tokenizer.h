// SentencePieceTokenizer: a tokenizer.model run by libsentencepiece (Hugging Face directories
// that ship no tokenizer.json). Added tokens (control and user-defined pieces) are split out
// first, as Hugging Face's slow Llama tokenizer does; sentencepiece encodes the text between.
#pragma once
#include <memory>
#include <string>

#include "kiln/tokenizer/hf_tokenizer_files.h"
#include "kiln/tokenizer/vocab_tokenizer.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace kiln {

class SentencePieceTokenizer : public VocabTokenizer {
 public:
  // Unimplemented when kiln was built without libsentencepiece.
  static Result<std::unique_ptr<SentencePieceTokenizer>> load(const std::string& model_path,
                                                              const HfTokenizerConfig& config);
  ~SentencePieceTokenizer() override;

 protected:
  void encode_text(std::string_view text, TextSpan span, std::vector<int32_t>& out) const override;

 private:
  SentencePieceTokenizer(Vocab vocab, std::unique_ptr<sentencepiece::SentencePieceProcessor> sp);

  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
};

}  // namespace kiln
