#include "kiln/tokenizer/jinja_parser.h"

#include "kiln/tokenizer/jinja_expression_parser.h"
#include "kiln/tokenizer/jinja_token_cursor.h"

#include <algorithm>
#include <initializer_list>
#include <memory>

namespace kiln::jinja {
namespace {

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) { c_.tokens = std::move(tokens); }

  Result<Template> run();

 private:
  using Ends = std::initializer_list<std::string_view>;

  // Statements up to (not including) a {% name %} with name in ends; *end gets that name.
  Result<Body> parse_body(Ends ends, std::string* end);
  Result<StmtPtr> parse_block();
  Result<StmtPtr> parse_if();
  Result<StmtPtr> parse_for();
  Result<StmtPtr> parse_set();
  Result<StmtPtr> parse_macro();
  Result<StmtPtr> parse_scope(const std::string& tag);
  // Consumes "{% end... %}" after parse_body stopped at it.
  Status close_block() {
    c_.pos += 2;
    return expect_block_end();
  }

  Status expect_block_end() { return c_.expect(Token::Kind::kBlockEnd, "%}"); }
  Result<ExprPtr> expression(bool allow_condition = true) { return parse_expression(c_, allow_condition); }

  TokenCursor c_;
};

Result<Template> Parser::run() {
  Template tmpl;
  std::string end;
  KILN_ASSIGN_OR_RETURN(tmpl.body, parse_body({}, &end));
  if (c_.peek().kind != Token::Kind::kEnd) return c_.error("unexpected '{% " + end + " %}'");
  return tmpl;
}

Result<Body> Parser::parse_body(Ends ends, std::string* end) {
  Body body;
  while (c_.peek().kind != Token::Kind::kEnd) {
    const Token& tok = c_.peek();
    if (tok.kind == Token::Kind::kText) {
      auto s = std::make_unique<Stmt>();
      s->kind = Stmt::Kind::kText;
      s->text = c_.next().text;
      body.push_back(std::move(s));
    } else if (tok.kind == Token::Kind::kVarBegin) {
      ++c_.pos;
      auto s = std::make_unique<Stmt>();
      s->kind = Stmt::Kind::kOutput;
      s->line = tok.line;
      KILN_ASSIGN_OR_RETURN(s->expr, expression());
      if (c_.peek().kind != Token::Kind::kVarEnd) return c_.error("expected '}}', found '" + c_.peek().text + "'");
      ++c_.pos;
      body.push_back(std::move(s));
    } else if (tok.kind == Token::Kind::kBlockBegin) {
      const Token& name = c_.peek(1);
      if (name.kind == Token::Kind::kName && std::find(ends.begin(), ends.end(), name.text) != ends.end()) {
        *end = name.text;
        return body;
      }
      ++c_.pos;
      KILN_ASSIGN_OR_RETURN(StmtPtr s, parse_block());
      body.push_back(std::move(s));
    } else {
      return c_.error("unexpected '" + tok.text + "'");
    }
  }
  if (ends.size() != 0) return c_.error("missing {% " + std::string(*ends.begin()) + " %}... before the end of the template");
  return body;
}

Result<StmtPtr> Parser::parse_block() {
  KILN_ASSIGN_OR_RETURN(std::string tag, c_.expect_name());
  if (tag == "if") return parse_if();
  if (tag == "for") return parse_for();
  if (tag == "set") return parse_set();
  if (tag == "macro") return parse_macro();
  if (tag == "generation" || tag == "filter") return parse_scope(tag);
  if (tag == "break" || tag == "continue") {
    auto s = std::make_unique<Stmt>();
    s->kind = tag == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
    KILN_RETURN_IF_ERROR(expect_block_end());
    return s;
  }
  return unimplemented("template line " + std::to_string(c_.peek().line) + ": the {% " + tag +
                       " %} tag is not supported (supported: if, for, set, macro, break, continue, "
                       "generation, filter)");
}

Result<StmtPtr> Parser::parse_if() {
  auto s = std::make_unique<Stmt>();
  s->kind = Stmt::Kind::kIf;
  std::string end = "elif";
  while (end == "elif") {
    KILN_ASSIGN_OR_RETURN(ExprPtr cond, expression());
    KILN_RETURN_IF_ERROR(expect_block_end());
    KILN_ASSIGN_OR_RETURN(Body body, parse_body({"endif", "elif", "else"}, &end));
    s->branches.emplace_back(std::move(cond), std::move(body));
    c_.pos += 2;  // "{%" and the tag name
  }
  if (end == "else") {
    KILN_RETURN_IF_ERROR(expect_block_end());
    KILN_ASSIGN_OR_RETURN(s->else_body, parse_body({"endif"}, &end));
    c_.pos += 2;
  }
  KILN_RETURN_IF_ERROR(expect_block_end());
  return s;
}

