// SseParser: events split at every possible byte boundary parse the same as whole.
#include "kiln/bench/sse_parser.h"

#include <gtest/gtest.h>

namespace kiln::bench {
namespace {

const std::string kStream =
    "data: {\"a\":1}\n\n"
    ": a comment\r\n"
    "event: ignored\r\n"
    "data: line one\r\n"
    "data:line two\r\n\r\n"
    "id: 7\rdata: cr only\r\r"
    "data: [DONE]\n\n"
    "data: unfinished";

const std::vector<std::string> kEvents = {"{\"a\":1}", "line one\nline two", "cr only", "[DONE]"};

TEST(SseParser, WholeStream) {
  SseParser p;
  EXPECT_EQ(p.feed(kStream), kEvents);
}

TEST(SseParser, EverySplitPointAndByteByByte) {
  for (size_t cut = 0; cut <= kStream.size(); ++cut) {
    SseParser p;
    std::vector<std::string> got = p.feed(kStream.substr(0, cut));
    for (std::string& e : p.feed(kStream.substr(cut))) got.push_back(std::move(e));
    EXPECT_EQ(got, kEvents) << "cut at " << cut;
  }
  SseParser p;
  std::vector<std::string> got;
  for (char c : kStream)
    for (std::string& e : p.feed(std::string(1, c))) got.push_back(std::move(e));
  EXPECT_EQ(got, kEvents);
}

TEST(SseParser, EmptyDataAndBlankLinesWithoutData) {
  SseParser p;
  EXPECT_EQ(p.feed("\n\n\ndata\n\ndata:\n\n"), (std::vector<std::string>{"", ""}));
}

}  // namespace
}  // namespace kiln::bench
