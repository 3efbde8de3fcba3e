// Jinja2's filters, tests and global functions, as transformers' chat-template environment has
// them (its tojson is json.dumps with ensure_ascii=False; raise_exception; strftime_now).
#include <algorithm>
#include <cmath>
#include <ctime>

#include "kiln/tokenizer/jinja_builtins.h"
#include "kiln/tokenizer/jinja_interpreter.h"
#include "kiln/tokenizer/jinja_text.h"

namespace kiln::jinja {
namespace {

// x.attribute, where attribute may be dotted ("a.b") or an index ("0").
Value get_attribute(const Value& x, const std::string& attribute) {
  Value cur = x;
  size_t start = 0;
  while (start <= attribute.size()) {
    const size_t dot = attribute.find('.', start);
    const std::string part = attribute.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (cur.is_dict()) {
      const Value* v = cur.as_dict().find(part);
      cur = v != nullptr ? *v : Value::undefined(part);
    } else if (cur.is_list() && !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit)) {
      const size_t i = std::stoul(part);
      cur = i < cur.as_list().size() ? cur.as_list()[i] : Value::undefined(part);
    } else {
      return Value::undefined(part);
    }
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return cur;
}

int64_t length_of(const Value& v) {
  if (v.is_string()) return static_cast<int64_t>(code_points(v.as_string()).size());
  if (v.is_list()) return static_cast<int64_t>(v.as_list().size());
  if (v.is_dict()) return static_cast<int64_t>(v.as_dict().items.size());
  return 0;
}

// select/reject/selectattr/rejectattr: args are [attribute,] test name, test arguments...
Result<Value> select_items(Interpreter& interp, const Value& input, CallArgs& args, bool by_attr, bool keep) {
  KILN_ASSIGN_OR_RETURN(List items, iterate(input));
  size_t next = 0;
  std::string attribute;
  if (by_attr) {
    if (args.positional.empty()) return invalid_argument("selectattr/rejectattr need an attribute");
    attribute = args.positional[next++].str();
  }
  std::string test = next < args.positional.size() ? args.positional[next++].str() : "";
  CallArgs test_args;
  test_args.positional.assign(args.positional.begin() + static_cast<std::ptrdiff_t>(std::min(next, args.positional.size())),
                              args.positional.end());
  List out;
  for (const Value& item : items) {
    const Value subject = by_attr ? get_attribute(item, attribute) : item;
    bool pass = subject.truthy();
    if (!test.empty()) {
      KILN_ASSIGN_OR_RETURN(pass, interp.call_test(test, subject, test_args, 0));
    }
    if (pass == keep) out.push_back(item);
  }
  return Value(std::move(out));
}

Result<Value> map_items(Interpreter& interp, const Value& input, CallArgs& args) {
  KILN_ASSIGN_OR_RETURN(List items, iterate(input));
  const Value attribute = args.get("attribute", 99);
  List out;
  if (attribute.is_string()) {
    const Value fallback = args.get("default", 99);
    for (const Value& item : items) {
      Value v = get_attribute(item, attribute.as_string());
      out.push_back(v.is_undefined() && !fallback.is_undefined() ? fallback : v);
    }
    return Value(std::move(out));
  }
  if (args.positional.empty()) return invalid_argument("map needs a filter name or attribute=");
  const std::string filter = args.positional[0].str();
  CallArgs rest;
  rest.positional.assign(args.positional.begin() + 1, args.positional.end());
  rest.keyword = args.keyword;
  for (const Value& item : items) {
    KILN_ASSIGN_OR_RETURN(Value v, interp.call_filter(filter, item, rest, 0));
    out.push_back(std::move(v));
  }
  return Value(std::move(out));
}

Result<Value> join_items(const Value& input, CallArgs& args) {
  KILN_ASSIGN_OR_RETURN(List items, iterate(input));
  const std::string sep = args.get("d", 0, Value("")).str();
  const Value attribute = args.get("attribute", 1);
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    const Value v = attribute.is_string() ? get_attribute(items[i], attribute.as_string()) : items[i];
    out += (i ? sep : "") + v.str();
  }
  return Value(std::move(out));
}

Result<Value> sort_items(const Value& input, CallArgs& args) {
  KILN_ASSIGN_OR_RETURN(List items, iterate(input));
  const bool reverse = args.get("reverse", 0, Value(false)).truthy();
  const Value attribute = args.get("attribute", 2);
  Status failure;
  std::stable_sort(items.begin(), items.end(), [&](const Value& a, const Value& b) {
    const Value x = attribute.is_string() ? get_attribute(a, attribute.as_string()) : a;
    const Value y = attribute.is_string() ? get_attribute(b, attribute.as_string()) : b;
    auto lt = reverse ? less_than(y, x) : less_than(x, y);
    if (!lt.ok()) failure = lt.status();
    return lt.ok() && *lt;
  });
  KILN_RETURN_IF_ERROR(failure);
  return Value(std::move(items));
}

Result<Value> indent_text(const Value& input, CallArgs& args) {
  const Value width = args.get("width", 0, Value(4));
  const std::string pad = width.is_string() ? width.as_string() : std::string(static_cast<size_t>(width.as_int()), ' ');
  const bool first = args.get("first", 1, Value(false)).truthy();
  const bool blank = args.get("blank", 2, Value(false)).truthy();
  const std::string s = input.str();
  std::string out;
  size_t start = 0;
  bool is_first = true;
  while (start <= s.size()) {
    const size_t nl = s.find('\n', start);
    const std::string line = s.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
    const bool indent = is_first ? first : (blank || !strip_space(line, true, true).empty());
    out += (indent ? pad : "") + line;
    if (nl == std::string::npos) break;
    out += '\n';
    start = nl + 1;
    is_first = false;
  }
  return Value(std::move(out));
}

Result<Value> scalar_filter(const std::string& name, const Value& input, CallArgs& args) {
  if (name == "trim") {
    const Value chars = args.get("chars", 0, Value::none());
    return Value(chars.is_string() ? strip_chars(input.str(), chars.as_string(), true, true)
                                   : strip_space(input.str(), true, true));
  }
  if (name == "upper") return Value(to_upper(input.str()));
  if (name == "lower") return Value(to_lower(input.str()));
  if (name == "title") return Value(jinja_title(input.str()));
  if (name == "capitalize") return Value(capitalize(input.str()));
  if (name == "string") return Value(input.str());
  if (name == "safe") return input;
  if (name == "length" || name == "count") return Value(length_of(input));
  if (name == "replace") {
    return Value(replace_all(input.str(), args.get("old", 0).str(), args.get("new", 1).str(),
                             args.get("count", 2, Value(-1)).is_none() ? -1 : args.get("count", 2, Value(-1)).as_int()));
  }
  if (name == "abs") return input.is_float() ? Value(std::fabs(input.as_float())) : Value(static_cast<int64_t>(std::llabs(input.as_int())));
  if (name == "int") {
    if (input.is_number() || input.is_bool()) return Value(input.as_int());
    try {
      return Value(static_cast<int64_t>(std::stoll(strip_space(input.str(), true, true))));
    } catch (...) {
      return args.get("default", 0, Value(0));
    }
  }
  if (name == "float") {
    if (input.is_number() || input.is_bool()) return Value(input.as_float());
    try {
      return Value(std::stod(input.str()));
    } catch (...) {
      return args.get("default", 0, Value(0.0));
    }
  }
  if (name == "round") {
    const double scale = std::pow(10.0, static_cast<double>(args.get("precision", 0, Value(0)).as_int()));
    return Value(std::nearbyint(input.as_float() * scale) / scale);
  }
  if (name == "wordcount") return Value(static_cast<int64_t>(split_python(input.str(), nullptr, -1).size()));
  if (name == "escape" || name == "e") {
    std::string s = replace_all(input.str(), "&", "&amp;", -1);
    s = replace_all(replace_all(s, "<", "&lt;", -1), ">", "&gt;", -1);
    return Value(replace_all(replace_all(s, "\"", "&#34;", -1), "'", "&#39;", -1));
  }
  return unimplemented("the filter '" + name + "' is not supported");
}

// Filters over lists and dicts that need no interpreter: items, dictsort, reverse, unique, min,
// max, sum; anything else goes on to the scalar filters.
Result<Value> collection_filter(const std::string& name, const Value& input, CallArgs& args) {
  if (name == "items" || name == "dictsort") {
    if (!input.is_dict()) return invalid_argument(name + " needs a dict");
    List out;
    for (const auto& [k, v] : input.as_dict().items) out.push_back(Value(List{Value(k), v}));
    if (name == "dictsort") {
      std::stable_sort(out.begin(), out.end(), [](const Value& a, const Value& b) {
        return a.as_list()[0].as_string() < b.as_list()[0].as_string();
      });
    }
    return Value(std::move(out));
  }
  if (name == "reverse") {
    if (input.is_string()) {
      std::vector<std::string> cps = code_points(input.as_string());
      std::string out;
      for (auto it = cps.rbegin(); it != cps.rend(); ++it) out += *it;
      return Value(std::move(out));
    }
    KILN_ASSIGN_OR_RETURN(List items, iterate(input));
    std::reverse(items.begin(), items.end());
    return Value(std::move(items));
  }
  if (name == "unique") {
    KILN_ASSIGN_OR_RETURN(List items, iterate(input));
    List out;
    for (const Value& v : items) {
      if (std::none_of(out.begin(), out.end(), [&](const Value& o) { return equals(o, v); })) out.push_back(v);
    }
    return Value(std::move(out));
  }
  if (name == "min" || name == "max" || name == "sum") {
    KILN_ASSIGN_OR_RETURN(List items, iterate(input));
    if (name == "sum") {
      Value total = args.get("start", 1, Value(0));
      for (const Value& v : items) total = total.is_float() || v.is_float() ? Value(total.as_float() + v.as_float()) : Value(total.as_int() + v.as_int());
      return total;
    }
    if (items.empty()) return Value::undefined(name);
    Value best = items[0];
    for (const Value& v : items) {
      KILN_ASSIGN_OR_RETURN(bool lt, less_than(v, best));
      if (lt == (name == "min") && !equals(v, best)) best = v;
    }
    return best;
  }
  return scalar_filter(name, input, args);
}

}  // namespace

