#include "kiln/tokenizer/stream_decoder.h"

#include "kiln/tokenizer/utf8.h"

namespace kiln {

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(tokenizer), skip_special_(skip_special) {}

void StreamDecoder::reset() {
  at_start_ = true;
  pending_.clear();
}

void StreamDecoder::append(int32_t id) {
  if (id < 0 || id >= tokenizer_.vocab_size()) return;
  if (skip_special_ && tokenizer_.is_special(id)) return;
  std::string piece = tokenizer_.token_piece(id);
  if (piece.empty()) return;
  // decode() drops one space at the very start of the text; here that is the first byte of the
  // first non-empty piece.
  if (at_start_ && tokenizer_.strips_leading_space() && piece[0] == ' ') piece.erase(0, 1);
  at_start_ = false;
  pending_ += piece;
}

std::string StreamDecoder::take_complete() {
  const size_t keep = utf8::incomplete_tail(pending_);
  const size_t ready = pending_.size() - keep;
  if (ready == 0) return {};
  std::string out = utf8::repair(std::string_view(pending_).substr(0, ready));
  pending_.erase(0, ready);
  return out;
}

std::string StreamDecoder::push(int32_t id) {
  append(id);
  return take_complete();
}

std::string StreamDecoder::push(const std::vector<int32_t>& ids) {
  for (const int32_t id : ids) append(id);
  return take_complete();
}

std::string StreamDecoder::finish() {
  std::string out = utf8::repair(pending_);
  reset();
  return out;
}

}  // namespace kiln
