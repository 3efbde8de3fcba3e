#include "kiln/tokenizer/vocab_tokenizer.h"

#include "kiln/tokenizer/utf8.h"

namespace kiln {

Tokenizer::~Tokenizer() = default;

std::string Tokenizer::token_piece(int32_t) const { return {}; }

const std::string& Tokenizer::token_string(int32_t id) const {
  static const std::string kEmpty;
  return id >= 0 && id < vocab_.size() ? vocab_.tokens[id] : kEmpty;
}

VocabTokenizer::VocabTokenizer(Vocab vocab) : Tokenizer(std::move(vocab)), added_(vocab_.added) {}

Result<std::vector<int32_t>> VocabTokenizer::encode(std::string_view text, bool add_special) const {
  const size_t bad = utf8::first_invalid(text);
  if (bad != text.size()) {
    return invalid_argument("text is not valid UTF-8 at byte " + std::to_string(bad));
  }
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_special && vocab_.add_bos) out.push_back(vocab_.bos_id);
  TextSpan span;
  added_.split(text, [&](const AddedTokenMatcher::Segment& seg) {
    if (seg.id >= 0) {
      out.push_back(seg.id);
      span.after_added_token = true;
    } else {
      encode_text(seg.text, span, out);
      span.after_added_token = false;
    }
    span.first = false;
  });
  if (add_special && vocab_.add_eos) out.push_back(vocab_.eos_id);
  return out;
}

std::string VocabTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string bytes;
  for (const int32_t id : ids) {
    if (id < 0 || id >= static_cast<int32_t>(token_bytes_.size())) continue;
    if (skip_special && vocab_.is_special(id)) continue;
    bytes += token_bytes_[id];
  }
  if (strip_leading_space_ && !bytes.empty() && bytes[0] == ' ') bytes.erase(0, 1);
  return utf8::repair(bytes);
}

std::string VocabTokenizer::token_piece(int32_t id) const {
  if (id < 0 || id >= static_cast<int32_t>(token_bytes_.size())) return {};
  return token_bytes_[id];
}

}  // namespace kiln
