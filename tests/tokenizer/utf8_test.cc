// UTF-8 helpers: validation and lossy repair follow the maximal-subpart rule (as Python's
// errors="replace" and Rust's from_utf8_lossy do); incomplete_tail finds what a stream holds back.
#include "kiln/tokenizer/utf8.h"

#include <gtest/gtest.h>

namespace kiln {
namespace {

TEST(Utf8Test, RepairReplacesEachMaximalInvalidSubpart) {
  EXPECT_EQ(utf8::repair("abc"), "abc");
  EXPECT_EQ(utf8::repair("\xF0\x9F\xA6\x99"), "🦙");
  EXPECT_EQ(utf8::repair("a\xF0\x9F\xA6"), "a\xEF\xBF\xBD");            // truncated: one U+FFFD
  EXPECT_EQ(utf8::repair("\x80\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD");      // two stray continuations
  EXPECT_EQ(utf8::repair("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(utf8::repair("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");      // overlong
  EXPECT_EQ(utf8::repair("\xE2\x82x"), "\xEF\xBF\xBDx");
}

TEST(Utf8Test, FirstInvalid) {
  EXPECT_EQ(utf8::first_invalid("héllo"), 6u);
  EXPECT_EQ(utf8::first_invalid("h\xFFllo"), 1u);
  EXPECT_EQ(utf8::first_invalid("ab\xE2\x82"), 2u);
}

TEST(Utf8Test, IncompleteTail) {
  EXPECT_EQ(utf8::incomplete_tail("abc"), 0u);
  EXPECT_EQ(utf8::incomplete_tail("a\xF0"), 1u);
  EXPECT_EQ(utf8::incomplete_tail("a\xF0\x9F"), 2u);
  EXPECT_EQ(utf8::incomplete_tail("a\xF0\x9F\xA6"), 3u);
  EXPECT_EQ(utf8::incomplete_tail("a\xF0\x9F\xA6\x99"), 0u);
  EXPECT_EQ(utf8::incomplete_tail("a\x80"), 0u);      // can never complete: not held back
  EXPECT_EQ(utf8::incomplete_tail("a\xE2x"), 0u);
  EXPECT_EQ(utf8::incomplete_tail("\xED\xA0"), 0u);   // would be a surrogate
}

TEST(Utf8Test, DecodeAndAppendRoundTrip) {
  for (char32_t cp : {0x41u, 0xE9u, 0x20ACu, 0x1F999u, 0x10FFFFu}) {
    std::string s;
    utf8::append(s, cp);
    size_t n = 0;
    EXPECT_EQ(utf8::decode(s, 0, &n), cp);
    EXPECT_EQ(n, s.size());
  }
}

}  // namespace
}  // namespace kiln
