// Detokenizer: a primed StreamDecoder.
#include "kiln/engine/detokenizer.h"

#include <algorithm>

#include "kiln/tokenizer/stream_decoder.h"
#include "kiln/tokenizer/utf8.h"

namespace kiln {

Detokenizer::Detokenizer(const Tokenizer* tokenizer, const std::vector<int32_t>& prompt, bool skip_special) {
  if (tokenizer == nullptr) return;
  decoder_ = std::make_unique<StreamDecoder>(*tokenizer, skip_special);
  if (prompt.empty()) return;
  (void)decoder_->push(prompt.back());
  // A prompt that ends inside a character: start clean rather than emit the prompt's bytes.
  if (decoder_->pending_bytes() > 0) decoder_->reset();
}

Detokenizer::~Detokenizer() = default;

std::string Detokenizer::step(int32_t token) { return decoder_ ? decoder_->push(token) : std::string(); }

size_t utf8_complete_prefix(const std::string& text, size_t n) {
  n = std::min(n, text.size());
  return n - utf8::incomplete_tail(std::string_view(text).substr(0, n));
}

}  // namespace kiln
