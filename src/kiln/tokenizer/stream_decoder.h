// StreamDecoder: turns generated ids into text as they arrive, for the server's streamed
// responses. It never emits part of a UTF-8 character (bytes of a character split across byte
// tokens are held back until it completes), applies the tokenizer's leading-space rule, and does
// O(new bytes) work per token. The concatenation of everything push() and finish() return equals
// tokenizer.decode(all ids, skip_special).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kiln/tokenizer/tokenizer.h"

namespace kiln {

class StreamDecoder {
 public:
  // The tokenizer must outlive the decoder.
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = true);

  // The text that became complete with this id ("" while a character is still incomplete).
  std::string push(int32_t id);
  std::string push(const std::vector<int32_t>& ids);
  // Whatever is held back, with an incomplete character as U+FFFD; then starts over.
  std::string finish();
  void reset();

  // Bytes held back waiting for the rest of a character (0..3).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  // Appends the bytes of id to pending_, applying the leading-space rule.
  void append(int32_t id);
  // Moves the complete prefix of pending_ out, repairing sequences that can never complete.
  std::string take_complete();

  const Tokenizer& tokenizer_;
  bool skip_special_;
  bool at_start_ = true;  // nothing has been produced yet
  std::string pending_;
};

}  // namespace kiln
