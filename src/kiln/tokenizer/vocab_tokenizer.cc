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

std::string VocabTokenizer::metaspace_piece_bytes(const std::string& piece, bool byte_token) {
  if (byte_token && piece.size() == 6 && piece.rfind("<0x", 0) == 0 && piece[5] == '>')
    return std::string(1, static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
  static constexpr std::string_view kMetaspaceUtf8 = "\xE2\x96\x81";  // U+2581
  std::string out;
  for (size_t pos = 0; pos < piece.size();) {
    if (piece.compare(pos, kMetaspaceUtf8.size(), kMetaspaceUtf8) == 0) {
      out += ' ';
      pos += kMetaspaceUtf8.size();
    } else {
      out += piece[pos++];
    }
  }
  return out;
}

}  // namespace kiln
