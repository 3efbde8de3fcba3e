#include "kiln/tokenizer/added_token_matcher.h"

#include <algorithm>

#include "kiln/tokenizer/utf8.h"

namespace kiln {
namespace {

bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

// Word characters for single_word: ASCII alphanumerics, '_' and every non-ASCII code point
// (an approximation of Unicode alphanumerics that errs toward not matching).
bool is_word_byte(uint8_t b) {
  return (b >= '0' && b <= '9') || (b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z') || b == '_' ||
         b >= 0x80;
}

// Start of the white space run that ends at pos.
size_t white_space_before(std::string_view text, size_t pos) {
  while (pos > 0) {
    size_t start = pos - 1;
    while (start > 0 && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) --start;
    size_t n = 0;
    if (!is_white_space(utf8::decode(text, start, &n)) || start + n != pos) break;
    pos = start;
  }
  return pos;
}

// End of the white space run that starts at pos.
size_t white_space_after(std::string_view text, size_t pos) {
  while (pos < text.size()) {
    size_t n = 0;
    if (!is_white_space(utf8::decode(text, pos, &n))) break;
    pos += n;
  }
  return pos;
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(const std::vector<AddedToken>& tokens) : tokens_(tokens) {
  for (size_t i = 0; i < tokens_.size(); ++i) {
    const std::string& s = tokens_[i].content;
    if (s.empty()) continue;
    int32_t node = 0;
    for (const char c : s) {
      const uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(c);
      auto it = edges_.find(key);
      if (it == edges_.end()) {
        const auto child = static_cast<int32_t>(terminal_.size());
        terminal_.push_back(-1);
        it = edges_.emplace(key, child).first;
      }
      node = it->second;
    }
    if (terminal_[node] < 0) terminal_[node] = static_cast<int32_t>(i);  // first one wins
    first_byte_[static_cast<uint8_t>(s[0])] = true;
  }
}

int AddedTokenMatcher::longest_at(std::string_view text, size_t pos) const {
  int best = -1;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const uint64_t key = (static_cast<uint64_t>(node) << 8) | static_cast<uint8_t>(text[i]);
    auto it = edges_.find(key);
    if (it == edges_.end()) break;
    node = it->second;
    if (terminal_[node] >= 0) best = terminal_[node];
  }
  return best;
}

bool AddedTokenMatcher::boundaries_ok(const AddedToken& t, std::string_view text, size_t b,
                                      size_t e) const {
  if (!t.single_word) return true;
  const bool word_before = b > 0 && is_word_byte(static_cast<uint8_t>(text[b - 1]));
  const bool word_after = e < text.size() && is_word_byte(static_cast<uint8_t>(text[e]));
  return !word_before && !word_after;
}

bool AddedTokenMatcher::next_match(std::string_view text, size_t pos, Match* m) const {
  if (tokens_.empty()) return false;
  for (size_t i = pos; i < text.size(); ++i) {
    if (!first_byte_[static_cast<uint8_t>(text[i])]) continue;
    const int k = longest_at(text, i);
    if (k < 0) continue;
    const AddedToken& t = tokens_[k];
    const size_t end = i + t.content.size();
    if (!boundaries_ok(t, text, i, end)) continue;
    m->begin = t.lstrip ? std::max(pos, white_space_before(text, i)) : i;
    m->end = t.rstrip ? white_space_after(text, end) : end;
    m->id = t.id;
    return true;
  }
  return false;
}

}  // namespace kiln
