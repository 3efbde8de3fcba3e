// jinja::lex: template source -> tokens. Text between tags becomes one kText token; tags become
// delimiters plus expression tokens. Whitespace control is applied here: {%- / -%} strip, and the
// trim_blocks / lstrip_blocks options that transformers' chat-template environment turns on.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/core/status.h"

namespace kiln::jinja {

struct Token {
  enum class Kind {
    kText, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt, kFloat, kOp, kEnd,
  };
  Kind kind = Kind::kEnd;
  std::string text;  // text, name, operator, or the decoded string literal
  int64_t int_value = 0;
  double float_value = 0.0;
  int line = 1;
};

struct LexOptions {
  bool trim_blocks = true;    // drop the first newline after a block tag
  bool lstrip_blocks = true;  // drop spaces and tabs before a block tag at the start of a line
};

Result<std::vector<Token>> lex(std::string_view source, LexOptions options = {});

}  // namespace kiln::jinja
