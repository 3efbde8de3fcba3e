// Detokenizer: the incremental output text of one sequence, on top of the tokenizer's
// StreamDecoder (whole UTF-8 characters only, O(new bytes) per token). The decoder is primed with
// the last prompt token, so the first generated token keeps the space it carries (" Paris"), as
// the continuation of the prompt, which is what completion clients expect.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kiln {

class StreamDecoder;
class Tokenizer;

class Detokenizer {
 public:
  // tokenizer may be null (no text). prompt: the context the output continues.
  Detokenizer(const Tokenizer* tokenizer, const std::vector<int32_t>& prompt, bool skip_special);
  ~Detokenizer();
  // The text the newly generated token completes ("" while a character is incomplete).
  std::string step(int32_t token);

 private:
  std::unique_ptr<StreamDecoder> decoder_;
};

// The largest n' <= n such that text[0, n') does not end inside a UTF-8 character.
size_t utf8_complete_prefix(const std::string& text, size_t n);

}  // namespace kiln
