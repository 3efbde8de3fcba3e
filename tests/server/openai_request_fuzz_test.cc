// Fuzzing the request parser: random mutations (byte flips, inserts of JSON fragments, deletions,
// splices) of valid bodies, for a bounded time (KILN_FUZZ_SECONDS, default 2). Every input must
// come back as a request or a 4xx error (never a crash or an escaped exception), and an accepted
// request must satisfy every range the engine checks, so the engine never sees what the parser
// should have refused.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <random>

#include "kiln/server/openai_request.h"
#include "kiln/server/openai_response.h"

namespace kiln::server {
namespace {

const char* const kSeeds[] = {
    R"({"model": "m", "prompt": "hello", "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.1,
        "seed": 123, "n": 2, "stop": ["a", "bc"], "presence_penalty": 0.5, "frequency_penalty": -0.5,
        "repetition_penalty": 1.2, "logprobs": 3, "echo": true, "stream": true, "stream_options": {"include_usage": true},
        "ignore_eos": true, "min_tokens": 2, "stop_token_ids": [5, 6], "logit_bias": {"17": -100}, "user": "u"})",
    R"({"prompt": [1, 2, 3], "max_tokens": 1})",
    R"({"prompt": ["a", [4, 5]], "n": 3, "best_of": 3})",
    R"({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "a"}]},
        {"role": "assistant", "content": null}], "max_completion_tokens": 9, "logprobs": true, "top_logprobs": 4})",
    R"({"messages": [{"role": "user", "content": "hi"}], "stream": true, "stop": "x", "seed": -5})",
};

const char* const kFragments[] = {"null", "true", "false", "-1", "0", "1e999", "-1e308", "1.5", "9999999999999999999999",
                                  "[", "]", "{", "}", "\"", ",", ":", "\\u0000", "\\ud800", "\xff", "\xc3", "[[[[",
                                  "\"prompt\"", "\"messages\"", "\"n\": 64", "\"max_tokens\": 2147483648", "{\"a\":[]}",
                                  "\"role\": \"tool\"", "18446744073709551615", "-9223372036854775808"};

std::string mutate(std::string s, std::mt19937& rng) {
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    const size_t pos = s.empty() ? 0 : rng() % (s.size() + 1);
    switch (rng() % 6) {
      case 0: if (!s.empty() && pos < s.size()) s[pos] = static_cast<char>(s[pos] ^ (1 << (rng() % 8))); break;
      case 1: s.insert(pos, 1, static_cast<char>(rng() % 256)); break;
      case 2: s.erase(pos, rng() % 16); break;
      case 3: s.insert(pos, kFragments[rng() % std::size(kFragments)]); break;
      case 4: {  // duplicate a range
        const size_t len = rng() % 32;
        if (pos < s.size()) s.insert(pos, s.substr(pos, len));
        break;
      }
      default: {  // splice another seed in
        const std::string other = kSeeds[rng() % std::size(kSeeds)];
        s = s.substr(0, pos) + other.substr(rng() % other.size());
      }
    }
  }
  return s;
}

void check_accepted(const OpenAiRequest& r, Endpoint e) {
  if (e == Endpoint::kCompletions) {
    ASSERT_FALSE(r.prompts.empty());
    for (const PromptInput& p : r.prompts) ASSERT_TRUE(p.is_ids ? !p.ids.empty() : !p.text.empty());
  } else {
    ASSERT_FALSE(r.messages.empty());
  }
  ASSERT_GE(r.n, 1);
  ASSERT_LE(r.n, kMaxChoices);
  ASSERT_LE(static_cast<int64_t>(std::max<size_t>(r.prompts.size(), 1)) * r.n, kMaxSequences);
  ASSERT_TRUE(!r.max_tokens || *r.max_tokens >= 1);
  ASSERT_TRUE(r.top_logprobs >= 0 && r.top_logprobs <= 20);
  GenerationParams p = r.params;
  p.max_tokens = r.max_tokens.value_or(1 << 30);
  p.logprobs = r.logprobs ? r.top_logprobs : -1;
  const Status s = validate_generation_params(p, int64_t{1} << 31);
  ASSERT_TRUE(s.ok()) << s.to_string();
}

TEST(OpenAiRequestFuzz, MutatedBodiesAreParsedOrRefusedWith4xx) {
  const char* env = std::getenv("KILN_FUZZ_SECONDS");
  const double seconds = env ? std::atof(env) : 2.0;
  std::mt19937 rng(20261121);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int64_t runs = 0, accepted = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    for (int i = 0; i < 100; ++i, ++runs) {
      const std::string body = mutate(kSeeds[rng() % std::size(kSeeds)], rng);
      for (Endpoint e : {Endpoint::kCompletions, Endpoint::kChat}) {
        ParseResult r = parse_openai_request(e, body);
        if (auto* err = std::get_if<ApiError>(&r)) {
          ASSERT_GE(err->status, 400) << body;
          ASSERT_LT(err->status, 500) << body;
          ASSERT_FALSE(err->message.empty()) << body;
          ASSERT_TRUE(nlohmann::json::accept(error_body(*err))) << body;
        } else {
          ++accepted;
          check_accepted(std::get<OpenAiRequest>(r), e);
          if (HasFatalFailure()) FAIL() << "accepted: " << body;
        }
      }
    }
  }
  std::printf("request parser fuzz: %lld inputs in %.1f s, %lld accepted\n", static_cast<long long>(runs), seconds,
              static_cast<long long>(accepted));
  EXPECT_GT(accepted, 0);
}

}  // namespace
}  // namespace kiln::server
