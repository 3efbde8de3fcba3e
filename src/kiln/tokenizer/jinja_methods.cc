// The Python methods chat templates call on strings, dicts and lists, plus iteration and
// membership with Python's rules.
#include <algorithm>

#include "kiln/tokenizer/jinja_builtins.h"
#include "kiln/tokenizer/jinja_text.h"
#include "kiln/tokenizer/utf8.h"

namespace kiln::jinja {
namespace {

using Method = Result<Value> (*)(const Value& self, CallArgs& args);

Result<std::string> string_arg(const CallArgs& args, const std::string& name, size_t index, const char* method) {
  const Value v = args.get(name, index);
  if (!v.is_string()) return invalid_argument(std::string(method) + "() needs a string argument");
  return v.as_string();
}

Result<Value> str_strip_like(const Value& self, CallArgs& args, bool left, bool right) {
  const Value chars = args.get("chars", 0, Value::none());
  if (chars.is_string()) return Value(strip_chars(self.as_string(), chars.as_string(), left, right));
  return Value(strip_space(self.as_string(), left, right));
}

Result<Value> str_affix(const Value& self, CallArgs& args, bool prefix) {
  const Value arg = args.get("prefix", 0);
  List candidates = arg.is_list() ? arg.as_list() : List{arg};
  const std::string& s = self.as_string();
  for (const Value& c : candidates) {
    if (!c.is_string()) return invalid_argument("startswith/endswith needs strings");
    const std::string& a = c.as_string();
    if (prefix ? s.starts_with(a) : s.ends_with(a)) return Value(true);
  }
  return Value(false);
}

Result<Value> str_split(const Value& self, CallArgs& args) {
  const Value sep = args.get("sep", 0, Value::none());
  const int64_t maxsplit = args.get("maxsplit", 1, Value(-1)).as_int();
  List out;
  for (std::string& part : split_python(self.as_string(), sep.is_string() ? &sep.as_string() : nullptr, maxsplit)) {
    out.push_back(Value(std::move(part)));
  }
  return Value(std::move(out));
}

Result<Value> str_replace(const Value& self, CallArgs& args) {
  KILN_ASSIGN_OR_RETURN(std::string from, string_arg(args, "old", 0, "replace"));
  KILN_ASSIGN_OR_RETURN(std::string to, string_arg(args, "new", 1, "replace"));
  return Value(replace_all(self.as_string(), from, to, args.get("count", 2, Value(-1)).as_int()));
}

Result<Value> str_find(const Value& self, CallArgs& args, bool reverse) {
  KILN_ASSIGN_OR_RETURN(std::string sub, string_arg(args, "sub", 0, "find"));
  const size_t pos = reverse ? self.as_string().rfind(sub) : self.as_string().find(sub);
  if (pos == std::string::npos) return Value(-1);
  return Value(static_cast<int64_t>(code_points(self.as_string().substr(0, pos)).size()));
}

Result<Value> str_join(const Value& self, CallArgs& args) {
  KILN_ASSIGN_OR_RETURN(List items, iterate(args.get("iterable", 0)));
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (!items[i].is_string()) return invalid_argument("join() needs strings");
    out += (i ? self.as_string() : "") + items[i].as_string();
  }
  return Value(std::move(out));
}

Result<Value> str_method(const Value& self, const std::string& name, CallArgs& args) {
  const std::string& s = self.as_string();
  if (name == "strip") return str_strip_like(self, args, true, true);
  if (name == "lstrip") return str_strip_like(self, args, true, false);
  if (name == "rstrip") return str_strip_like(self, args, false, true);
  if (name == "startswith") return str_affix(self, args, true);
  if (name == "endswith") return str_affix(self, args, false);
  if (name == "split") return str_split(self, args);
  if (name == "replace") return str_replace(self, args);
  if (name == "find") return str_find(self, args, false);
  if (name == "rfind") return str_find(self, args, true);
  if (name == "join") return str_join(self, args);
  if (name == "upper") return Value(to_upper(s));
  if (name == "lower") return Value(to_lower(s));
  if (name == "title") return Value(python_title(s));
  if (name == "capitalize") return Value(capitalize(s));
  if (name == "count") {
    KILN_ASSIGN_OR_RETURN(std::string sub, string_arg(args, "sub", 0, "count"));
    return Value(count_occurrences(s, sub));
  }
  if (name == "splitlines") {
    List out;
    for (std::string& line : split_lines(s)) out.push_back(Value(std::move(line)));
    return Value(std::move(out));
  }
  if (name == "isdigit" || name == "isspace" || name == "isalpha" || name == "isalnum" ||
      name == "isupper" || name == "islower") {
    return Value(ascii_class_test(s, name));
  }
  return invalid_argument("str has no method '" + name + "'");
}

Result<Value> dict_method(const Value& self, const std::string& name, CallArgs& args) {
  const Dict& d = self.as_dict();
  if (name == "items" || name == "keys" || name == "values") {
    List out;
    for (const auto& [k, v] : d.items) {
      if (name == "items") out.push_back(Value(List{Value(k), v}));
      if (name == "keys") out.push_back(Value(k));
      if (name == "values") out.push_back(v);
    }
    return Value(std::move(out));
  }
  if (name == "get") {
    const Value* v = d.find(args.get("key", 0).str());
    return v != nullptr ? *v : args.get("default", 1, Value::none());
  }
  return invalid_argument("dict has no method '" + name + "'");
}

Result<Value> list_method(const Value& self, const std::string& name, CallArgs& args) {
  const List& l = self.as_list();
  const Value x = args.get("x", 0);
  if (name == "index") {
    for (size_t i = 0; i < l.size(); ++i) {
      if (equals(l[i], x)) return Value(static_cast<int64_t>(i));
    }
    return invalid_argument(x.repr() + " is not in list");
  }
  if (name == "count") {
    return Value(static_cast<int64_t>(std::count_if(l.begin(), l.end(), [&](const Value& v) { return equals(v, x); })));
  }
  // append/pop/... would mutate: transformers' sandbox forbids that too.
  return invalid_argument("list method '" + name + "' is not available in a chat template");
}

bool has_method(const Value& obj, const std::string& name) {
  static const char* kStr[] = {"strip", "lstrip", "rstrip", "startswith", "endswith", "split", "replace",
                               "find", "rfind", "join", "upper", "lower", "title", "capitalize", "count",
                               "splitlines", "isdigit", "isspace", "isalpha", "isalnum", "isupper", "islower"};
  static const char* kDict[] = {"items", "keys", "values", "get"};
  static const char* kList[] = {"index", "count", "append", "pop", "extend", "insert", "remove"};
  auto in = [&](auto& table) {
    return std::any_of(std::begin(table), std::end(table), [&](const char* m) { return name == m; });
  };
  if (obj.is_string()) return in(kStr);
  if (obj.is_dict()) return !obj.as_dict().is_namespace && in(kDict);
  if (obj.is_list()) return in(kList);
  return false;
}

}  // namespace

