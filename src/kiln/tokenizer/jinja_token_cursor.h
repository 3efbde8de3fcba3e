// jinja::TokenCursor: a position in the token list, shared by the statement and expression
// parsers, with the peek/skip/expect helpers both need.
#pragma once
#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/tokenizer/jinja_lexer.h"

namespace kiln::jinja {

struct TokenCursor {
  std::vector<Token> tokens;  // ends with a kEnd token
  size_t pos = 0;

  const Token& peek(size_t ahead = 0) const { return tokens[std::min(pos + ahead, tokens.size() - 1)]; }
  const Token& next() { return tokens[std::min(pos++, tokens.size() - 1)]; }
  bool is_op(std::string_view op, size_t ahead = 0) const {
    return peek(ahead).kind == Token::Kind::kOp && peek(ahead).text == op;
  }
  bool is_name(std::string_view name, size_t ahead = 0) const {
    return peek(ahead).kind == Token::Kind::kName && peek(ahead).text == name;
  }
  bool skip_op(std::string_view op) { return is_op(op) ? (++pos, true) : false; }
  bool skip_name(std::string_view name) { return is_name(name) ? (++pos, true) : false; }

  Status error(const std::string& what) const {
    return invalid_argument("template line " + std::to_string(peek().line) + ": " + what);
  }
  Status expect_op(std::string_view op) {
    return skip_op(op) ? ok_status() : error("expected '" + std::string(op) + "', found '" + peek().text + "'");
  }
  Status expect(Token::Kind kind, std::string_view what) {
    if (peek().kind != kind) return error("expected '" + std::string(what) + "', found '" + peek().text + "'");
    ++pos;
    return ok_status();
  }
  Result<std::string> expect_name() {
    if (peek().kind != Token::Kind::kName) return error("expected a name, found '" + peek().text + "'");
    return next().text;
  }
};

}  // namespace kiln::jinja
