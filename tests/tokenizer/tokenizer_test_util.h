// Helpers for the tokenizer tests: where the shared test data lives, file reading, and loading a
// tokenizer from a path with the failure turned into a test failure.
#pragma once
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "kiln/io/gguf.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::testing {

inline std::string shared_dir() { return KILN_SHARED_DIR; }
inline std::string source_dir() { return KILN_SOURCE_DIR; }
inline std::string vocab_dir() { return shared_dir() + "/testdata/vocab"; }
inline std::string tokenizer_data_dir() { return source_dir() + "/tests/data/tokenizer"; }

// SmolLM2's own vocabulary (the default model); "" when it is not on this machine.
inline std::string smollm2_gguf() {
  const char* home = std::getenv("HOME");
  for (const std::string& p : {std::string(home ? home : "") + "/.cache/kiln/models/SmolLM2-135M-Instruct.Q4_1.gguf",
                               std::string("/root/.cache/kiln/models/SmolLM2-135M-Instruct.Q4_1.gguf")}) {
    if (std::filesystem::exists(p)) return p;
  }
  return "";
}

inline bool read_file(const std::string& path, std::string* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  std::ostringstream ss;
  ss << f.rdbuf();
  *out = ss.str();
  return true;
}

inline std::vector<std::string> split(const std::string& s, const std::string& sep) {
  std::vector<std::string> parts;
  size_t pos = 0;
  while (true) {
    const size_t next = s.find(sep, pos);
    if (next == std::string::npos) {
      parts.push_back(s.substr(pos));
      return parts;
    }
    parts.push_back(s.substr(pos, next - pos));
    pos = next + sep.size();
  }
}

inline std::vector<int32_t> parse_ids(const std::string& line) {
  std::vector<int32_t> ids;
  std::istringstream ss(line);
  int64_t v = 0;
  while (ss >> v) ids.push_back(static_cast<int32_t>(v));
  return ids;
}

inline std::string ids_to_string(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ' ';
    s += std::to_string(ids[i]);
  }
  return s;
}

// Index of the first difference, or -1 when equal.
inline int64_t first_difference(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  const size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    if (a[i] != b[i]) return static_cast<int64_t>(i);
  }
  return a.size() == b.size() ? -1 : static_cast<int64_t>(n);
}

// Loads a tokenizer from a .gguf or an HF directory; null (with the status in *error) on failure.
inline std::unique_ptr<Tokenizer> load(const std::string& path, std::string* error) {
  auto t = load_tokenizer(path);
  if (!t.ok()) {
    *error = t.status().to_string();
    return nullptr;
  }
  return std::move(t).value();
}

}  // namespace kiln::testing
