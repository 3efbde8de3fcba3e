// StopChecker: stop strings split over tokens, held-back text, stop ids, EOS (and ignore_eos),
// min_tokens and the length limits.
#include "kiln/engine/stop_checker.h"

#include <gtest/gtest.h>

#include "kiln/engine/detokenizer.h"

namespace kiln {
namespace {

struct Fed {
  std::string released;
  FinishReason reason = FinishReason::kNone;
  int64_t steps = 0;
};

// Feeds (token, text) pairs until the checker stops.
Fed feed(const GenerationParams& p, const std::vector<std::pair<int32_t, std::string>>& steps,
         std::vector<int32_t> eos = {2}, int64_t max_model_len = 1000, int64_t prompt = 3) {
  StopChecker c(p, std::move(eos), max_model_len);
  Fed r;
  for (const auto& [tok, text] : steps) {
    ++r.steps;
    r.reason = c.check(tok, r.steps, prompt + r.steps, text, &r.released);
    if (r.reason != FinishReason::kNone) break;
  }
  return r;
}

TEST(StopChecker, StopStringAcrossTokensIsCutAndNeverReleased) {
  GenerationParams p;
  p.max_tokens = 100;
  p.stop = {"END!"};
  StopChecker c(p, {}, 1000);
  std::string out;
  EXPECT_EQ(c.check(5, 1, 4, "Hello E", &out), FinishReason::kNone);
  EXPECT_EQ(out, "Hell");  // the last 3 bytes could start "END!"
  EXPECT_EQ(c.check(6, 2, 5, "N", &out), FinishReason::kNone);
  EXPECT_EQ(out, "Hello");
  EXPECT_EQ(c.check(7, 3, 6, "D!tail", &out), FinishReason::kStop);
  EXPECT_EQ(out, "Hello ");
  EXPECT_EQ(c.text(), "Hello ");
}

TEST(StopChecker, EarliestOfSeveralStopStrings) {
  GenerationParams p;
  p.max_tokens = 100;
  p.stop = {"xyz", "b"};
  const Fed r = feed(p, {{5, "aa"}, {6, "abxyz"}});
  EXPECT_EQ(r.reason, FinishReason::kStop);
  EXPECT_EQ(r.released, "aaa");
}

TEST(StopChecker, IncludeStopStringInOutput) {
  GenerationParams p;
  p.max_tokens = 100;
  p.stop = {"b", "bx", "zz"};
  p.include_stop_str_in_output = true;
  const Fed r = feed(p, {{5, "aa"}, {6, "abxyz"}});
  EXPECT_EQ(r.reason, FinishReason::kStop);
  EXPECT_EQ(r.released, "aaabx");  // of the matches starting first, the longest, kept
}

TEST(StopChecker, LengthReleasesEverything) {
  GenerationParams p;
  p.max_tokens = 3;
  p.stop = {"zzzz"};
  const Fed r = feed(p, {{5, "a"}, {6, "b"}, {7, "c"}, {8, "d"}});
  EXPECT_EQ(r.reason, FinishReason::kLength);
  EXPECT_EQ(r.steps, 3);
  EXPECT_EQ(r.released, "abc");
}

TEST(StopChecker, ContextLimitIsLength) {
  GenerationParams p;
  p.max_tokens = 100;
  const Fed r = feed(p, {{5, "a"}, {6, "b"}, {7, "c"}}, {2}, /*max_model_len=*/5, /*prompt=*/3);
  EXPECT_EQ(r.reason, FinishReason::kLength);
  EXPECT_EQ(r.steps, 2);
}

TEST(StopChecker, EosAndStopTokenIds) {
  GenerationParams p;
  p.max_tokens = 100;
  Fed r = feed(p, {{5, "a"}, {2, "</s>"}, {6, "b"}});
  EXPECT_EQ(r.reason, FinishReason::kStop);
  EXPECT_EQ(r.released, "a");  // the stop token's text is not output
  p.ignore_eos = true;
  r = feed(p, {{5, "a"}, {2, ""}, {6, "b"}});
  EXPECT_EQ(r.reason, FinishReason::kNone);
  p.stop_token_ids = {6};
  r = feed(p, {{5, "a"}, {2, ""}, {6, "b"}});
  EXPECT_EQ(r.reason, FinishReason::kStop);
  EXPECT_EQ(r.steps, 3);
}

TEST(StopChecker, MinTokensDefersEveryStop) {
  GenerationParams p;
  p.max_tokens = 100;
  p.min_tokens = 3;
  p.stop = {"x"};
  const Fed r = feed(p, {{2, ""}, {5, "x"}, {6, "x"}, {7, "q"}});
  EXPECT_EQ(r.reason, FinishReason::kStop);
  EXPECT_EQ(r.steps, 3);
  EXPECT_EQ(r.released, "x");
}

TEST(StopChecker, HoldsBackOnlyWholeCharacters) {
  GenerationParams p;
  p.max_tokens = 100;
  p.stop = {"ab"};  // hold back 1 byte
  StopChecker c(p, {}, 1000);
  std::string out;
  EXPECT_EQ(c.check(5, 1, 4, "x\xC3\xA9", &out), FinishReason::kNone);  // "xé"
  EXPECT_EQ(out, "x");  // the held byte is the end of é: hold all of it
}

TEST(Utf8, CompletePrefix) {
  const std::string s = "a\xC3\xA9\xE2\x82\xAC";  // a é €
  EXPECT_EQ(utf8_complete_prefix(s, 6), 6u);
  EXPECT_EQ(utf8_complete_prefix(s, 5), 3u);
  EXPECT_EQ(utf8_complete_prefix(s, 4), 3u);
  EXPECT_EQ(utf8_complete_prefix(s, 2), 1u);
  EXPECT_EQ(utf8_complete_prefix(s, 1), 1u);
}

}  // namespace
}  // namespace kiln
