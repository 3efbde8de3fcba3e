// The Jinja2 builtins chat templates use: filters (trim, tojson, length, join, map, selectattr,
// default, ...), tests (defined, none, string, equalto, ...), the Python methods templates call
// on values (str.strip/startswith/split/..., dict.items/get/..., list.index/count), and the global
// functions (raise_exception, namespace, range, dict, strftime_now).
#pragma once
#include <string>

#include "kiln/tokenizer/jinja_value.h"

namespace kiln::jinja {

class Interpreter;

// Result<Value> with a Status naming the filter when the name is unknown.
Result<Value> apply_filter(Interpreter& interp, const std::string& name, const Value& input, CallArgs& args);
Result<bool> apply_test(Interpreter& interp, const std::string& name, const Value& input, CallArgs& args);
// obj.name as a bound method, or undefined when obj has no such method.
Value bound_method(const Value& obj, const std::string& name);
// The builtin global functions.
std::vector<std::pair<std::string, Value>> builtin_globals();

// Helpers shared with the interpreter.
Result<List> iterate(const Value& v);             // list items, dict keys, string characters
std::vector<std::string> code_points(const std::string& s);
Result<bool> contains(const Value& container, const Value& item);

}  // namespace kiln::jinja
