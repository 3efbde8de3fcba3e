#include "kiln/tokenizer/byte_level_alphabet.h"

#include "kiln/tokenizer/utf8.h"

namespace kiln {

const ByteLevelAlphabet& ByteLevelAlphabet::get() {
  static const ByteLevelAlphabet alphabet;
  return alphabet;
}

ByteLevelAlphabet::ByteLevelAlphabet() {
  byte_of_.fill(-1);
  auto printable = [](int b) {
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  };
  int next = 0;
  for (int b = 0; b < 256; ++b) {
    const char32_t cp = printable(b) ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next++);
    char_of_[b] = cp;
    byte_of_[cp] = static_cast<int16_t>(b);
    utf8::append(utf8_of_[b], cp);
  }
}

bool ByteLevelAlphabet::to_bytes(std::string_view mapped, std::string* out) const {
  out->clear();
  size_t pos = 0;
  while (pos < mapped.size()) {
    size_t n = 0;
    const char32_t cp = utf8::decode(mapped, pos, &n);
    if (cp >= byte_of_.size() || byte_of_[cp] < 0) return false;
    out->push_back(static_cast<char>(byte_of_[cp]));
    pos += n;
  }
  return true;
}

std::string ByteLevelAlphabet::to_mapped(std::string_view bytes) const {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char c : bytes) out += utf8_of_[static_cast<uint8_t>(c)];
  return out;
}

}  // namespace kiln
