#include "kiln/tokenizer/jinja_text.h"

#include <cctype>

#include "kiln/tokenizer/utf8.h"

namespace kiln::jinja {
namespace {

// Python's str.isspace() set.
bool is_py_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Byte spans [begin, end) of each code point.
struct Span {
  size_t begin, end;
  char32_t cp;
};
std::vector<Span> spans(const std::string& s) {
  std::vector<Span> out;
  for (size_t pos = 0; pos < s.size();) {
    size_t n = 0;
    const char32_t cp = utf8::decode(s, pos, &n);
    out.push_back({pos, pos + n, cp});
    pos += n;
  }
  return out;
}

template <typename Pred>
std::string strip_if(const std::string& s, bool left, bool right, Pred pred) {
  const std::vector<Span> sp = spans(s);
  size_t b = 0, e = sp.size();
  while (left && b < e && pred(sp[b].cp)) ++b;
  while (right && e > b && pred(sp[e - 1].cp)) --e;
  if (b == e) return "";
  return s.substr(sp[b].begin, sp[e - 1].end - sp[b].begin);
}

bool is_ascii_letter(unsigned char c) { return std::isalpha(c) != 0; }

}  // namespace

std::string strip_space(const std::string& s, bool left, bool right) {
  return strip_if(s, left, right, is_py_space);
}

std::string strip_chars(const std::string& s, const std::string& chars, bool left, bool right) {
  std::vector<char32_t> set;
  for (const Span& sp : spans(chars)) set.push_back(sp.cp);
  return strip_if(s, left, right, [&](char32_t c) {
    for (char32_t x : set) if (x == c) return true;
    return false;
  });
}

std::vector<std::string> split_python(const std::string& s, const std::string* sep, int64_t maxsplit) {
  std::vector<std::string> out;
  if (sep != nullptr && !sep->empty()) {
    size_t pos = 0;
    while (maxsplit < 0 || static_cast<int64_t>(out.size()) < maxsplit) {
      const size_t next = s.find(*sep, pos);
      if (next == std::string::npos) break;
      out.push_back(s.substr(pos, next - pos));
      pos = next + sep->size();
    }
    out.push_back(s.substr(pos));
    return out;
  }
  const std::vector<Span> sp = spans(s);
  size_t i = 0;
  while (i < sp.size()) {
    while (i < sp.size() && is_py_space(sp[i].cp)) ++i;
    if (i == sp.size()) break;
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
      out.push_back(strip_space(s.substr(sp[i].begin), false, true));
      break;
    }
    const size_t b = i;
    while (i < sp.size() && !is_py_space(sp[i].cp)) ++i;
    out.push_back(s.substr(sp[b].begin, sp[i - 1].end - sp[b].begin));
  }
  return out;
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\n' || s[i] == '\r') {
      out.push_back(s.substr(start, i - start));
      if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
      start = i + 1;
    }
  }
  if (start < s.size()) out.push_back(s.substr(start));
  return out;
}

std::string replace_all(const std::string& s, const std::string& from, const std::string& to, int64_t count) {
  if (from.empty()) return s;
  std::string out;
  size_t pos = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    const size_t next = s.find(from, pos);
    if (next == std::string::npos) break;
    out += s.substr(pos, next - pos) + to;
    pos = next + from.size();
    ++done;
  }
  return out + s.substr(pos);
}

int64_t count_occurrences(const std::string& s, const std::string& sub) {
  if (sub.empty()) return static_cast<int64_t>(spans(s).size()) + 1;
  int64_t n = 0;
  for (size_t pos = s.find(sub); pos != std::string::npos; pos = s.find(sub, pos + sub.size())) ++n;
  return n;
}

std::string to_upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string to_lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string capitalize(const std::string& s) {
  std::string out = to_lower(s);
  if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}

std::string python_title(const std::string& s) {
  std::string out = s;
  bool prev_cased = false;
  for (char& c : out) {
    const auto u = static_cast<unsigned char>(c);
    if (is_ascii_letter(u)) {
      c = static_cast<char>(prev_cased ? std::tolower(u) : std::toupper(u));
      prev_cased = true;
    } else {
      prev_cased = u >= 0x80;  // treat non-ASCII as letters: no case change, but they join words
    }
  }
  return out;
}

std::string jinja_title(const std::string& s) {
  // Words start after runs of - white space ( { [ <; each word: first character upper, rest lower.
  std::string out;
  bool word_start = true;
  for (const char c : s) {
    const bool delim = c == '-' || c == '(' || c == '{' || c == '[' || c == '<' ||
                       std::isspace(static_cast<unsigned char>(c));
    if (delim) {
      out += c;
      word_start = true;
    } else {
      out += static_cast<char>(word_start ? std::toupper(static_cast<unsigned char>(c))
                                          : std::tolower(static_cast<unsigned char>(c)));
      word_start = false;
    }
  }
  return out;
}

bool ascii_class_test(const std::string& s, const std::string& method) {
  if (s.empty()) return false;
  bool any_cased = false;
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (method == "isdigit" && !std::isdigit(c)) return false;
    if (method == "isspace" && !std::isspace(c)) return false;
    if (method == "isalpha" && !std::isalpha(c)) return false;
    if (method == "isalnum" && !std::isalnum(c)) return false;
    if (method == "isupper" && std::islower(c)) return false;
    if (method == "islower" && std::isupper(c)) return false;
    any_cased = any_cased || std::isalpha(c);
  }
  return (method == "isupper" || method == "islower") ? any_cased : true;
}

}  // namespace kiln::jinja
