// Interpreter, second half: evaluating expressions (Python semantics for operators, indexing and
// slicing; Jinja2's undefined values).
#include <algorithm>
#include <cmath>

#include "kiln/tokenizer/jinja_builtins.h"
#include "kiln/tokenizer/jinja_interpreter.h"

namespace kiln::jinja {
namespace {

bool normalize_index(int64_t& i, size_t size) {
  if (i < 0) i += static_cast<int64_t>(size);
  return i >= 0 && i < static_cast<int64_t>(size);
}

std::vector<size_t> slice_indices(size_t n, const Value& start, const Value& stop, const Value& step_v) {
  const int64_t len = static_cast<int64_t>(n);
  const int64_t step = step_v.is_number() ? step_v.as_int() : 1;
  std::vector<size_t> out;
  if (step == 0) return out;
  auto clamp = [&](const Value& v, int64_t fallback) {
    if (!v.is_number()) return fallback;
    int64_t i = v.as_int();
    if (i < 0) i += len;
    return step > 0 ? std::clamp<int64_t>(i, 0, len) : std::clamp<int64_t>(i, -1, len - 1);
  };
  const int64_t b = clamp(start, step > 0 ? 0 : len - 1);
  const int64_t e = clamp(stop, step > 0 ? len : -1);
  for (int64_t i = b; step > 0 ? i < e : i > e; i += step) out.push_back(static_cast<size_t>(i));
  return out;
}

Result<Value> arithmetic(const std::string& op, const Value& a, const Value& b) {
  const bool nums = (a.is_number() || a.is_bool()) && (b.is_number() || b.is_bool());
  const bool floats = a.is_float() || b.is_float();
  if (nums) {
    if (op == "+") return floats ? Value(a.as_float() + b.as_float()) : Value(a.as_int() + b.as_int());
    if (op == "-") return floats ? Value(a.as_float() - b.as_float()) : Value(a.as_int() - b.as_int());
    if (op == "*") return floats ? Value(a.as_float() * b.as_float()) : Value(a.as_int() * b.as_int());
    if (op == "**") {
      if (!floats && b.as_int() >= 0) {
        int64_t r = 1;
        for (int64_t i = 0; i < b.as_int(); ++i) r *= a.as_int();
        return Value(r);
      }
      return Value(std::pow(a.as_float(), b.as_float()));
    }
    if (b.as_float() == 0.0) return invalid_argument("division by zero");
    if (op == "/") return Value(a.as_float() / b.as_float());
    if (op == "//") {
      if (floats) return Value(std::floor(a.as_float() / b.as_float()));
      const int64_t q = a.as_int() / b.as_int();
      return Value((a.as_int() % b.as_int() != 0 && ((a.as_int() < 0) != (b.as_int() < 0))) ? q - 1 : q);
    }
    if (op == "%") {
      if (floats) {
        const double r = std::fmod(a.as_float(), b.as_float());
        return Value(r != 0 && ((r < 0) != (b.as_float() < 0)) ? r + b.as_float() : r);
      }
      const int64_t r = a.as_int() % b.as_int();
      return Value(r != 0 && ((r < 0) != (b.as_int() < 0)) ? r + b.as_int() : r);
    }
  }
  if (op == "+" && a.is_string() && b.is_string()) return Value(a.as_string() + b.as_string());
  if (op == "+" && a.is_list() && b.is_list()) {
    List l = a.as_list();
    l.insert(l.end(), b.as_list().begin(), b.as_list().end());
    return Value(std::move(l));
  }
  if (op == "*" && (a.is_string() || a.is_list()) && b.is_int()) {
    if (a.is_string()) {
      std::string s;
      for (int64_t i = 0; i < b.as_int(); ++i) s += a.as_string();
      return Value(std::move(s));
    }
    List l;
    for (int64_t i = 0; i < b.as_int(); ++i) l.insert(l.end(), a.as_list().begin(), a.as_list().end());
    return Value(std::move(l));
  }
  if (a.is_undefined() || b.is_undefined()) {
    const Value& u = a.is_undefined() ? a : b;
    return invalid_argument("'" + u.as_string() + "' is undefined");
  }
  return invalid_argument("unsupported operand type(s) for " + op + ": '" + a.type_name() + "' and '" +
                          b.type_name() + "'");
}

}  // namespace

Result<Value> Interpreter::eval(const Expr& e) {
  switch (e.kind) {
    case Expr::Kind::kLiteral: return e.literal;
    case Expr::Kind::kName: return lookup(e.name);
    case Expr::Kind::kList:
    case Expr::Kind::kTuple: {
      List items;
      for (const ExprPtr& a : e.args) {
        KILN_ASSIGN_OR_RETURN(Value v, eval(*a));
        items.push_back(std::move(v));
      }
      return Value(std::move(items));
    }
    case Expr::Kind::kDict: {
      auto d = make_dict();
      for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
        KILN_ASSIGN_OR_RETURN(Value k, eval(*e.args[i]));
        KILN_ASSIGN_OR_RETURN(Value v, eval(*e.args[i + 1]));
        d->set(k.str(), std::move(v));
      }
      return Value(d);
    }
    case Expr::Kind::kAttr: return eval_attr(e);
    case Expr::Kind::kIndex: return eval_index(e);
    case Expr::Kind::kSlice: return eval_slice(e);
    case Expr::Kind::kCall: return eval_call(e);
    case Expr::Kind::kFilter: {
      KILN_ASSIGN_OR_RETURN(Value input, eval(*e.args[0]));
      KILN_ASSIGN_OR_RETURN(CallArgs args, eval_args(e, 1));
      return call_filter(e.name, input, args, e.line);
    }
    case Expr::Kind::kTest: {
      KILN_ASSIGN_OR_RETURN(Value input, eval(*e.args[0]));
      KILN_ASSIGN_OR_RETURN(CallArgs args, eval_args(e, 1));
      KILN_ASSIGN_OR_RETURN(bool r, call_test(e.name, input, args, e.line));
      return Value(r != e.negated);
    }
    case Expr::Kind::kUnary: return eval_unary(e);
    case Expr::Kind::kBinary: return eval_binary(e);
    case Expr::Kind::kAnd:
    case Expr::Kind::kOr: {
      KILN_ASSIGN_OR_RETURN(Value left, eval(*e.args[0]));
      // Python returns the deciding operand itself, not a bool.
      if (left.truthy() == (e.kind == Expr::Kind::kOr)) return left;
      return eval(*e.args[1]);
    }
    case Expr::Kind::kCondition: {
      KILN_ASSIGN_OR_RETURN(Value cond, eval(*e.args[1]));
      if (cond.truthy()) return eval(*e.args[0]);
      if (e.args[2] == nullptr) return Value::undefined();
      return eval(*e.args[2]);
    }
  }
  return error(e.line, "unknown expression");
}