Result<StmtPtr> Parser::parse_for() {
  auto s = std::make_unique<Stmt>();
  s->kind = Stmt::Kind::kFor;
  s->line = c_.peek().line;
  c_.skip_op("(");
  do {
    KILN_ASSIGN_OR_RETURN(std::string target, c_.expect_name());
    s->targets.push_back(target);
  } while (c_.skip_op(","));
  c_.skip_op(")");
  if (!c_.skip_name("in")) return c_.error("expected 'in' in for loop");
  KILN_ASSIGN_OR_RETURN(s->expr, expression(/*allow_condition=*/false));
  if (c_.skip_name("if")) {
    KILN_ASSIGN_OR_RETURN(s->condition, expression());
  }
  if (c_.is_name("recursive")) return unimplemented("template line " + std::to_string(c_.peek().line) + ": recursive loops are not supported");
  KILN_RETURN_IF_ERROR(expect_block_end());
  std::string end;
  KILN_ASSIGN_OR_RETURN(s->body, parse_body({"endfor", "else"}, &end));
  c_.pos += 2;
  if (end == "else") {
    KILN_RETURN_IF_ERROR(expect_block_end());
    KILN_ASSIGN_OR_RETURN(s->else_body, parse_body({"endfor"}, &end));
    c_.pos += 2;
  }
  KILN_RETURN_IF_ERROR(expect_block_end());
  return s;
}

Result<StmtPtr> Parser::parse_set() {
  auto s = std::make_unique<Stmt>();
  s->kind = Stmt::Kind::kSet;
  s->line = c_.peek().line;
  KILN_ASSIGN_OR_RETURN(std::string target, c_.expect_name());
  s->targets.push_back(target);
  if (c_.skip_op(".")) {
    KILN_ASSIGN_OR_RETURN(s->attr, c_.expect_name());
  } else {
    while (c_.skip_op(",")) {
      KILN_ASSIGN_OR_RETURN(std::string more, c_.expect_name());
      s->targets.push_back(more);
    }
  }
  if (c_.skip_op("=")) {
    KILN_ASSIGN_OR_RETURN(s->expr, expression());
    if (c_.is_op(",")) {  // set a, b = x, y: the right side is a tuple
      auto tuple = std::make_unique<Expr>();
      tuple->kind = Expr::Kind::kTuple;
      tuple->args.push_back(std::move(s->expr));
      while (c_.skip_op(",")) {
        KILN_ASSIGN_OR_RETURN(ExprPtr item, expression());
        tuple->args.push_back(std::move(item));
      }
      s->expr = std::move(tuple);
    }
    KILN_RETURN_IF_ERROR(expect_block_end());
    return s;
  }
  if (!s->attr.empty() || s->targets.size() != 1) return c_.error("a block set takes one plain name");
  KILN_RETURN_IF_ERROR(expect_block_end());
  s->kind = Stmt::Kind::kSetBlock;
  std::string end;
  KILN_ASSIGN_OR_RETURN(s->body, parse_body({"endset"}, &end));
  KILN_RETURN_IF_ERROR(close_block());
  return s;
}

Result<StmtPtr> Parser::parse_macro() {
  auto s = std::make_unique<Stmt>();
  s->kind = Stmt::Kind::kMacro;
  KILN_ASSIGN_OR_RETURN(s->name, c_.expect_name());
  KILN_RETURN_IF_ERROR(c_.expect_op("("));
  while (!c_.skip_op(")")) {
    KILN_ASSIGN_OR_RETURN(std::string param, c_.expect_name());
    ExprPtr fallback;
    if (c_.skip_op("=")) {
      KILN_ASSIGN_OR_RETURN(fallback, expression());
    }
    s->params.emplace_back(param, std::move(fallback));
    if (!c_.is_op(")")) KILN_RETURN_IF_ERROR(c_.expect_op(","));
  }
  KILN_RETURN_IF_ERROR(expect_block_end());
  std::string end;
  KILN_ASSIGN_OR_RETURN(s->body, parse_body({"endmacro"}, &end));
  KILN_RETURN_IF_ERROR(close_block());
  return s;
}

Result<StmtPtr> Parser::parse_scope(const std::string& tag) {
  auto s = std::make_unique<Stmt>();
  s->kind = Stmt::Kind::kScope;
  if (tag == "filter") {
    KILN_ASSIGN_OR_RETURN(s->name, c_.expect_name());
  }
  KILN_RETURN_IF_ERROR(expect_block_end());
  std::string end;
  const std::string end_tag = "end" + tag;
  KILN_ASSIGN_OR_RETURN(s->body, parse_body({end_tag}, &end));
  KILN_RETURN_IF_ERROR(close_block());
  return s;
}

}  // namespace

Result<Template> parse(std::string_view source, LexOptions options) {
  KILN_ASSIGN_OR_RETURN(std::vector<Token> tokens, lex(source, options));
  return Parser(std::move(tokens)).run();
}

}  // namespace kiln::jinja