Result<Value> apply_filter(Interpreter& interp, const std::string& name, const Value& input, CallArgs& args) {
  if (name == "default" || name == "d") {
    const bool boolean = args.get("boolean", 1, Value(false)).truthy();
    const bool use_default = input.is_undefined() || (boolean && !input.truthy());
    return use_default ? args.get("default_value", 0, Value("")) : input;
  }
  if (name == "tojson") {
    const Value indent = args.get("indent", 0, Value::none());
    KILN_ASSIGN_OR_RETURN(std::string json, input.to_json(indent.is_number() ? static_cast<int>(indent.as_int()) : -1));
    return Value(std::move(json));
  }
  if (name == "first" || name == "last") {
    KILN_ASSIGN_OR_RETURN(List items, iterate(input));
    if (items.empty()) return Value::undefined(name);
    return name == "first" ? items.front() : items.back();
  }
  if (name == "list") return iterate(input).ok() ? Value(*iterate(input)) : Value(List{});
  if (name == "join") return join_items(input, args);
  if (name == "map") return map_items(interp, input, args);
  if (name == "select" || name == "reject") return select_items(interp, input, args, false, name == "select");
  if (name == "selectattr" || name == "rejectattr") {
    return select_items(interp, input, args, true, name == "selectattr");
  }
  if (name == "sort") return sort_items(input, args);
  if (name == "indent") return indent_text(input, args);
  return collection_filter(name, input, args);
}