Result<Value> Interpreter::eval_attr(const Expr& e) {
  KILN_ASSIGN_OR_RETURN(Value obj, eval(*e.args[0]));
  if (obj.is_undefined()) return error(e.line, "'" + obj.as_string() + "' is undefined");
  if (obj.is_dict()) {
    if (const Value* v = obj.as_dict().find(e.name)) return *v;
  }
  Value method = bound_method(obj, e.name);
  if (!method.is_undefined()) return method;
  return Value::undefined(e.name);
}

Result<Value> Interpreter::eval_index(const Expr& e) {
  KILN_ASSIGN_OR_RETURN(Value obj, eval(*e.args[0]));
  KILN_ASSIGN_OR_RETURN(Value key, eval(*e.args[1]));
  if (obj.is_undefined()) return error(e.line, "'" + obj.as_string() + "' is undefined");
  if (obj.is_dict()) {
    if (const Value* v = obj.as_dict().find(key.str())) return *v;
    return Value::undefined(key.str());
  }
  if ((obj.is_list() || obj.is_string()) && (key.is_int() || key.is_bool())) {
    int64_t i = key.as_int();
    if (obj.is_list()) {
      if (!normalize_index(i, obj.as_list().size())) return Value::undefined("index");
      return obj.as_list()[i];
    }
    const std::vector<std::string> cps = code_points(obj.as_string());
    if (!normalize_index(i, cps.size())) return Value::undefined("index");
    return Value(cps[i]);
  }
  if (key.is_string()) {
    Value method = bound_method(obj, key.as_string());
    if (!method.is_undefined()) return method;
    return Value::undefined(key.as_string());
  }
  return error(e.line, std::string("cannot index a ") + obj.type_name() + " with a " + key.type_name());
}

