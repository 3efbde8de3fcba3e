#include "kiln/tokenizer/jinja_lexer.h"

#include <cctype>

#include "kiln/tokenizer/utf8.h"

namespace kiln::jinja {
namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

class Lexer {
 public:
  Lexer(std::string_view src, LexOptions options) : src_(src), options_(options) {}
  Result<std::vector<Token>> run();

 private:
  Status lex_tag(char opener);
  Status lex_comment();
  Status lex_token();
  Status lex_string();
  void lex_number();
  void emit_text(std::string text, char sign, bool block_like);
  // After a closing delimiter: '-' strips all following white space, trim_blocks one newline.
  void after_close(char sign, bool block_like);
  Status error(const std::string& what) const {
    return invalid_argument("template line " + std::to_string(line_) + ": " + what);
  }
  void push(Token::Kind kind, std::string text = "") {
    Token t;
    t.kind = kind;
    t.text = std::move(text);
    t.line = line_;
    tokens_.push_back(std::move(t));
  }
  void advance(size_t n) {
    for (size_t i = 0; i < n && pos_ < src_.size(); ++i) line_ += src_[pos_++] == '\n';
  }

  std::string_view src_;
  LexOptions options_;
  size_t pos_ = 0;
  int line_ = 1;
  bool line_starting_ = true;  // the next text begins a line (lstrip_blocks)
  std::vector<Token> tokens_;
};

Result<std::vector<Token>> Lexer::run() {
  while (pos_ < src_.size()) {
    size_t open = pos_;
    while ((open = src_.find('{', open)) != std::string_view::npos) {
      const char next = open + 1 < src_.size() ? src_[open + 1] : '\0';
      if (next == '{' || next == '%' || next == '#') break;
      ++open;
    }
    if (open == std::string_view::npos) {
      emit_text(std::string(src_.substr(pos_)), '\0', false);
      advance(src_.size() - pos_);
      break;
    }
    const char kind = src_[open + 1];
    const char sign = open + 2 < src_.size() && (src_[open + 2] == '-' || src_[open + 2] == '+') ? src_[open + 2] : '\0';
    std::string text(src_.substr(pos_, open - pos_));
    advance(open - pos_);
    emit_text(std::move(text), sign, kind != '{');
    advance(sign ? 3 : 2);
    if (kind == '#') {
      KILN_RETURN_IF_ERROR(lex_comment());
    } else {
      KILN_RETURN_IF_ERROR(lex_tag(kind));
    }
  }
  push(Token::Kind::kEnd);
  return std::move(tokens_);
}

void Lexer::emit_text(std::string text, char sign, bool block_like) {
  if (sign == '-') {
    size_t end = text.size();
    while (end > 0 && is_space(text[end - 1])) --end;
    text.resize(end);
  } else if (sign != '+' && block_like && options_.lstrip_blocks) {
    const size_t line_start = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
    if (line_start > 0 || line_starting_) {
      bool blank = true;
      for (size_t i = line_start; i < text.size(); ++i) blank = blank && is_space(text[i]);
      if (blank) text.resize(line_start);
    }
  }
  if (!text.empty()) push(Token::Kind::kText, std::move(text));
}

void Lexer::after_close(char sign, bool block_like) {
  line_starting_ = false;
  if (sign == '-') {
    while (pos_ < src_.size() && is_space(src_[pos_])) {
      line_starting_ = src_[pos_] == '\n';
      advance(1);
    }
  } else if (sign != '+' && block_like && options_.trim_blocks && pos_ < src_.size() && src_[pos_] == '\n') {
    advance(1);
    line_starting_ = true;
  }
}

Status Lexer::lex_comment() {
  const size_t close = src_.find("#}", pos_);
  if (close == std::string_view::npos) return error("unclosed comment");
  const char sign = close > pos_ && (src_[close - 1] == '-' || src_[close - 1] == '+') ? src_[close - 1] : '\0';
  advance(close + 2 - pos_);
  after_close(sign, true);
  return ok_status();
}

Status Lexer::lex_tag(char opener) {
  const bool block = opener == '%';
  const char closer = block ? '%' : '}';
  push(block ? Token::Kind::kBlockBegin : Token::Kind::kVarBegin);
  while (true) {
    while (pos_ < src_.size() && is_space(src_[pos_])) advance(1);
    if (pos_ >= src_.size()) return error(block ? "unclosed {% tag" : "unclosed {{ tag");
    char sign = '\0';
    size_t at = pos_;
    if ((src_[at] == '-' || src_[at] == '+') && at + 2 < src_.size() && src_[at + 1] == closer && src_[at + 2] == '}') {
      sign = src_[at];
      ++at;
    }
    if (at + 1 < src_.size() && src_[at] == closer && src_[at + 1] == '}') {
      push(block ? Token::Kind::kBlockEnd : Token::Kind::kVarEnd);
      advance(at + 2 - pos_);
      after_close(sign, block);
      return ok_status();
    }
    KILN_RETURN_IF_ERROR(lex_token());
  }
}

Status Lexer::lex_token() {
  const char c = src_[pos_];
  if (c == '\'' || c == '"') return lex_string();
  if (std::isdigit(static_cast<unsigned char>(c))) {
    lex_number();
    return ok_status();
  }
  if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
    size_t end = pos_;
    while (end < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[end])) || src_[end] == '_')) ++end;
    push(Token::Kind::kName, std::string(src_.substr(pos_, end - pos_)));
    advance(end - pos_);
    return ok_status();
  }
  static const char* kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<",
                               ">", "=", ".", ",", ":", "|", "(", ")", "[", "]", "{", "}"};
  for (const char* op : kOps) {
    const std::string_view o(op);
    if (src_.substr(pos_, o.size()) == o) {
      push(Token::Kind::kOp, std::string(o));
      advance(o.size());
      return ok_status();
    }
  }
  return error(std::string("unexpected character '") + c + "'");
}