Value bound_method(const Value& obj, const std::string& name) {
  if (!has_method(obj, name)) return Value::undefined(name);
  return Value::function(name, [obj, name](CallArgs& args) -> Result<Value> {
    if (obj.is_string()) return str_method(obj, name, args);
    if (obj.is_dict()) return dict_method(obj, name, args);
    return list_method(obj, name, args);
  });
}

std::vector<std::string> code_points(const std::string& s) {
  std::vector<std::string> out;
  for (size_t pos = 0; pos < s.size();) {
    size_t n = 0;
    utf8::decode(s, pos, &n);
    out.push_back(s.substr(pos, n));
    pos += n;
  }
  return out;
}

Result<List> iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kUndefined: return List{};
    case Value::Kind::kList: return v.as_list();
    case Value::Kind::kDict: {
      List keys;
      for (const auto& [k, item] : v.as_dict().items) keys.push_back(Value(k));
      return keys;
    }
    case Value::Kind::kString: {
      List chars;
      for (std::string& c : code_points(v.as_string())) chars.push_back(Value(std::move(c)));
      return chars;
    }
    default: return invalid_argument(std::string("'") + v.type_name() + "' object is not iterable");
  }
}

Result<bool> contains(const Value& container, const Value& item) {
  if (container.is_string()) {
    if (!item.is_string()) return invalid_argument("'in <string>' requires a string as left operand");
    return container.as_string().find(item.as_string()) != std::string::npos;
  }
  if (container.is_dict()) return container.as_dict().find(item.str()) != nullptr;
  if (container.is_undefined()) return false;
  KILN_ASSIGN_OR_RETURN(List items, iterate(container));
  return std::any_of(items.begin(), items.end(), [&](const Value& v) { return equals(v, item); });
}

}  // namespace kiln::jinja
