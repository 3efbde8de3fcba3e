// BpeTokenizer: merge-ranked BPE, in two alphabets:
//  - byte-level (GPT-2 family: GPT-2, Llama 3, Qwen2, SmolLM, StarCoder, Falcon, DeepSeek): the
//    pre-tokenizer splits the text, each piece's bytes start as single-byte tokens;
//  - characters with byte fallback (Llama 2 / Mistral tokenizer.json): ' ' becomes '▁', a '▁'
//    prefix is added, characters missing from the vocabulary become <0xNN> tokens.
// Repeated words come from a WordCache instead of the merge loop.
#pragma once
#include <array>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kiln/tokenizer/bpe_merges.h"
#include "kiln/tokenizer/pre_tokenizer.h"
#include "kiln/tokenizer/vocab_tokenizer.h"
#include "kiln/tokenizer/word_cache.h"

namespace kiln {

// When the SentencePiece '▁' prefix is added to a stretch of text (Hugging Face Metaspace).
enum class PrependScheme { kNever, kFirst, kAlways };

struct BpeOptions {
  bool byte_level = true;      // GPT-2 byte alphabet; false: characters
  bool ignore_merges = false;  // a word that is itself a token skips the merges (Llama 3)
  bool byte_fallback = false;  // characters outside the vocabulary become <0xNN>
  bool use_unk = false;        // characters outside the vocabulary become <unk> (else dropped)
  bool fuse_unk = false;       // consecutive unknown characters become one <unk>
  bool replace_space = false;  // ' ' -> '▁' before the merges
  PrependScheme prepend = PrependScheme::kNever;
  bool prepend_if_missing_only = false;  // Metaspace: no prefix when the text starts with '▁'
  bool add_prefix_space = false;         // ByteLevel(add_prefix_space): ' ' before each stretch
  bool strip_leading_space = false;      // decoding drops one leading space
};

using MergeList = std::vector<std::pair<std::string, std::string>>;

class BpeTokenizer : public VocabTokenizer {
 public:
  // merges: (left, right) pieces as the vocabulary writes them, in rank order.
  static Result<std::unique_ptr<BpeTokenizer>> create(Vocab vocab, const MergeList& merges,
                                                      PreTokenizer pre, BpeOptions options);

 protected:
  void encode_text(std::string_view text, TextSpan span, std::vector<int32_t>& out) const override;

 private:
  BpeTokenizer(Vocab vocab, PreTokenizer pre, BpeOptions options);
  Status build_merges(const MergeList& merges);
  void build_alphabet();
  void build_token_bytes();

  // Appends the ids of one pre-tokenized word.
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;
  void initial_symbols(std::string_view word, std::vector<int32_t>& symbols) const;
  void append_char_symbols(std::string_view ch, std::vector<int32_t>& symbols) const;
  // Character vocabularies: split at each '▁' that follows another character, where no token
  // spans such a boundary (checked at load), so the cache sees words, not whole texts.
  template <typename F>
  void split_words(std::string_view text, F&& on_word) const;

  PreTokenizer pre_;
  BpeOptions options_;
  BpeMerges merges_;
  WordCache cache_;
  std::array<int32_t, 256> byte_ids_{};   // byte-level: byte -> id of its one-character token
  std::array<int32_t, 256> fallback_ids_{};  // byte fallback: byte -> id of <0xNN>
  TokenIdMap raw_to_id_;                  // byte-level ignore_merges: raw bytes -> id
  bool words_splittable_ = false;
};

}  // namespace kiln
