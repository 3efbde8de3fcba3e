// jinja::Interpreter: renders a parsed template. Scoping follows Jinja2: a for loop body has its
// own scope (so templates carry state out of loops with namespace()), if blocks do not; macros
// see the top-level names and their parameters. Errors (raise_exception, an unknown filter, a
// type error) end the render with a Status naming the template line.
#pragma once
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kiln/tokenizer/jinja_ast.h"

namespace kiln::jinja {

class Interpreter {
 public:
  // globals: the names the template starts with (messages, bos_token, ...). The builtin
  // functions (raise_exception, namespace, range, dict, strftime_now) are added.
  Interpreter(const Template& tmpl, const std::vector<std::pair<std::string, Value>>& globals);

  Result<std::string> render();

  // Used by the builtins: call a filter or a test by name on a value.
  Result<Value> call_filter(const std::string& name, const Value& input, CallArgs& args, int line);
  Result<bool> call_test(const std::string& name, const Value& input, CallArgs& args, int line);

 private:
  enum class Flow { kNormal, kBreak, kContinue };
  using Scope = std::unordered_map<std::string, Value>;

  Result<Flow> exec_body(const Body& body);
  Result<Flow> exec(const Stmt& s);
  Result<Flow> exec_if(const Stmt& s);
  Result<Flow> exec_for(const Stmt& s);
  Status exec_set(const Stmt& s);
  Result<std::string> capture(const Body& body);
  Value make_macro(const Stmt& s);

  Result<Value> eval(const Expr& e);
  Result<Value> eval_attr(const Expr& e);
  Result<Value> eval_index(const Expr& e);
  Result<Value> eval_slice(const Expr& e);
  Result<Value> eval_call(const Expr& e);
  Result<Value> eval_unary(const Expr& e);
  Result<Value> eval_binary(const Expr& e);
  Result<CallArgs> eval_args(const Expr& e, size_t first);

  Value lookup(const std::string& name) const;
  void assign(const std::string& name, Value v) { scopes_.back()[name] = std::move(v); }
  Status error(int line, const std::string& what) const {
    return invalid_argument("template line " + std::to_string(line) + ": " + what);
  }

  const Template& tmpl_;
  std::vector<Scope> scopes_;
  std::string* out_ = nullptr;
  int depth_ = 0;  // macro call depth, bounded so a recursive macro cannot blow the stack
};

// Convenience: parse (with transformers' trim_blocks and lstrip_blocks) and render.
Result<std::string> render_template(const std::string& source,
                                    const std::vector<std::pair<std::string, Value>>& globals);

}  // namespace kiln::jinja