void Lexer::lex_number() {
  size_t end = pos_;
  auto digits = [&] {
    while (end < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[end])) || src_[end] == '_')) ++end;
  };
  digits();
  bool is_float = false;
  if (end + 1 < src_.size() && src_[end] == '.' && std::isdigit(static_cast<unsigned char>(src_[end + 1]))) {
    is_float = true;
    ++end;
    digits();
  }
  if (end < src_.size() && (src_[end] == 'e' || src_[end] == 'E')) {
    size_t e = end + 1;
    if (e < src_.size() && (src_[e] == '+' || src_[e] == '-')) ++e;
    if (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) {
      is_float = true;
      end = e;
      digits();
    }
  }
  std::string text;
  for (size_t i = pos_; i < end; ++i) if (src_[i] != '_') text += src_[i];
  push(is_float ? Token::Kind::kFloat : Token::Kind::kInt, text);
  if (is_float) {
    tokens_.back().float_value = std::stod(text);
  } else {
    tokens_.back().int_value = std::stoll(text);
  }
  advance(end - pos_);
}

Status Lexer::lex_string() {
  const char quote = src_[pos_];
  std::string out;
  size_t i = pos_ + 1;
  for (; i < src_.size() && src_[i] != quote; ++i) {
    if (src_[i] != '\\' || i + 1 >= src_.size()) {
      out += src_[i];
      continue;
    }
    const char e = src_[++i];
    switch (e) {
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'v': out += '\v'; break;
      case 'a': out += '\a'; break;
      case '0': out += '\0'; break;
      case '\\': case '\'': case '"': out += e; break;
      case '\n': break;  // line continuation
      case 'x': case 'u': case 'U': {
        const size_t n = e == 'x' ? 2 : (e == 'u' ? 4 : 8);
        if (i + n >= src_.size()) return error("truncated escape in string literal");
        const char32_t cp = static_cast<char32_t>(std::stoul(std::string(src_.substr(i + 1, n)), nullptr, 16));
        utf8::append(out, cp);
        i += n;
        break;
      }
      default: out += '\\'; out += e;  // Python keeps unknown escapes as written
    }
  }
  if (i >= src_.size()) return error("unterminated string literal");
  push(Token::Kind::kString, std::move(out));
  advance(i + 1 - pos_);
  return ok_status();
}

}  // namespace

Result<std::vector<Token>> lex(std::string_view source, LexOptions options) {
  return Lexer(source, options).run();
}

}  // namespace kiln::jinja
