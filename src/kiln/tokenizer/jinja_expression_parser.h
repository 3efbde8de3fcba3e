// jinja::parse_expression: one expression from the token cursor, with Jinja2's precedence
// (lowest first): x if c else y; or; and; not; comparisons and in; + -; ~; * / // %; **;
// unary - +; then primaries with .attr, [index], [a:b:c], (call), | filter and "is" tests.
#pragma once
#include "kiln/tokenizer/jinja_ast.h"
#include "kiln/tokenizer/jinja_token_cursor.h"

namespace kiln::jinja {

// allow_condition false: stop before "if" (a for loop's filter is not a conditional expression).
Result<ExprPtr> parse_expression(TokenCursor& cursor, bool allow_condition = true);

}  // namespace kiln::jinja
