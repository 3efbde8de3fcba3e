// jinja text helpers: Python's str operations on UTF-8 (strip with str.isspace's white space,
// split, replace with a count, title/capitalize). Case mapping covers ASCII only; chat templates
// apply it to role names and keywords.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace kiln::jinja {

std::string strip_space(const std::string& s, bool left, bool right);
std::string strip_chars(const std::string& s, const std::string& chars, bool left, bool right);
// sep null: split on runs of white space, dropping empty parts (Python's str.split()).
std::vector<std::string> split_python(const std::string& s, const std::string* sep, int64_t maxsplit);
std::vector<std::string> split_lines(const std::string& s);
std::string replace_all(const std::string& s, const std::string& from, const std::string& to, int64_t count);
int64_t count_occurrences(const std::string& s, const std::string& sub);
std::string to_upper(std::string s);
std::string to_lower(std::string s);
std::string capitalize(const std::string& s);
std::string python_title(const std::string& s);  // str.title()
std::string jinja_title(const std::string& s);   // the title filter
bool ascii_class_test(const std::string& s, const std::string& method);  // isdigit, isspace, ...

}  // namespace kiln::jinja
