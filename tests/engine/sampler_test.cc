// Sampler: logprobs against a hand-computed log-softmax, and each penalty's effect on the
// chosen token (against its definition: presence/frequency over the output, repetition over all).
#include "kiln/engine/sampler.h"

#include <gtest/gtest.h>

#include <cmath>

namespace kiln {
namespace {

std::unique_ptr<Sequence> make_seq(std::vector<int32_t> prompt, std::vector<int32_t> generated, GenerationParams p) {
  Request r;
  r.prompt = std::move(prompt);
  r.params = std::move(p);
  auto s = std::make_unique<Sequence>(1, std::move(r), nullptr, nullptr, std::vector<int32_t>{}, 1 << 20, 0.0);
  s->tokens.insert(s->tokens.end(), generated.begin(), generated.end());
  return s;
}

TEST(Sampler, LogprobsAreLogSoftmax) {
  const std::vector<float> logits = {1.f, 3.f, 2.f, -1.f};
  double z = 0;
  for (float l : logits) z += std::exp(l);
  const TokenOutput t = token_logprobs(logits.data(), 4, 2, 3);
  EXPECT_EQ(t.id, 2);
  EXPECT_NEAR(t.logprob, 2.0 - std::log(z), 1e-5);
  ASSERT_EQ(t.top.size(), 3u);
  EXPECT_EQ(t.top[0].id, 1);
  EXPECT_EQ(t.top[1].id, 2);
  EXPECT_EQ(t.top[2].id, 0);
  EXPECT_NEAR(t.top[0].logprob, 3.0 - std::log(z), 1e-5);
}

TEST(Sampler, PenaltiesFollowTheirDefinitions) {
  GenerationParams p;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  p.repetition_penalty = 2.f;
  auto s = make_seq({0, 1}, {2, 2, 3}, p);
  std::vector<float> l = {4.f, -4.f, 4.f, 1.f, 1.f};
  apply_penalties(l.data(), 5, *s, {});
  EXPECT_FLOAT_EQ(l[0], 2.f);                  // prompt token: repetition only
  EXPECT_FLOAT_EQ(l[1], -8.f);                 // negative logits are multiplied
  EXPECT_FLOAT_EQ(l[2], 2.f - 0.5f - 0.5f);    // twice in the output
  EXPECT_FLOAT_EQ(l[3], 0.5f - 0.5f - 0.25f);  // once
  EXPECT_FLOAT_EQ(l[4], 1.f);                  // untouched
}

TEST(Sampler, MinTokensMasksEosAndBiasApplies) {
  GenerationParams p;
  p.min_tokens = 2;
  p.stop_token_ids = {3};
  p.logit_bias = {{4, 10.f}};
  auto s = make_seq({0}, {1}, p);
  std::vector<float> l = {0.f, 0.f, 5.f, 5.f, 0.f};
  apply_penalties(l.data(), 5, *s, {2});
  EXPECT_TRUE(std::isinf(l[2]) && l[2] < 0);
  EXPECT_TRUE(std::isinf(l[3]) && l[3] < 0);
  EXPECT_FLOAT_EQ(l[4], 10.f);
}

TEST(Sampler, GreedyWithLogprobsPicksTheArgmaxOfThePenalizedRow) {
  GenerationParams p;
  p.logprobs = 2;
  p.presence_penalty = 2.f;
  auto s = make_seq({0}, {1}, p);
  std::vector<float> l = {0.f, 3.f, 2.f};  // token 1 is penalized below token 2
  std::vector<TokenOutput> out;
  ASSERT_TRUE(sample_sequences(Tensor::view(l.data(), DType::kF32, {1, 3}), {s.get()}, {}, &out).ok());
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].id, 2);
  ASSERT_EQ(out[0].top.size(), 2u);
  EXPECT_EQ(out[0].top[0].id, 1);  // logprobs are the model's, before penalties
  EXPECT_LT(out[0].logprob, out[0].top[0].logprob);
}

}  // namespace
}  // namespace kiln
