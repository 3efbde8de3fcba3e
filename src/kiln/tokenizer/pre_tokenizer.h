// PreTokenizer: splits text into the pieces BPE merges within, as a sequence of regex splits
// (Hugging Face's Sequence of Split/Digits/Punctuation/ByteLevel pre-tokenizers). Each step
// splits every piece the previous step produced. Presets reproduce the tokenizer.json of each
// family that GGUF names in "tokenizer.ggml.pre".
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/tokenizer/regex.h"

namespace kiln {

// What a split does with the matches (Hugging Face SplitDelimiterBehavior).
enum class SplitBehavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext, kContiguous };

class PreTokenizer {
 public:
  // The pre-tokenizer of a GGUF byte-level vocabulary ("gpt-2", "llama-bpe", "qwen2", "smollm",
  // "starcoder", "falcon", "deepseek-llm", ...). Unknown names are an Unimplemented error listing
  // the supported ones.
  static Result<PreTokenizer> for_gguf(std::string_view pre_name);
  static std::string supported_gguf_names();

  // Adds a split step. pattern is in the Oniguruma dialect of tokenizer.json. kBytes steps run on
  // the byte-level mapped text (after a ByteLevel step), where each byte is one character.
  Status add_split(std::string_view pattern, SplitBehavior behavior,
                   Regex::Mode mode = Regex::Mode::kUtf);
  bool empty() const { return steps_.empty(); }

  // on_piece(std::string_view) for every final piece, in order. text must be valid UTF-8.
  template <typename F>
  void split(std::string_view text, F&& on_piece) const {
    if (text.empty()) return;
    split_from(0, text, on_piece);
  }

 private:
  struct Step {
    Regex regex;
    SplitBehavior behavior;
  };

  template <typename F>
  void split_from(size_t step, std::string_view piece, F& on_piece) const;

  std::vector<Step> steps_;
};

template <typename F>
void PreTokenizer::split_from(size_t step, std::string_view piece, F& on_piece) const {
  if (step == steps_.size()) {
    on_piece(piece);
    return;
  }
  const Step& s = steps_[step];
  auto emit = [&](size_t b, size_t e) {
    if (e > b) split_from(step + 1, piece.substr(b, e - b), on_piece);
  };
  size_t last = 0;         // end of what has been emitted
  size_t pending = 0;      // kMergedWithNext: start of the match that waits for the next gap
  bool has_pending = false;
  size_t run_begin = 0, run_end = 0;  // kContiguous: the current run of adjacent matches
  bool in_run = false;
  s.regex.for_each_match(piece, [&](size_t b, size_t e) {
    switch (s.behavior) {
      case SplitBehavior::kIsolated:
        emit(last, b);
        emit(b, e);
        break;
      case SplitBehavior::kRemoved:
        emit(last, b);
        break;
      case SplitBehavior::kMergedWithPrevious:
        emit(last, e);
        break;
      case SplitBehavior::kMergedWithNext:
        emit(has_pending ? pending : last, b);
        pending = b;
        has_pending = true;
        break;
      case SplitBehavior::kContiguous:
        if (in_run && b == run_end) {
          run_end = e;
          return;
        }
        if (in_run) emit(run_begin, run_end);
        emit(in_run ? run_end : last, b);
        run_begin = b;
        run_end = e;
        in_run = true;
        return;
    }
    last = e;
  });
  if (s.behavior == SplitBehavior::kContiguous && in_run) {
    emit(run_begin, run_end);
    last = run_end;
  }
  if (s.behavior == SplitBehavior::kMergedWithNext && has_pending) last = pending;
  emit(last, piece.size());
}

}  // namespace kiln
