#include "kiln/tokenizer/jinja_interpreter.h"

#include <cmath>

#include "kiln/tokenizer/jinja_builtins.h"
#include "kiln/tokenizer/jinja_parser.h"

namespace kiln::jinja {
namespace {

constexpr int kMaxMacroDepth = 64;

Value make_loop(size_t index, size_t length, const List& items) {
  auto d = make_dict();
  d->set("index0", Value(static_cast<int64_t>(index)));
  d->set("index", Value(static_cast<int64_t>(index + 1)));
  d->set("revindex0", Value(static_cast<int64_t>(length - index - 1)));
  d->set("revindex", Value(static_cast<int64_t>(length - index)));
  d->set("first", Value(index == 0));
  d->set("last", Value(index + 1 == length));
  d->set("length", Value(static_cast<int64_t>(length)));
  d->set("depth", Value(1));
  d->set("depth0", Value(0));
  d->set("previtem", index > 0 ? items[index - 1] : Value::undefined("previtem"));
  d->set("nextitem", index + 1 < length ? items[index + 1] : Value::undefined("nextitem"));
  d->set("cycle", Value::function("cycle", [index](CallArgs& a) -> Result<Value> {
    if (a.positional.empty()) return invalid_argument("loop.cycle needs at least one value");
    return a.positional[index % a.positional.size()];
  }));
  return Value(d);
}

}  // namespace

Interpreter::Interpreter(const Template& tmpl, const std::vector<std::pair<std::string, Value>>& globals)
    : tmpl_(tmpl) {
  scopes_.emplace_back();
  for (auto& [name, v] : builtin_globals()) scopes_[0][name] = v;
  for (const auto& [name, v] : globals) scopes_[0][name] = v;
}

Result<std::string> Interpreter::render() {
  std::string out;
  out_ = &out;
  KILN_ASSIGN_OR_RETURN(Flow flow, exec_body(tmpl_.body));
  (void)flow;
  return out;
}

Value Interpreter::lookup(const std::string& name) const {
  for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
    auto found = it->find(name);
    if (found != it->end()) return found->second;
  }
  return Value::undefined(name);
}

Result<Interpreter::Flow> Interpreter::exec_body(const Body& body) {
  for (const StmtPtr& s : body) {
    KILN_ASSIGN_OR_RETURN(Flow flow, exec(*s));
    if (flow != Flow::kNormal) return flow;
  }
  return Flow::kNormal;
}

Result<Interpreter::Flow> Interpreter::exec(const Stmt& s) {
  switch (s.kind) {
    case Stmt::Kind::kText: *out_ += s.text; return Flow::kNormal;
    case Stmt::Kind::kOutput: {
      KILN_ASSIGN_OR_RETURN(Value v, eval(*s.expr));
      *out_ += v.str();
      return Flow::kNormal;
    }
    case Stmt::Kind::kIf: return exec_if(s);
    case Stmt::Kind::kFor: return exec_for(s);
    case Stmt::Kind::kSet: KILN_RETURN_IF_ERROR(exec_set(s)); return Flow::kNormal;
    case Stmt::Kind::kSetBlock: {
      KILN_ASSIGN_OR_RETURN(std::string text, capture(s.body));
      assign(s.targets[0], Value(std::move(text)));
      return Flow::kNormal;
    }
    case Stmt::Kind::kMacro: assign(s.name, make_macro(s)); return Flow::kNormal;
    case Stmt::Kind::kBreak: return Flow::kBreak;
    case Stmt::Kind::kContinue: return Flow::kContinue;
    case Stmt::Kind::kScope: {
      if (s.name.empty()) return exec_body(s.body);
      KILN_ASSIGN_OR_RETURN(std::string text, capture(s.body));
      CallArgs none;
      KILN_ASSIGN_OR_RETURN(Value v, call_filter(s.name, Value(std::move(text)), none, s.line));
      *out_ += v.str();
      return Flow::kNormal;
    }
  }
  return Flow::kNormal;
}

Result<Interpreter::Flow> Interpreter::exec_if(const Stmt& s) {
  for (const auto& [cond, body] : s.branches) {
    KILN_ASSIGN_OR_RETURN(Value v, eval(*cond));
    if (v.truthy()) return exec_body(body);
  }
  return exec_body(s.else_body);
}

