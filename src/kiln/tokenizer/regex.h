// Regex: a compiled PCRE2 pattern (JIT when available) that reports every non-overlapping match,
// leftmost first, as Hugging Face's Oniguruma-based Split does. Patterns are written in the
// Oniguruma dialect of tokenizer.json; translate_oniguruma() maps the one construct whose meaning
// differs in PCRE2 (\s: Oniguruma uses the Unicode White_Space property, PCRE2 \p{Xps}/\h/\v).
#pragma once
#include <memory>
#include <string>
#include <string_view>

#include "kiln/core/status.h"

namespace kiln {

class Regex {
 public:
  // kUtf: UTF-8 subject, Unicode properties (\p{L}). kBytes: one character per byte.
  enum class Mode { kUtf, kBytes };

  static Result<Regex> compile(std::string_view pattern, Mode mode = Mode::kUtf);
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;
  ~Regex();

  // Finds the first match in subject at or after offset; false if none. In kUtf mode subject
  // must be valid UTF-8 (the caller checks once per text) and offset a character boundary.
  bool find(std::string_view subject, size_t offset, size_t* begin, size_t* end) const;

  // on_match(begin, end) for every non-empty, non-overlapping match.
  template <typename F>
  void for_each_match(std::string_view subject, F&& on_match) const {
    size_t offset = 0, begin = 0, end = 0;
    while (offset < subject.size() && find(subject, offset, &begin, &end)) {
      if (end == begin) {  // an empty match: step over one character
        offset = begin + step_one(subject, begin);
        continue;
      }
      on_match(begin, end);
      offset = end;
    }
  }

  const std::string& pattern() const { return pattern_; }

 private:
  Regex() = default;
  size_t step_one(std::string_view subject, size_t pos) const;

  std::string pattern_;
  Mode mode_ = Mode::kUtf;
  void* code_ = nullptr;  // pcre2_code_8*
};

// Rewrites Oniguruma's \s and \S as explicit Unicode White_Space classes.
std::string translate_oniguruma(std::string_view pattern);

}  // namespace kiln
