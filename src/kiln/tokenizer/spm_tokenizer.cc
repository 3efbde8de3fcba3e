#include "kiln/tokenizer/spm_tokenizer.h"

#include <cstdio>
#include <queue>
#include <unordered_map>

#include "kiln/tokenizer/utf8.h"

namespace kiln {
namespace {

constexpr std::string_view kMetaspace = "\xE2\x96\x81";

bool is_mergeable(TokenType t) {
  return t == TokenType::kNormal || t == TokenType::kUserDefined || t == TokenType::kUnused ||
         t == TokenType::kUndefined;
}

struct Symbol {
  int32_t prev, next;
  uint32_t begin, size;  // byte span in the word; size 0 once merged into the left neighbour
};

struct Bigram {
  int32_t left, right;
  float score;
  uint32_t size;
  // Max-heap order: higher score first, then the leftmost.
  bool operator<(const Bigram& o) const {
    return score != o.score ? score < o.score : left > o.left;
  }
};

}  // namespace

SpmTokenizer::SpmTokenizer(Vocab vocab, bool add_space_prefix)
    : VocabTokenizer(std::move(vocab)), add_space_prefix_(add_space_prefix) {
  strip_leading_space_ = add_space_prefix;
}

Result<std::unique_ptr<SpmTokenizer>> SpmTokenizer::create(Vocab vocab, bool add_space_prefix) {
  if (vocab.scores.size() != vocab.tokens.size()) {
    return data_loss("a SentencePiece vocabulary needs one score per token");
  }
  std::unique_ptr<SpmTokenizer> t(new SpmTokenizer(std::move(vocab), add_space_prefix));
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    t->byte_ids_[b] = t->vocab_.find(name);
  }
  // Merges only form pieces, so if no mergeable piece holds a '▁' after another character, no
  // merge crosses the start of a word and words can be merged (and cached) one by one.
  t->words_splittable_ = true;
  for (size_t id = 0; id < t->vocab_.tokens.size() && t->words_splittable_; ++id) {
    const std::string& p = t->vocab_.tokens[id];
    if (!is_mergeable(t->vocab_.types[id])) continue;
    for (size_t pos = p.find(kMetaspace, 1); pos != std::string::npos; pos = p.find(kMetaspace, pos + 1)) {
      if (pos < 3 || p.compare(pos - 3, 3, kMetaspace) != 0) t->words_splittable_ = false;
    }
  }
  t->build_token_bytes();
  return t;
}

void SpmTokenizer::build_token_bytes() {
  token_bytes_.resize(vocab_.tokens.size());
  for (size_t id = 0; id < vocab_.tokens.size(); ++id)
    token_bytes_[id] = metaspace_piece_bytes(vocab_.tokens[id], vocab_.types[id] == TokenType::kByte);
}

int32_t SpmTokenizer::mergeable_id(std::string_view piece) const {
  const int32_t id = vocab_.find(piece);
  return id >= 0 && is_mergeable(vocab_.types[id]) ? id : -1;
}

void SpmTokenizer::append_bytes(std::string_view text, std::vector<int32_t>& out) const {
  for (const char c : text) {
    const int32_t id = byte_ids_[static_cast<uint8_t>(c)];
    if (id >= 0) {
      out.push_back(id);
    } else if (vocab_.unk_id >= 0) {
      out.push_back(vocab_.unk_id);
    }
  }
}

void SpmTokenizer::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  std::vector<Symbol> symbols;
  for (uint32_t pos = 0; pos < word.size();) {
    const auto n = static_cast<uint32_t>(std::min<size_t>(
        utf8::sequence_length(static_cast<uint8_t>(word[pos])), word.size() - pos));
    const auto index = static_cast<int32_t>(symbols.size());
    symbols.push_back(Symbol{index - 1, pos + n < word.size() ? index + 1 : -1, pos, n});
    pos += n;
  }
  std::priority_queue<Bigram> heap;
  // Unused pieces are merged like the others, then split back into the two halves that formed
  // them (sentencepiece's resegmentation).
  std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>> unused_halves;
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const std::string_view text = word.substr(symbols[left].begin, symbols[left].size + symbols[right].size);
    const int32_t id = mergeable_id(text);
    if (id < 0) return;
    heap.push(Bigram{left, right, vocab_.scores[id], static_cast<uint32_t>(text.size())});
    if (vocab_.types[id] == TokenType::kUnused) {
      unused_halves[text] = {text.substr(0, symbols[left].size), text.substr(symbols[left].size)};
    }
  };
  for (int32_t i = 1; i < static_cast<int32_t>(symbols.size()); ++i) try_add(i - 1, i);
  while (!heap.empty()) {
    const Bigram b = heap.top();
    heap.pop();
    Symbol& l = symbols[b.left];
    Symbol& r = symbols[b.right];
    if (l.size == 0 || r.size == 0 || l.size + r.size != b.size) continue;  // stale
    l.size += r.size;
    r.size = 0;
    l.next = r.next;
    if (r.next >= 0) symbols[r.next].prev = b.left;
    try_add(l.prev, b.left);
    try_add(b.left, l.next);
  }
  auto emit = [&](auto&& self, std::string_view text) -> void {
    const int32_t id = vocab_.find(text);
    if (id >= 0 && vocab_.types[id] != TokenType::kUnused) {
      out.push_back(id);
      return;
    }
    auto halves = unused_halves.find(text);
    if (halves == unused_halves.end()) {
      append_bytes(text, out);
      return;
    }
    self(self, halves->second.first);
    self(self, halves->second.second);
  };
  for (int32_t i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) {
    emit(emit, word.substr(symbols[i].begin, symbols[i].size));
  }
}

void SpmTokenizer::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (cache_.lookup(word, out)) return;
  const size_t before = out.size();
  merge_word(word, out);
  cache_.insert(word, out.data() + before, out.size() - before);
}

void SpmTokenizer::encode_text(std::string_view text, TextSpan span, std::vector<int32_t>& out) const {
  thread_local std::string escaped;
  escaped.clear();
  // llama.cpp and sentencepiece's legacy behaviour: the prefix comes back after special tokens.
  if (add_space_prefix_ && (span.first || span.after_added_token)) escaped += kMetaspace;
  for (const char c : text) {
    if (c == ' ') {
      escaped += kMetaspace;
    } else {
      escaped += c;
    }
  }
  const std::string_view s = escaped;
  if (!words_splittable_) {
    merge_word(s, out);
    return;
  }
  size_t start = 0;
  for (size_t pos = s.find(kMetaspace, 1); pos != std::string_view::npos; pos = s.find(kMetaspace, pos + 1)) {
    const bool after_metaspace = pos >= 3 && s.compare(pos - 3, 3, kMetaspace) == 0;
    if (after_metaspace || pos == start) continue;
    encode_word(s.substr(start, pos - start), out);
    start = pos;
  }
  encode_word(s.substr(start), out);
}

}  // namespace kiln