Result<Interpreter::Flow> Interpreter::exec_for(const Stmt& s) {
  KILN_ASSIGN_OR_RETURN(Value iterable, eval(*s.expr));
  KILN_ASSIGN_OR_RETURN(List all, iterate(iterable));
  auto bind = [&](const Value& item) -> Status {
    if (s.targets.size() == 1) {
      assign(s.targets[0], item);
      return ok_status();
    }
    KILN_ASSIGN_OR_RETURN(List parts, iterate(item));
    if (parts.size() != s.targets.size()) {
      return error(s.line, "cannot unpack " + std::to_string(parts.size()) + " values into " +
                               std::to_string(s.targets.size()) + " loop variables");
    }
    for (size_t i = 0; i < parts.size(); ++i) assign(s.targets[i], parts[i]);
    return ok_status();
  };
  scopes_.emplace_back();
  List items;  // after the loop filter: loop.length counts only these
  for (const Value& item : all) {
    if (s.condition == nullptr) {
      items.push_back(item);
      continue;
    }
    KILN_RETURN_IF_ERROR(bind(item));
    KILN_ASSIGN_OR_RETURN(Value keep, eval(*s.condition));
    if (keep.truthy()) items.push_back(item);
  }
  for (size_t i = 0; i < items.size(); ++i) {
    scopes_.back().clear();
    KILN_RETURN_IF_ERROR(bind(items[i]));
    assign("loop", make_loop(i, items.size(), items));
    KILN_ASSIGN_OR_RETURN(Flow flow, exec_body(s.body));
    if (flow == Flow::kBreak) break;
  }
  scopes_.pop_back();
  if (items.empty()) return exec_body(s.else_body);
  return Flow::kNormal;
}

Status Interpreter::exec_set(const Stmt& s) {
  KILN_ASSIGN_OR_RETURN(Value v, eval(*s.expr));
  if (!s.attr.empty()) {
    Value target = lookup(s.targets[0]);
    if (!target.is_dict() || !target.as_dict().is_namespace) {
      return error(s.line, "cannot assign attribute '" + s.attr + "' of '" + s.targets[0] + "': not a namespace");
    }
    target.mutable_dict().set(s.attr, std::move(v));
    return ok_status();
  }
  if (s.targets.size() == 1) {
    assign(s.targets[0], std::move(v));
    return ok_status();
  }
  KILN_ASSIGN_OR_RETURN(List parts, iterate(v));
  if (parts.size() != s.targets.size()) return error(s.line, "wrong number of values to unpack in set");
  for (size_t i = 0; i < parts.size(); ++i) assign(s.targets[i], parts[i]);
  return ok_status();
}

Result<std::string> Interpreter::capture(const Body& body) {
  std::string text;
  std::string* saved = out_;
  out_ = &text;
  auto flow = exec_body(body);
  out_ = saved;
  if (!flow.ok()) return flow.status();
  return text;
}

Value Interpreter::make_macro(const Stmt& s) {
  const Stmt* macro = &s;
  return Value::function(s.name, [this, macro](CallArgs& args) -> Result<Value> {
    if (depth_ >= kMaxMacroDepth) return error(macro->line, "macro recursion is too deep");
    Scope locals;
    for (size_t i = 0; i < macro->params.size(); ++i) {
      const auto& [param, fallback] = macro->params[i];
      Value v = args.get(param, i, Value::undefined(param));
      if (v.is_undefined() && fallback != nullptr) {
        KILN_ASSIGN_OR_RETURN(v, eval(*fallback));
      }
      locals[param] = std::move(v);
    }
    // A macro sees the top-level names and its parameters, not its caller's locals.
    std::vector<Scope> saved = std::move(scopes_);
    scopes_ = {saved[0], std::move(locals)};
    ++depth_;
    auto text = capture(macro->body);
    --depth_;
    saved[0] = std::move(scopes_[0]);
    scopes_ = std::move(saved);
    if (!text.ok()) return text.status();
    return Value(std::move(text).value());
  });
}

Result<Value> Interpreter::call_filter(const std::string& name, const Value& input, CallArgs& args, int line) {
  auto r = apply_filter(*this, name, input, args);
  if (!r.ok()) return r.status().with_context("template line " + std::to_string(line));
  return r;
}

Result<bool> Interpreter::call_test(const std::string& name, const Value& input, CallArgs& args, int line) {
  auto r = apply_test(*this, name, input, args);
  if (!r.ok()) return r.status().with_context("template line " + std::to_string(line));
  return r;
}

Result<std::string> render_template(const std::string& source,
                                    const std::vector<std::pair<std::string, Value>>& globals) {
  KILN_ASSIGN_OR_RETURN(Template tmpl, parse(source));
  Interpreter interp(tmpl, globals);
  return interp.render();
}

}  // namespace kiln::jinja