Result<bool> apply_test(Interpreter&, const std::string& name, const Value& v, CallArgs& args) {
  const Value arg = args.get("value", 0);
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.as_bool();
  if (name == "false") return v.is_bool() && !v.as_bool();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_float();
  if (name == "number") return v.is_number();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_dict();
  if (name == "iterable") return v.is_list() || v.is_dict() || v.is_string();
  if (name == "sequence") return v.is_list() || v.is_dict() || v.is_string();
  if (name == "callable") return v.is_function();
  if (name == "equalto" || name == "eq" || name == "==" || name == "sameas") return equals(v, arg);
  if (name == "ne" || name == "!=") return !equals(v, arg);
  if (name == "lt" || name == "lessthan") return less_than(v, arg);
  if (name == "gt" || name == "greaterthan") return less_than(arg, v);
  if (name == "le") { KILN_ASSIGN_OR_RETURN(bool gt, less_than(arg, v)); return !gt; }
  if (name == "ge") { KILN_ASSIGN_OR_RETURN(bool lt, less_than(v, arg)); return !lt; }
  if (name == "odd") return v.is_int() && v.as_int() % 2 != 0;
  if (name == "even") return v.is_int() && v.as_int() % 2 == 0;
  if (name == "divisibleby") return arg.as_int() != 0 && v.as_int() % arg.as_int() == 0;
  if (name == "in") return contains(arg, v);
  if (name == "lower") return v.is_string() && v.as_string() == to_lower(v.as_string());
  if (name == "upper") return v.is_string() && v.as_string() == to_upper(v.as_string());
  return unimplemented("the test '" + name + "' is not supported");
}

