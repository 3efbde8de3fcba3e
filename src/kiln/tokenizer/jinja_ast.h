// The syntax tree of a Jinja template: expressions (Expr) and statements (Stmt). Built by
// jinja::parse, walked by jinja::Interpreter.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kiln/tokenizer/jinja_value.h"

namespace kiln::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,   // literal
    kName,      // name
    kList,      // [args...]
    kTuple,     // (args...) - evaluated as a list
    kDict,      // {args[2i]: args[2i+1]}
    kAttr,      // args[0].name
    kIndex,     // args[0][args[1]]
    kSlice,     // args[0][args[1]:args[2]:args[3]] (null parts are omitted bounds)
    kCall,      // args[0](args[1..], kwargs)
    kFilter,    // args[0] | name(args[1..], kwargs)
    kTest,      // args[0] is [not] name(args[1..])
    kUnary,     // name ("-", "+", "not") args[0]
    kBinary,    // args[0] name args[1]: arithmetic, ~, comparisons, in, not in
    kAnd,
    kOr,
    kCondition,  // args[0] if args[1] else args[2] (args[2] may be null)
  };
  Kind kind = Kind::kLiteral;
  Value literal;
  std::string name;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  bool negated = false;  // kTest: "is not"
  int line = 0;
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Stmt {
  enum class Kind {
    kText,      // text
    kOutput,    // {{ expr }}
    kIf,        // branches (condition, body); else_body
    kFor,       // {% for targets in expr [if condition] %} body {% else %} else_body
    kSet,       // {% set targets = expr %} / {% set target.attr = expr %}
    kSetBlock,  // {% set target %} body {% endset %}
    kMacro,     // {% macro name(params) %} body
    kBreak,
    kContinue,
    kScope,     // a block rendered in place ({% generation %}, {% filter %} with name)
  };
  Kind kind = Kind::kText;
  std::string text;
  ExprPtr expr;
  ExprPtr condition;
  std::vector<std::string> targets;
  std::string attr;  // kSet on a namespace attribute
  std::string name;  // kMacro name; kScope filter name ("" for none)
  std::vector<std::pair<std::string, ExprPtr>> params;  // kMacro parameters and defaults
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body;
  Body else_body;
  int line = 0;
};

struct Template {
  Body body;
};

}  // namespace kiln::jinja
