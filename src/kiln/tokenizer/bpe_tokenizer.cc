#include "kiln/tokenizer/bpe_tokenizer.h"

#include <cstdio>

#include "kiln/tokenizer/byte_level_alphabet.h"
#include "kiln/tokenizer/utf8.h"

namespace kiln {
namespace {

constexpr std::string_view kMetaspace = "\xE2\x96\x81";  // U+2581 '▁'

std::string byte_token_name(uint8_t b) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
  return buf;
}

// True when some token has a '▁' right after another character ("a▁b"): then a word boundary
// before '▁' is not a place merges can never cross.
bool some_token_spans_metaspace(const Vocab& vocab) {
  for (const std::string& t : vocab.tokens) {
    size_t pos = t.find(kMetaspace, 1);
    while (pos != std::string::npos) {
      if (pos < kMetaspace.size() || t.compare(pos - kMetaspace.size(), kMetaspace.size(), kMetaspace) != 0) {
        return true;
      }
      pos = t.find(kMetaspace, pos + 1);
    }
  }
  return false;
}

}  // namespace

BpeTokenizer::BpeTokenizer(Vocab vocab, PreTokenizer pre, BpeOptions options)
    : VocabTokenizer(std::move(vocab)), pre_(std::move(pre)), options_(options) {
  strip_leading_space_ = options_.strip_leading_space;
}

Result<std::unique_ptr<BpeTokenizer>> BpeTokenizer::create(Vocab vocab, const MergeList& merges,
                                                           PreTokenizer pre, BpeOptions options) {
  std::unique_ptr<BpeTokenizer> t(new BpeTokenizer(std::move(vocab), std::move(pre), options));
  KILN_RETURN_IF_ERROR(t->build_merges(merges));
  t->build_alphabet();
  t->build_token_bytes();
  return t;
}

Status BpeTokenizer::build_merges(const MergeList& merges) {
  std::string joined;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const int32_t l = vocab_.find(left), r = vocab_.find(right);
    joined = left + right;
    const int32_t m = vocab_.find(joined);
    // Hugging Face refuses such files; llama.cpp skips the rule. Skipping keeps old files usable.
    if (l < 0 || r < 0 || m < 0) continue;
    merges_.add(l, r, m, static_cast<int32_t>(rank));
  }
  if (merges_.size() == 0 && !merges.empty()) {
    return data_loss("none of the " + std::to_string(merges.size()) + " BPE merges names tokens in the vocabulary");
  }
  return ok_status();
}

void BpeTokenizer::build_alphabet() {
  const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::get();
  for (int b = 0; b < 256; ++b) {
    byte_ids_[b] = vocab_.find(alphabet.utf8_of(static_cast<uint8_t>(b)));
    fallback_ids_[b] = vocab_.find(byte_token_name(static_cast<uint8_t>(b)));
  }
  if (options_.byte_level && options_.ignore_merges) {
    std::string raw;
    for (size_t id = 0; id < vocab_.tokens.size(); ++id) {
      if (alphabet.to_bytes(vocab_.tokens[id], &raw)) raw_to_id_.emplace(raw, static_cast<int32_t>(id));
    }
  }
  words_splittable_ = !options_.byte_level && pre_.empty() && !some_token_spans_metaspace(vocab_);
}

void BpeTokenizer::build_token_bytes() {
  const ByteLevelAlphabet& alphabet = ByteLevelAlphabet::get();
  token_bytes_.resize(vocab_.tokens.size());
  for (size_t id = 0; id < vocab_.tokens.size(); ++id) {
    const std::string& piece = vocab_.tokens[id];
    const TokenType type = vocab_.types[id];
    const bool added = type == TokenType::kControl || type == TokenType::kUserDefined;
    std::string& out = token_bytes_[id];
    if (added) {
      out = piece;  // added tokens are written as plain text, not in the byte alphabet
    } else if (options_.byte_level) {
      if (!alphabet.to_bytes(piece, &out)) out = piece;
    } else {
      out = metaspace_piece_bytes(piece, type == TokenType::kByte || options_.byte_fallback);
    }
  }
}

