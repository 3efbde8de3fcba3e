// UTF-8 validation follows the Unicode "maximal subpart" rule (Table 3-7 well-formed sequences).
#include "kiln/tokenizer/utf8.h"

namespace kiln::utf8 {
namespace {

// The allowed range of the second byte for a given lead byte (Unicode Table 3-7).
bool second_byte_ok(uint8_t lead, uint8_t b) {
  if (lead == 0xE0) return b >= 0xA0 && b <= 0xBF;
  if (lead == 0xED) return b >= 0x80 && b <= 0x9F;
  if (lead == 0xF0) return b >= 0x90 && b <= 0xBF;
  if (lead == 0xF4) return b >= 0x80 && b <= 0x8F;
  return b >= 0x80 && b <= 0xBF;
}

bool lead_ok(uint8_t lead) { return lead < 0x80 || (lead >= 0xC2 && lead <= 0xF4); }

// Number of bytes of s[pos..] that form a valid prefix of a sequence (the maximal subpart), and
// whether the whole sequence is complete.
size_t valid_prefix(std::string_view s, size_t pos, bool* complete) {
  const auto lead = static_cast<uint8_t>(s[pos]);
  *complete = false;
  if (!lead_ok(lead)) return 0;
  const int n = sequence_length(lead);
  if (n == 1) {
    *complete = true;
    return 1;
  }
  size_t k = 1;
  for (; k < static_cast<size_t>(n); ++k) {
    if (pos + k >= s.size()) return k;
    const auto b = static_cast<uint8_t>(s[pos + k]);
    const bool ok = k == 1 ? second_byte_ok(lead, b) : (b >= 0x80 && b <= 0xBF);
    if (!ok) return k;
  }
  *complete = true;
  return k;
}

}  // namespace

size_t valid_sequence_at(std::string_view s, size_t pos) {
  bool complete = false;
  const size_t n = valid_prefix(s, pos, &complete);
  return complete ? n : 0;
}

char32_t decode(std::string_view s, size_t pos, size_t* length) {
  bool complete = false;
  const size_t n = valid_prefix(s, pos, &complete);
  if (!complete) {
    *length = n == 0 ? 1 : n;
    return kReplacement;
  }
  *length = n;
  const auto b0 = static_cast<uint8_t>(s[pos]);
  if (n == 1) return b0;
  char32_t cp = b0 & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<uint8_t>(s[pos + k]) & 0x3F);
  return cp;
}

void append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

size_t first_invalid(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    if (static_cast<uint8_t>(s[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const size_t n = valid_sequence_at(s, pos);
    if (n == 0) return pos;
    pos += n;
  }
  return s.size();
}

std::string repair(std::string_view s) {
  size_t bad = first_invalid(s);
  if (bad == s.size()) return std::string(s);
  std::string out(s.substr(0, bad));
  size_t pos = bad;
  while (pos < s.size()) {
    size_t n = 0;
    const char32_t cp = decode(s, pos, &n);
    if (cp == kReplacement && valid_sequence_at(s, pos) == 0) {
      append(out, kReplacement);
    } else {
      out.append(s.substr(pos, n));
    }
    pos += n;
  }
  return out;
}

size_t incomplete_tail(std::string_view s) {
  // An incomplete sequence starts at most 3 bytes before the end.
  const size_t lo = s.size() >= 3 ? s.size() - 3 : 0;
  for (size_t start = s.size(); start-- > lo;) {
    const auto b = static_cast<uint8_t>(s[start]);
    if (b >= 0x80 && b <= 0xBF) continue;  // continuation byte: keep looking for the lead
    bool complete = false;
    const size_t n = valid_prefix(s, start, &complete);
    if (!complete && n == s.size() - start && n > 0) return n;
    return 0;
  }
  return 0;
}

}  // namespace kiln::utf8
