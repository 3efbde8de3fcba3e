#include "kiln/tokenizer/jinja_value.h"

#include <charconv>
#include <cmath>
#include <cstdio>

namespace kiln::jinja {
namespace {

void append_json_string(std::string& out, const std::string& s) {
  out += '"';
  for (const char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned char>(c));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

// Python repr of a str: single quotes unless the text has ' and no ".
std::string python_string_repr(const std::string& s) {
  const bool use_double = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char q = use_double ? '"' : '\'';
  std::string out(1, q);
  for (const char c : s) {
    if (c == q || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", static_cast<unsigned char>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  out += q;
  return out;
}

Status json_append(const Value& v, int indent, int depth, std::string& out) {
  std::string nl, nl_end;
  if (indent >= 0) {
    nl.assign(1, '\n').append(static_cast<size_t>(indent) * (depth + 1), ' ');
    nl_end.assign(1, '\n').append(static_cast<size_t>(indent) * depth, ' ');
  }
  const char* item_sep = indent >= 0 ? "," : ", ";
  switch (v.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kFunction:
      return invalid_argument(std::string("tojson: a value of type ") + v.type_name() + " is not JSON serializable");
    case Value::Kind::kNone: out += "null"; return ok_status();
    case Value::Kind::kBool: out += v.as_bool() ? "true" : "false"; return ok_status();
    case Value::Kind::kInt: out += std::to_string(v.as_int()); return ok_status();
    case Value::Kind::kFloat:
      out += std::isfinite(v.as_float()) ? format_float(v.as_float()) : (std::isnan(v.as_float()) ? "NaN" : (v.as_float() > 0 ? "Infinity" : "-Infinity"));
      return ok_status();
    case Value::Kind::kString: append_json_string(out, v.as_string()); return ok_status();
    case Value::Kind::kList: {
      if (v.as_list().empty()) { out += "[]"; return ok_status(); }
      out += "[" + nl;
      for (size_t i = 0; i < v.as_list().size(); ++i) {
        if (i) out += item_sep + nl;
        KILN_RETURN_IF_ERROR(json_append(v.as_list()[i], indent, depth + 1, out));
      }
      out += nl_end + "]";
      return ok_status();
    }
    case Value::Kind::kDict: {
      if (v.as_dict().items.empty()) { out += "{}"; return ok_status(); }
      out += "{" + nl;
      bool first = true;
      for (const auto& [k, item] : v.as_dict().items) {
        if (!first) out += item_sep + nl;
        first = false;
        append_json_string(out, k);
        out += ": ";
        KILN_RETURN_IF_ERROR(json_append(item, indent, depth + 1, out));
      }
      out += nl_end + "}";
      return ok_status();
    }
  }
  return ok_status();
}

}  // namespace

Value Value::function(std::string name, Function f) {
  Value v(Kind::kFunction);
  v.str_ = std::move(name);
  v.function_ = std::make_shared<Function>(std::move(f));
  return v;
}

std::string format_float(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  // The shortest digits that round-trip, laid out the way Python's repr does.
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
  std::string sci(buf, res.ptr);
  const size_t e = sci.find('e');
  std::string mantissa = sci.substr(0, e);
  const int exponent = std::stoi(sci.substr(e + 1));
  const bool negative = mantissa[0] == '-';
  if (negative) mantissa.erase(0, 1);
  std::string digits;
  for (const char c : mantissa) if (c != '.') digits += c;
  std::string out;
  if (exponent < -4 || exponent >= 16) {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char eb[16];
    std::snprintf(eb, sizeof(eb), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    out += eb;
  } else if (exponent < 0) {
    out.assign("0.").append(static_cast<size_t>(-exponent - 1), '0').append(digits);
  } else {
    const size_t int_len = static_cast<size_t>(exponent) + 1;
    if (digits.size() <= int_len) {
      out = digits + std::string(int_len - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, int_len) + "." + digits.substr(int_len);
    }
  }
  if (negative) out.insert(out.begin(), '-');
  return out;
}

bool Value::truthy() const {
  switch (kind_) {
    case Kind::kUndefined:
    case Kind::kNone: return false;
    case Kind::kBool:
    case Kind::kInt: return int_ != 0;
    case Kind::kFloat: return float_ != 0.0;
    case Kind::kString: return !str_.empty();
    case Kind::kList: return !list_->empty();
    case Kind::kDict: return !dict_->items.empty();
    case Kind::kFunction: return true;
  }
  return false;
}

std::string Value::str() const {
  switch (kind_) {
    case Kind::kUndefined: return "";
    case Kind::kString: return str_;
    default: return repr();
  }
}

std::string Value::repr() const {
  switch (kind_) {
    case Kind::kUndefined: return "Undefined";
    case Kind::kNone: return "None";
    case Kind::kBool: return int_ ? "True" : "False";
    case Kind::kInt: return std::to_string(int_);
    case Kind::kFloat: return format_float(float_);
    case Kind::kString: return python_string_repr(str_);
    case Kind::kList: {
      std::string out = "[";
      for (size_t i = 0; i < list_->size(); ++i) out += (i ? ", " : "") + (*list_)[i].repr();
      return out + "]";
    }
    case Kind::kDict: {
      std::string out = dict_->is_namespace ? "<Namespace {" : "{";
      bool first = true;
      for (const auto& [k, v] : dict_->items) {
        out += (first ? "" : ", ") + python_string_repr(k) + ": " + v.repr();
        first = false;
      }
      return out + (dict_->is_namespace ? "}>" : "}");
    }
    case Kind::kFunction: return "<function " + str_ + ">";
  }
  return "";
}

Result<std::string> Value::to_json(int indent) const {
  std::string out;
  KILN_RETURN_IF_ERROR(json_append(*this, indent, 0, out));
  return out;
}

const char* Value::type_name() const {
  switch (kind_) {
    case Kind::kUndefined: return "Undefined";
    case Kind::kNone: return "NoneType";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "str";
    case Kind::kList: return "list";
    case Kind::kDict: return "dict";
    case Kind::kFunction: return "function";
  }
  return "?";
}

const Value* Dict::find(const std::string& key) const {
  for (const auto& [k, v] : items) {
    if (k == key) return &v;
  }
  return nullptr;
}

void Dict::set(const std::string& key, Value v) {
  for (auto& [k, old] : items) {
    if (k == key) {
      old = std::move(v);
      return;
    }
  }
  items.emplace_back(key, std::move(v));
}

std::shared_ptr<Dict> make_dict() { return std::make_shared<Dict>(); }

Value CallArgs::get(const std::string& name, size_t index, Value fallback) const {
  for (const auto& [k, v] : keyword) {
    if (k == name) return v;
  }
  if (index < positional.size()) return positional[index];
  return fallback;
}

bool equals(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_float() == b.as_float();
    return a.as_int() == b.as_int();
  }
  if ((a.is_bool() && b.is_number()) || (a.is_number() && b.is_bool())) return a.as_float() == b.as_float();
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone: return true;
    case Value::Kind::kBool: return a.as_bool() == b.as_bool();
    case Value::Kind::kString: return a.as_string() == b.as_string();
    case Value::Kind::kList: {
      if (a.as_list().size() != b.as_list().size()) return false;
      for (size_t i = 0; i < a.as_list().size(); ++i) {
        if (!equals(a.as_list()[i], b.as_list()[i])) return false;
      }
      return true;
    }
    case Value::Kind::kDict: {
      const Dict& x = a.as_dict();
      const Dict& y = b.as_dict();
      if (x.items.size() != y.items.size()) return false;
      for (const auto& [k, v] : x.items) {
        const Value* other = y.find(k);
        if (other == nullptr || !equals(v, *other)) return false;
      }
      return true;
    }
    case Value::Kind::kFunction: return a.dict_ptr() == b.dict_ptr() && a.as_string() == b.as_string();
    default: return false;
  }
}

Result<bool> less_than(const Value& a, const Value& b) {
  const bool a_num = a.is_number() || a.is_bool();
  const bool b_num = b.is_number() || b.is_bool();
  if (a_num && b_num) {
    if (a.is_float() || b.is_float()) return a.as_float() < b.as_float();
    return a.as_int() < b.as_int();
  }
  if (a.is_string() && b.is_string()) return a.as_string() < b.as_string();
  if (a.is_list() && b.is_list()) {
    const List& x = a.as_list();
    const List& y = b.as_list();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (equals(x[i], y[i])) continue;
      return less_than(x[i], y[i]);
    }
    return x.size() < y.size();
  }
  return invalid_argument(std::string("'<' is not supported between instances of '") + a.type_name() +
                          "' and '" + b.type_name() + "'");
}

}  // namespace kiln::jinja
