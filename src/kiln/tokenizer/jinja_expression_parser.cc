#include "kiln/tokenizer/jinja_expression_parser.h"

#include <memory>

namespace kiln::jinja {
namespace {

class ExpressionParser {
 public:
  explicit ExpressionParser(TokenCursor& c) : c_(c) {}

  Result<ExprPtr> condition_expr(bool allow_condition);

 private:
  Result<ExprPtr> or_expr();
  Result<ExprPtr> and_expr();
  Result<ExprPtr> not_expr();
  Result<ExprPtr> compare_expr();
  Result<ExprPtr> binary_expr(int level);
  Result<ExprPtr> unary_expr(bool with_filter);
  Result<ExprPtr> primary();
  Result<ExprPtr> sequence(const char* close, Expr::Kind kind);
  Result<ExprPtr> dict();
  Result<ExprPtr> postfix(ExprPtr node);
  Result<ExprPtr> subscript(ExprPtr node);
  Result<ExprPtr> filters_and_tests(ExprPtr node);
  Status call_args(Expr& call);

  ExprPtr make(Expr::Kind kind, std::string name = "") const {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->name = std::move(name);
    e->line = c_.peek().line;
    return e;
  }
  ExprPtr make2(Expr::Kind kind, std::string name, ExprPtr a, ExprPtr b) const {
    ExprPtr e = make(kind, std::move(name));
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return e;
  }

