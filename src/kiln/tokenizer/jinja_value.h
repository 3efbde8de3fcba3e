// jinja::Value: the dynamic values a chat template computes with (Python semantics, as Jinja2
// runs on Python): undefined, none, bool, int, float, string, list, dict (insertion ordered),
// and callables (macros, builtins). Lists and dicts are shared, like Python references.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kiln/core/status.h"

namespace kiln::jinja {

class Value;
using List = std::vector<Value>;
struct Dict;
struct CallArgs;
using Function = std::function<Result<Value>(CallArgs&)>;

class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kFunction };

  Value() = default;  // undefined
  static Value undefined(std::string name = "") {
    Value v;
    v.str_ = std::move(name);
    return v;
  }
  static Value none() { return Value(Kind::kNone); }
  Value(bool b) : kind_(Kind::kBool), int_(b) {}                  // NOLINT
  Value(int v) : kind_(Kind::kInt), int_(v) {}                    // NOLINT
  Value(int64_t v) : kind_(Kind::kInt), int_(v) {}                // NOLINT
  Value(double v) : kind_(Kind::kFloat), float_(v) {}             // NOLINT
  Value(std::string s) : kind_(Kind::kString), str_(std::move(s)) {}  // NOLINT
  Value(const char* s) : kind_(Kind::kString), str_(s) {}             // NOLINT
  Value(List l) : kind_(Kind::kList), list_(std::make_shared<List>(std::move(l))) {}  // NOLINT
  Value(std::shared_ptr<Dict> d) : kind_(Kind::kDict), dict_(std::move(d)) {}         // NOLINT
  static Value function(std::string name, Function f);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  bool is_number() const { return kind_ == Kind::kInt || kind_ == Kind::kFloat; }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_function() const { return kind_ == Kind::kFunction; }

  bool as_bool() const { return int_ != 0; }
  int64_t as_int() const { return kind_ == Kind::kFloat ? static_cast<int64_t>(float_) : int_; }
  double as_float() const { return kind_ == Kind::kFloat ? float_ : static_cast<double>(int_); }
  const std::string& as_string() const { return str_; }  // also the name of an undefined
  const List& as_list() const { return *list_; }
  List& mutable_list() { return *list_; }
  const Dict& as_dict() const { return *dict_; }
  Dict& mutable_dict() { return *dict_; }
  const std::shared_ptr<Dict>& dict_ptr() const { return dict_; }
  const Function& as_function() const { return *function_; }

  // Python truthiness.
  bool truthy() const;
  // Python str(): what {{ value }} prints ("" for undefined, "None", "True", "[1, 'a']").
  std::string str() const;
  // Python repr() ("'a'" for strings).
  std::string repr() const;
  // JSON text as Python's json.dumps(ensure_ascii=False) writes it; indent < 0: one line.
  Result<std::string> to_json(int indent = -1) const;
  // The kind as Python names it, for error messages ("str", "list", "NoneType").
  const char* type_name() const;

 private:
  explicit Value(Kind k) : kind_(k) {}
  Kind kind_ = Kind::kUndefined;
  int64_t int_ = 0;
  double float_ = 0.0;
  std::string str_;
  std::shared_ptr<List> list_;
  std::shared_ptr<Dict> dict_;
  std::shared_ptr<Function> function_;
};

struct Dict {
  std::vector<std::pair<std::string, Value>> items;
  bool is_namespace = false;  // namespace(): attributes may be assigned with {% set ns.x = ... %}

  const Value* find(const std::string& key) const;
  void set(const std::string& key, Value v);
};
std::shared_ptr<Dict> make_dict();

// Arguments of a call: positional then keyword, as written.
struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;

  // The argument named name, else the positional one at index, else fallback.
  Value get(const std::string& name, size_t index, Value fallback = Value()) const;
};

// == and the orderings of Python (numbers compare across int/float; strings and lists by value).
bool equals(const Value& a, const Value& b);
Result<bool> less_than(const Value& a, const Value& b);

// Python float repr ("1.0", "0.1", "1e+16").
std::string format_float(double v);

}  // namespace kiln::jinja