Result<Value> Interpreter::eval_slice(const Expr& e) {
  KILN_ASSIGN_OR_RETURN(Value obj, eval(*e.args[0]));
  Value parts[3];
  for (int i = 0; i < 3; ++i) {
    if (e.args[i + 1] != nullptr) {
      KILN_ASSIGN_OR_RETURN(parts[i], eval(*e.args[i + 1]));
    }
  }
  if (obj.is_list()) {
    List out;
    for (size_t i : slice_indices(obj.as_list().size(), parts[0], parts[1], parts[2])) out.push_back(obj.as_list()[i]);
    return Value(std::move(out));
  }
  if (obj.is_string()) {
    const std::vector<std::string> cps = code_points(obj.as_string());
    std::string out;
    for (size_t i : slice_indices(cps.size(), parts[0], parts[1], parts[2])) out += cps[i];
    return Value(std::move(out));
  }
  return error(e.line, std::string("cannot slice a ") + obj.type_name());
}

Result<CallArgs> Interpreter::eval_args(const Expr& e, size_t first) {
  CallArgs args;
  for (size_t i = first; i < e.args.size(); ++i) {
    KILN_ASSIGN_OR_RETURN(Value v, eval(*e.args[i]));
    args.positional.push_back(std::move(v));
  }
  for (const auto& [name, expr] : e.kwargs) {
    KILN_ASSIGN_OR_RETURN(Value v, eval(*expr));
    args.keyword.emplace_back(name, std::move(v));
  }
  return args;
}

Result<Value> Interpreter::eval_call(const Expr& e) {
  KILN_ASSIGN_OR_RETURN(Value callee, eval(*e.args[0]));
  if (!callee.is_function()) {
    const std::string what = callee.is_undefined() ? "'" + callee.as_string() + "' is undefined"
                                                   : std::string("a ") + callee.type_name() + " is not callable";
    return error(e.line, what);
  }
  KILN_ASSIGN_OR_RETURN(CallArgs args, eval_args(e, 1));
  auto r = callee.as_function()(args);
  if (!r.ok()) return r.status().with_context("template line " + std::to_string(e.line));
  return r;
}

Result<Value> Interpreter::eval_unary(const Expr& e) {
  KILN_ASSIGN_OR_RETURN(Value v, eval(*e.args[0]));
  if (e.name == "not") return Value(!v.truthy());
  if (!v.is_number() && !v.is_bool()) return error(e.line, "bad operand type for unary " + e.name + ": '" + v.type_name() + "'");
  if (e.name == "+") return v.is_float() ? Value(v.as_float()) : Value(v.as_int());
  return v.is_float() ? Value(-v.as_float()) : Value(-v.as_int());
}

Result<Value> Interpreter::eval_binary(const Expr& e) {
  KILN_ASSIGN_OR_RETURN(Value a, eval(*e.args[0]));
  KILN_ASSIGN_OR_RETURN(Value b, eval(*e.args[1]));
  const std::string& op = e.name;
  if (op == "~") return Value(a.str() + b.str());
  if (op == "==") return Value(equals(a, b));
  if (op == "!=") return Value(!equals(a, b));
  if (op == "in" || op == "not in") {
    auto r = contains(b, a);
    if (!r.ok()) return error(e.line, r.status().message());
    return Value(*r == (op == "in"));
  }
  if (op == "<" || op == ">" || op == "<=" || op == ">=") {
    const bool swap = op == ">" || op == "<=";
    auto lt = less_than(swap ? b : a, swap ? a : b);
    if (!lt.ok()) return error(e.line, lt.status().message());
    return Value(op == "<" || op == ">" ? *lt : !*lt);
  }
  auto r = arithmetic(op, a, b);
  if (!r.ok()) return error(e.line, r.status().message());
  return r;
}

}  // namespace kiln::jinja
