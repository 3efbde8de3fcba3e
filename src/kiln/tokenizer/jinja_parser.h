// jinja::parse: template source -> syntax tree, for the subset of Jinja2 that chat templates use:
// if/elif/else, for (with loop filters and else), set (plain, namespace attribute, block), macro,
// break/continue, generation; expressions with Jinja2's precedence, filters, tests, calls,
// subscripts and slices. Anything else is an error naming the line, never a silent skip.
#pragma once
#include <string_view>

#include "kiln/core/status.h"
#include "kiln/tokenizer/jinja_ast.h"
#include "kiln/tokenizer/jinja_lexer.h"

namespace kiln::jinja {

Result<Template> parse(std::string_view source, LexOptions options = {});

}  // namespace kiln::jinja