std::vector<std::pair<std::string, Value>> builtin_globals() {
  std::vector<std::pair<std::string, Value>> g;
  g.emplace_back("raise_exception", Value::function("raise_exception", [](CallArgs& a) -> Result<Value> {
    return invalid_argument("the chat template raised an error: " + a.get("message", 0).str());
  }));
  g.emplace_back("namespace", Value::function("namespace", [](CallArgs& a) -> Result<Value> {
    auto d = make_dict();
    d->is_namespace = true;
    for (const Value& p : a.positional) {
      if (p.is_dict()) for (const auto& [k, v] : p.as_dict().items) d->set(k, v);
    }
    for (const auto& [k, v] : a.keyword) d->set(k, v);
    return Value(d);
  }));
  g.emplace_back("dict", Value::function("dict", [](CallArgs& a) -> Result<Value> {
    auto d = make_dict();
    for (const auto& [k, v] : a.keyword) d->set(k, v);
    return Value(d);
  }));
  g.emplace_back("range", Value::function("range", [](CallArgs& a) -> Result<Value> {
    const size_t n = a.positional.size();
    if (n == 0 || n > 3) return invalid_argument("range takes 1 to 3 arguments");
    const int64_t start = n >= 2 ? a.positional[0].as_int() : 0;
    const int64_t stop = n >= 2 ? a.positional[1].as_int() : a.positional[0].as_int();
    const int64_t step = n == 3 ? a.positional[2].as_int() : 1;
    if (step == 0) return invalid_argument("range() step must not be zero");
    List out;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
      if (out.size() > 100000) return invalid_argument("range is too long for a chat template");
      out.push_back(Value(i));
    }
    return Value(std::move(out));
  }));
  g.emplace_back("strftime_now", Value::function("strftime_now", [](CallArgs& a) -> Result<Value> {
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    char buf[256];
    const size_t n = std::strftime(buf, sizeof(buf), a.get("format", 0).str().c_str(), &tm);
    return Value(std::string(buf, n));
  }));
  return g;
}

}  // namespace kiln::jinja