void BpeTokenizer::append_char_symbols(std::string_view ch, std::vector<int32_t>& symbols) const {
  const int32_t id = vocab_.find(ch);
  if (id >= 0) {
    symbols.push_back(id);
    return;
  }
  if (options_.byte_fallback) {
    bool all = true;
    for (const char c : ch) all = all && fallback_ids_[static_cast<uint8_t>(c)] >= 0;
    if (all) {
      for (const char c : ch) symbols.push_back(fallback_ids_[static_cast<uint8_t>(c)]);
      return;
    }
  }
  // Without an unknown token in the model, Hugging Face and llama.cpp drop what they cannot write.
  if (!options_.use_unk || vocab_.unk_id < 0) return;
  if (options_.fuse_unk && !symbols.empty() && symbols.back() == vocab_.unk_id) return;
  symbols.push_back(vocab_.unk_id);
}

void BpeTokenizer::initial_symbols(std::string_view word, std::vector<int32_t>& symbols) const {
  symbols.clear();
  if (options_.byte_level) {
    for (const char c : word) {
      const int32_t id = byte_ids_[static_cast<uint8_t>(c)];
      if (id >= 0) {
        symbols.push_back(id);
      } else {
        append_char_symbols(ByteLevelAlphabet::get().utf8_of(static_cast<uint8_t>(c)), symbols);
      }
    }
    return;
  }
  for (size_t pos = 0; pos < word.size();) {
    const size_t n = static_cast<size_t>(utf8::sequence_length(static_cast<uint8_t>(word[pos])));
    append_char_symbols(word.substr(pos, n), symbols);
    pos += n;
  }
}

void BpeTokenizer::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (cache_.lookup(word, out)) return;
  if (options_.ignore_merges) {
    const int32_t id = options_.byte_level ? [&] {
      auto it = raw_to_id_.find(word);
      return it == raw_to_id_.end() ? -1 : it->second;
    }() : vocab_.find(word);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  thread_local std::vector<int32_t> symbols;
  initial_symbols(word, symbols);
  merges_.apply(symbols);
  cache_.insert(word, symbols.data(), symbols.size());
  out.insert(out.end(), symbols.begin(), symbols.end());
}

template <typename F>
void BpeTokenizer::split_words(std::string_view text, F&& on_word) const {
  size_t start = 0;
  size_t pos = text.find(kMetaspace, 1);
  while (pos != std::string_view::npos) {
    const bool after_metaspace =
        pos >= kMetaspace.size() && text.compare(pos - kMetaspace.size(), kMetaspace.size(), kMetaspace) == 0;
    if (!after_metaspace && pos > start) {
      on_word(text.substr(start, pos - start));
      start = pos;
    }
    pos = text.find(kMetaspace, pos + 1);
  }
  on_word(text.substr(start));
}

void BpeTokenizer::encode_text(std::string_view text, TextSpan span, std::vector<int32_t>& out) const {
  auto on_word = [&](std::string_view word) { encode_word(word, out); };
  if (options_.byte_level && !options_.add_prefix_space) {
    pre_.split(text, on_word);
    return;
  }
  thread_local std::string normalized;
  normalized.clear();
  if (options_.byte_level) {  // ByteLevel(add_prefix_space): a space unless one is there
    if (text.empty() || text[0] != ' ') normalized += ' ';
    normalized += text;
    pre_.split(normalized, on_word);
    return;
  }
  bool prepend = options_.prepend == PrependScheme::kAlways ||
                 (options_.prepend == PrependScheme::kFirst && span.first);
  if (options_.prepend_if_missing_only && (text.starts_with(' ') || text.starts_with(kMetaspace))) {
    prepend = false;
  }
  if (prepend) normalized += kMetaspace;
  for (const char c : text) {
    if (c == ' ' && options_.replace_space) {
      normalized += kMetaspace;
    } else {
      normalized += c;
    }
  }
  const std::string_view view = normalized;
  if (!pre_.empty()) {
    pre_.split(view, on_word);
  } else if (words_splittable_) {
    split_words(view, on_word);
  } else {
    on_word(view);
  }
}

}  // namespace kiln
