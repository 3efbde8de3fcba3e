// The GPT-2 byte-level alphabet: every byte 0..255 maps to one printable code point (printable
// Latin-1 bytes to themselves, the rest to U+0100..U+0143), so byte-level BPE vocabularies are
// written as text ("Ġhello" is " hello").
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace kiln {

class ByteLevelAlphabet {
 public:
  static const ByteLevelAlphabet& get();

  char32_t char_of(uint8_t byte) const { return char_of_[byte]; }
  // The UTF-8 of char_of(byte).
  const std::string& utf8_of(uint8_t byte) const { return utf8_of_[byte]; }
  // Raw bytes of a byte-level string ("Ġhi" -> " hi"); false if a character is outside the
  // alphabet (the caller keeps the text as it is, which is what added tokens need).
  bool to_bytes(std::string_view mapped, std::string* out) const;
  // Byte-level text of raw bytes (" hi" -> "Ġhi").
  std::string to_mapped(std::string_view bytes) const;

 private:
  ByteLevelAlphabet();
  std::array<char32_t, 256> char_of_{};
  std::array<std::string, 256> utf8_of_;
  std::array<int16_t, 0x144> byte_of_{};  // code point -> byte, -1 when not in the alphabet
};

}  // namespace kiln
