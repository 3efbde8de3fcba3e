#include "kiln/tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "kiln/tokenizer/utf8.h"

namespace kiln {
namespace {

// Unicode White_Space, the set Oniguruma's \s matches for UTF-8 subjects.
constexpr std::string_view kWhiteSpaceItems =
    "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

// Per-thread match state: the ovector only needs the whole-match pair, so one match data block
// serves every pattern; the JIT stack is larger than the default so long whitespace runs with
// look-ahead cannot overflow it.
struct MatchScratch {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  pcre2_jit_stack* jit_stack = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, nullptr);
  MatchScratch() { pcre2_jit_stack_assign(context, nullptr, jit_stack); }
  ~MatchScratch() {
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

MatchScratch& scratch() {
  thread_local MatchScratch s;
  return s;
}

}  // namespace

std::string translate_oniguruma(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 64);
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      ++i;
      if (e == 's') {
        out += in_class ? std::string(kWhiteSpaceItems) : "[" + std::string(kWhiteSpaceItems) + "]";
      } else if (e == 'S' && !in_class) {
        out += "[^" + std::string(kWhiteSpaceItems) + "]";
      } else {
        out += '\\';
        out += e;
      }
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal member.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

Result<Regex> Regex::compile(std::string_view pattern, Mode mode) {
  uint32_t options = mode == Mode::kUtf ? (PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK) : 0;
  int error = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   options, &error, &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return invalid_argument("regex '" + std::string(pattern) + "' at offset " +
                            std::to_string(error_offset) + ": " +
                            reinterpret_cast<const char*>(message));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is absent
  Regex r;
  r.pattern_ = std::string(pattern);
  r.mode_ = mode;
  r.code_ = code;
  return r;
}

Regex::Regex(Regex&& o) noexcept : pattern_(std::move(o.pattern_)), mode_(o.mode_), code_(o.code_) {
  o.code_ = nullptr;
}

Regex& Regex::operator=(Regex&& o) noexcept {
  if (this != &o) {
    if (code_ != nullptr) pcre2_code_free(static_cast<pcre2_code*>(code_));
    pattern_ = std::move(o.pattern_);
    mode_ = o.mode_;
    code_ = o.code_;
    o.code_ = nullptr;
  }
  return *this;
}

Regex::~Regex() {
  if (code_ != nullptr) pcre2_code_free(static_cast<pcre2_code*>(code_));
}

bool Regex::find(std::string_view subject, size_t offset, size_t* begin, size_t* end) const {
  MatchScratch& s = scratch();
  const uint32_t options = mode_ == Mode::kUtf ? PCRE2_NO_UTF_CHECK : 0;
  const int rc = pcre2_match(static_cast<const pcre2_code*>(code_),
                             reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), offset,
                             options, s.data, s.context);
  if (rc < 0) return false;  // PCRE2_ERROR_NOMATCH, or a resource limit: treat as no match
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(s.data);
  *begin = ovector[0];
  *end = ovector[1];
  return true;
}

size_t Regex::step_one(std::string_view subject, size_t pos) const {
  if (mode_ == Mode::kBytes) return 1;
  return static_cast<size_t>(utf8::sequence_length(static_cast<uint8_t>(subject[pos])));
}

}  // namespace kiln