  TokenCursor& c_;
};

Result<ExprPtr> ExpressionParser::condition_expr(bool allow_condition) {
  KILN_ASSIGN_OR_RETURN(ExprPtr expr, or_expr());
  while (allow_condition && c_.skip_name("if")) {
    ExprPtr cond = make(Expr::Kind::kCondition);
    KILN_ASSIGN_OR_RETURN(ExprPtr test, or_expr());
    ExprPtr otherwise;
    if (c_.skip_name("else")) {
      KILN_ASSIGN_OR_RETURN(otherwise, condition_expr(true));
    }
    cond->args.push_back(std::move(expr));
    cond->args.push_back(std::move(test));
    cond->args.push_back(std::move(otherwise));
    expr = std::move(cond);
  }
  return expr;
}

Result<ExprPtr> ExpressionParser::or_expr() {
  KILN_ASSIGN_OR_RETURN(ExprPtr left, and_expr());
  while (c_.skip_name("or")) {
    KILN_ASSIGN_OR_RETURN(ExprPtr right, and_expr());
    left = make2(Expr::Kind::kOr, "or", std::move(left), std::move(right));
  }
  return left;
}

Result<ExprPtr> ExpressionParser::and_expr() {
  KILN_ASSIGN_OR_RETURN(ExprPtr left, not_expr());
  while (c_.skip_name("and")) {
    KILN_ASSIGN_OR_RETURN(ExprPtr right, not_expr());
    left = make2(Expr::Kind::kAnd, "and", std::move(left), std::move(right));
  }
  return left;
}

Result<ExprPtr> ExpressionParser::not_expr() {
  if (c_.skip_name("not")) {
    KILN_ASSIGN_OR_RETURN(ExprPtr operand, not_expr());
    ExprPtr e = make(Expr::Kind::kUnary, "not");
    e->args.push_back(std::move(operand));
    return e;
  }
  return compare_expr();
}

Result<ExprPtr> ExpressionParser::compare_expr() {
  KILN_ASSIGN_OR_RETURN(ExprPtr left, binary_expr(0));
  while (true) {
    std::string op;
    const Token& t = c_.peek();
    if (t.kind == Token::Kind::kOp &&
        (t.text == "==" || t.text == "!=" || t.text == "<" || t.text == "<=" || t.text == ">" || t.text == ">=")) {
      op = c_.next().text;
    } else if (c_.is_name("in")) {
      ++c_.pos;
      op = "in";
    } else if (c_.is_name("not") && c_.is_name("in", 1)) {
      c_.pos += 2;
      op = "not in";
    } else {
      return left;
    }
    KILN_ASSIGN_OR_RETURN(ExprPtr right, binary_expr(0));
    left = make2(Expr::Kind::kBinary, op, std::move(left), std::move(right));
  }
}

// Levels: 0 "+ -", 1 "~", 2 "* / // %", 3 "**"; below that the unary operators.
Result<ExprPtr> ExpressionParser::binary_expr(int level) {
  static const std::vector<std::vector<std::string>> kLevels = {{"+", "-"}, {"~"}, {"*", "/", "//", "%"}, {"**"}};
  if (level == static_cast<int>(kLevels.size())) return unary_expr(true);
  KILN_ASSIGN_OR_RETURN(ExprPtr left, binary_expr(level + 1));
  while (true) {
    std::string op;
    for (const std::string& o : kLevels[level]) {
      if (c_.is_op(o)) op = o;
    }
    if (op.empty()) return left;
    ++c_.pos;
    KILN_ASSIGN_OR_RETURN(ExprPtr right, binary_expr(level + 1));
    left = make2(Expr::Kind::kBinary, op, std::move(left), std::move(right));
  }
}

Result<ExprPtr> ExpressionParser::unary_expr(bool with_filter) {
  ExprPtr node;
  if (c_.is_op("-") || c_.is_op("+")) {
    node = make(Expr::Kind::kUnary, c_.next().text);
    KILN_ASSIGN_OR_RETURN(ExprPtr operand, unary_expr(false));
    node->args.push_back(std::move(operand));
  } else {
    KILN_ASSIGN_OR_RETURN(node, primary());
  }
  KILN_ASSIGN_OR_RETURN(node, postfix(std::move(node)));
  if (with_filter) return filters_and_tests(std::move(node));
  return node;
}

Result<ExprPtr> ExpressionParser::primary() {
  const Token& t = c_.peek();
  ExprPtr e = make(Expr::Kind::kLiteral);
  switch (t.kind) {
    case Token::Kind::kName: {
      const std::string& n = c_.next().text;
      if (n == "true" || n == "True") e->literal = Value(true);
      else if (n == "false" || n == "False") e->literal = Value(false);
      else if (n == "none" || n == "None") e->literal = Value::none();
      else e = make(Expr::Kind::kName, n);
      return e;
    }
    case Token::Kind::kString: {
      std::string s;
      while (c_.peek().kind == Token::Kind::kString) s += c_.next().text;  // "a" "b" is "ab"
      e->literal = Value(std::move(s));
      return e;
    }
    case Token::Kind::kInt: e->literal = Value(c_.next().int_value); return e;
    case Token::Kind::kFloat: e->literal = Value(c_.next().float_value); return e;
    case Token::Kind::kOp:
      if (c_.skip_op("(")) return sequence(")", Expr::Kind::kTuple);
      if (c_.skip_op("[")) return sequence("]", Expr::Kind::kList);
      if (c_.skip_op("{")) return dict();
      break;
    default: break;
  }
  return c_.error("unexpected '" + t.text + "' in an expression");
}

// After "(" or "[": items up to close. "(x)" is x itself; "(x,)" and "()" are tuples.
Result<ExprPtr> ExpressionParser::sequence(const char* close, Expr::Kind kind) {
  ExprPtr e = make(kind);
  bool trailing_comma = false;
  while (!c_.skip_op(close)) {
    KILN_ASSIGN_OR_RETURN(ExprPtr item, condition_expr(true));
    e->args.push_back(std::move(item));
    trailing_comma = c_.skip_op(",");
    if (!trailing_comma && !c_.is_op(close)) return c_.error(std::string("expected ',' or '") + close + "'");
  }
  if (kind == Expr::Kind::kTuple && e->args.size() == 1 && !trailing_comma) return std::move(e->args[0]);
  return e;
}

Result<ExprPtr> ExpressionParser::dict() {
  ExprPtr e = make(Expr::Kind::kDict);
  while (!c_.skip_op("}")) {
    KILN_ASSIGN_OR_RETURN(ExprPtr key, condition_expr(true));
    KILN_RETURN_IF_ERROR(c_.expect_op(":"));
    KILN_ASSIGN_OR_RETURN(ExprPtr value, condition_expr(true));
    e->args.push_back(std::move(key));
    e->args.push_back(std::move(value));
    if (!c_.skip_op(",") && !c_.is_op("}")) return c_.error("expected ',' or '}' in a dict");
  }
  return e;
}

Result<ExprPtr> ExpressionParser::postfix(ExprPtr node) {
  while (true) {
    if (c_.skip_op(".")) {
      const Token& t = c_.next();
      if (t.kind == Token::Kind::kInt) {  // x.0 is x[0]
        ExprPtr index = make(Expr::Kind::kLiteral);
        index->literal = Value(t.int_value);
        node = make2(Expr::Kind::kIndex, "", std::move(node), std::move(index));
      } else if (t.kind == Token::Kind::kName) {
        ExprPtr attr = make(Expr::Kind::kAttr, t.text);
        attr->args.push_back(std::move(node));
        node = std::move(attr);
      } else {
        return c_.error("expected an attribute name after '.'");
      }
    } else if (c_.skip_op("[")) {
      KILN_ASSIGN_OR_RETURN(node, subscript(std::move(node)));
    } else if (c_.is_op("(")) {
      ExprPtr call = make(Expr::Kind::kCall);
      ++c_.pos;
      call->args.push_back(std::move(node));
      KILN_RETURN_IF_ERROR(call_args(*call));
      node = std::move(call);
    } else {
      return node;
    }
  }
}

// After "[": an index or a slice [start:stop:step], any part may be left out.
Result<ExprPtr> ExpressionParser::subscript(ExprPtr node) {
  ExprPtr parts[3];
  int colons = 0;
  while (!c_.skip_op("]")) {
    if (c_.skip_op(":")) {
      if (++colons > 2) return c_.error("too many ':' in a slice");
      continue;
    }
    if (parts[colons] != nullptr) return c_.error("expected ':' or ']'");
    KILN_ASSIGN_OR_RETURN(parts[colons], condition_expr(true));
  }
  if (colons == 0) {
    if (parts[0] == nullptr) return c_.error("empty subscript");
    return make2(Expr::Kind::kIndex, "", std::move(node), std::move(parts[0]));
  }
  ExprPtr slice = make(Expr::Kind::kSlice);
  slice->args.push_back(std::move(node));
  for (ExprPtr& p : parts) slice->args.push_back(std::move(p));
  return slice;
}

Result<ExprPtr> ExpressionParser::filters_and_tests(ExprPtr node) {
  while (true) {
    if (c_.skip_op("|")) {
      KILN_ASSIGN_OR_RETURN(std::string name, c_.expect_name());
      ExprPtr f = make(Expr::Kind::kFilter, name);
      f->args.push_back(std::move(node));
      if (c_.skip_op("(")) KILN_RETURN_IF_ERROR(call_args(*f));
      node = std::move(f);
    } else if (c_.skip_name("is")) {
      const bool negated = c_.skip_name("not");
      KILN_ASSIGN_OR_RETURN(std::string name, c_.expect_name());
      ExprPtr test = make(Expr::Kind::kTest, name);
      test->negated = negated;
      test->args.push_back(std::move(node));
      const Token& t = c_.peek();
      if (c_.skip_op("(")) {
        KILN_RETURN_IF_ERROR(call_args(*test));
      } else if ((t.kind == Token::Kind::kString || t.kind == Token::Kind::kInt ||
                  t.kind == Token::Kind::kFloat ||
                  (t.kind == Token::Kind::kName && t.text != "else" && t.text != "or" &&
                   t.text != "and" && t.text != "if"))) {
        KILN_ASSIGN_OR_RETURN(ExprPtr arg, primary());  // "is equalto 3", "is sameas false"
        KILN_ASSIGN_OR_RETURN(arg, postfix(std::move(arg)));
        test->args.push_back(std::move(arg));
      }
      node = std::move(test);
    } else {
      return node;
    }
  }
}

// After "(": positional and keyword arguments up to ")".
Status ExpressionParser::call_args(Expr& call) {
  while (!c_.skip_op(")")) {
    if (c_.peek().kind == Token::Kind::kName && c_.is_op("=", 1)) {
      std::string name = c_.next().text;
      ++c_.pos;
      KILN_ASSIGN_OR_RETURN(ExprPtr value, condition_expr(true));
      call.kwargs.emplace_back(std::move(name), std::move(value));
    } else {
      if (!call.kwargs.empty()) return c_.error("a positional argument follows a keyword argument");
      KILN_ASSIGN_OR_RETURN(ExprPtr value, condition_expr(true));
      call.args.push_back(std::move(value));
    }
    if (!c_.skip_op(",") && !c_.is_op(")")) return c_.error("expected ',' or ')' in a call");
  }
  return ok_status();
}

}  // namespace

Result<ExprPtr> parse_expression(TokenCursor& cursor, bool allow_condition) {
  return ExpressionParser(cursor).condition_expr(allow_condition);
}

}  // namespace kiln::jinja
