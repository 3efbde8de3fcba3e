// UTF-8 helpers for the tokenizers: decoding one code point, validation, and the lossy repair
// (each maximal invalid subpart becomes U+FFFD, as Rust's from_utf8_lossy and Hugging Face do).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace kiln::utf8 {

inline constexpr char32_t kReplacement = 0xFFFD;

// Length of the sequence a lead byte announces (1 for ASCII and for stray bytes).
inline int sequence_length(uint8_t lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return 4;
  return 1;
}

// Length of the well-formed sequence at s[pos], or 0 if it is invalid or truncated.
size_t valid_sequence_at(std::string_view s, size_t pos);

// Decodes the code point at s[pos] and its byte length; an invalid sequence gives U+FFFD and the
// length of its maximal invalid subpart (at least 1).
char32_t decode(std::string_view s, size_t pos, size_t* length);

void append(std::string& out, char32_t cp);

// Byte offset of the first invalid byte, or s.size() if s is valid UTF-8.
size_t first_invalid(std::string_view s);

// s with every maximal invalid subpart replaced by U+FFFD.
std::string repair(std::string_view s);

// Bytes at the end of s that begin a sequence which is still incomplete but could be completed
// by more bytes (0..3). A streaming decoder holds these back.
size_t incomplete_tail(std::string_view s);

}  // namespace kiln::utf8
