// AddedTokenMatcher: finds added/special tokens in raw text (leftmost, then longest, as Hugging
// Face's Aho-Corasick split does) so they become single ids and the text between them goes to the
// model. Honors lstrip/rstrip (the token swallows adjacent white space) and single_word.
#pragma once
#include <cstdint>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "kiln/tokenizer/vocab.h"

namespace kiln {

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  explicit AddedTokenMatcher(const std::vector<AddedToken>& tokens);

  // One piece of the split: text for the model (id < 0) or an added token (id >= 0).
  struct Segment {
    std::string_view text;
    int32_t id = -1;
  };

  // on_segment(const Segment&) in order; empty text between tokens is not reported.
  template <typename F>
  void split(std::string_view text, F&& on_segment) const;

 private:
  struct Match {
    size_t begin = 0, end = 0;  // the span the token covers, white space it swallows included
    int32_t id = -1;
  };
  // The leftmost-longest match at or after pos; false if none.
  bool next_match(std::string_view text, size_t pos, Match* m) const;
  // The longest token starting exactly at pos (index into tokens_), or -1.
  int longest_at(std::string_view text, size_t pos) const;
  bool boundaries_ok(const AddedToken& t, std::string_view text, size_t b, size_t e) const;

  std::vector<AddedToken> tokens_;
  // Trie over token bytes: key (node << 8 | byte) -> child node; terminal[node] = token index.
  std::unordered_map<uint64_t, int32_t> edges_;
  std::vector<int32_t> terminal_{-1};
  bool first_byte_[256] = {};
};

template <typename F>
void AddedTokenMatcher::split(std::string_view text, F&& on_segment) const {
  size_t pos = 0;
  Match m;
  while (pos < text.size() && next_match(text, pos, &m)) {
    if (m.begin > pos) on_segment(Segment{text.substr(pos, m.begin - pos), -1});
    on_segment(Segment{text.substr(m.begin, m.end - m.begin), m.id});
    pos = m.end;
  }
  if (pos < text.size()) on_segment(Segment{text.substr(pos), -1});
}

}  // namespace kiln
