// KL / perplexity / agreement math against a hand-checked case and a numpy-computed one, and
// run_kl_eval end to end on a tiny golden checkpoint (same model: KL 0; fp8 weights: small KL).
#include "kiln/eval/kl_divergence.h"

#include <gtest/gtest.h>

#include <cmath>

#include "kiln/eval/kl_eval.h"
#include "kiln/io/model_loader.h"

namespace kiln::eval {
namespace {

TEST(KlDivergence, HandChecked) {
  // p = (1/2, 1/2), q = (3/4, 1/4): KL = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3).
  const float base[] = {0.f, 0.f}, test[] = {std::log(3.f), 0.f};
  const TokenComparison c = compare_logits(base, test, 2, 0);
  EXPECT_NEAR(c.kl, 0.5 * std::log(4.0 / 3.0), 1e-7);
  EXPECT_NEAR(c.nll_base, std::log(2.0), 1e-7);
  EXPECT_NEAR(c.nll_test, -std::log(0.75), 1e-7);
  EXPECT_TRUE(c.same_top1);
  const TokenComparison same = compare_logits(test, test, 2, 1);
  EXPECT_EQ(same.kl, 0.0);
  EXPECT_NEAR(same.nll_base, -std::log(0.25), 1e-7);
  EXPECT_TRUE(same.same_top1);
}

TEST(KlDivergence, MatchesNumpy) {
  // Made with numpy (float64 log-softmax) from these f32 logits; see the task log for the script.
  const float b[] = {0.00246030674315989f, 0.5974910855293274f, -0.5482757091522217f, -1.7811837196350098f,
                     -0.90934157371521f, -1.983293056488037f, 0.1202872022986412f, 2.6804304122924805f,
                     -0.9844130277633667f, -1.2409497499465942f, 0.9796841144561768f, 0.7137740254402161f,
                     0.210828498005867f, -1.8609360456466675f, -0.0585036464035511f, 1.39060640335083f,
                     -2.688429117202759f, -0.9152315258979797f, -3.802445411682129f, -2.579075574874878f,
                     -3.6834700107574463f, -0.47018226981163025f, -2.534893035888672f, 0.5425286889076233f};
  const float t[] = {0.08083584904670715f, 0.5040256381034851f, -1.8066555261611938f, -2.050530195236206f,
                     -0.9335920214653015f, -1.9266386032104492f, -0.644780695438385f, 2.441553831100464f,
                     -1.47367262840271f, -1.6453683376312256f, 1.5101335048675537f, 0.31000667810440063f,
                     0.19456765055656433f, -1.4187411069869995f, -0.35030388832092285f, 1.3347554206848145f,
                     -2.633197069168091f, -0.8833406567573547f, -4.414973258972168f, -2.5410053730010986f,
                     -3.004058361053467f, -1.2437546253204346f, -2.1052017211914062f, 0.6022056937217712f};
  const int32_t targets[] = {1, 5, 2};
  const double want_kl[] = {0.02243893164909747, 0.060053562653259014, 0.054878736821913285};
  const bool want_same[] = {true, false, true};
  KlAccumulator acc;
  for (int r = 0; r < 3; ++r) {
    const TokenComparison c = compare_logits(b + r * 8, t + r * 8, 8, targets[r]);
    EXPECT_NEAR(c.kl, want_kl[r], 1e-9) << r;
    EXPECT_EQ(c.same_top1, want_same[r]) << r;
    acc.add(c);
  }
  const KlSummary s = acc.summary();
  EXPECT_EQ(s.tokens, 3);
  EXPECT_NEAR(s.ppl_base, 48.07165936275773, 1e-9);
  EXPECT_NEAR(s.ppl_test, 48.34427995751722, 1e-9);
  EXPECT_NEAR(s.mean_kl, 0.04579041037475659, 1e-9);
  EXPECT_NEAR(s.p99_kl, 0.0599500661366321, 1e-9);
  EXPECT_NEAR(s.median_kl, 0.054878736821913285, 1e-9);
  EXPECT_NEAR(s.max_kl, 0.060053562653259014, 1e-9);
  EXPECT_NEAR(s.top1_agreement, 2.0 / 3.0, 1e-12);
}

TEST(KlDivergence, PercentileInterpolatesLikeNumpy) {
  std::vector<double> v = {4, 1, 3, 2};
  EXPECT_DOUBLE_EQ(percentile(v, 50), 2.5);  // np.percentile([1,2,3,4], 50)
  EXPECT_DOUBLE_EQ(percentile(v, 99), 3.97);
  EXPECT_DOUBLE_EQ(percentile(v, 0), 1);
  std::vector<double> empty;
  EXPECT_EQ(percentile(empty, 99), 0);
}

std::vector<int32_t> stream(int64_t n, int64_t vocab) {
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back(static_cast<int32_t>((i * 7919 + 13) % vocab));
  return ids;
}

Result<std::unique_ptr<Model>> tiny(const ModelOptions& o) {
  KILN_ASSIGN_OR_RETURN(LoadedModel m, load_model(std::string(KILN_SOURCE_DIR) + "/tests/golden/llama3", DType::kF32));
  return create_model(std::move(m), o);
}

TEST(KlEval, SameModelGivesZeroAndFp8GivesSmallKl) {
  auto base = tiny({});
  auto same = tiny({});
  ModelOptions fp8;
  fp8.fp8_weights = true;
  auto test = tiny(fp8);
  ASSERT_TRUE(base.ok() && same.ok() && test.ok()) << test.status().to_string();
  KlEvalOptions o;
  o.ctx = 32;
  o.chunks = 3;
  int64_t calls = 0;
  auto s = run_kl_eval(**base, **same, stream(200, 320), o, [&](int64_t done, int64_t total, const KlSummary&) {
    ++calls;
    EXPECT_EQ(total, 3);
    EXPECT_EQ(done, calls);
  });
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(s->tokens, 3 * (32 - 1 - 16));  // second half of each window
  EXPECT_EQ(s->mean_kl, 0.0);
  EXPECT_EQ(s->max_kl, 0.0);
  EXPECT_EQ(s->top1_agreement, 1.0);
  EXPECT_EQ(s->ppl_base, s->ppl_test);
  EXPECT_GT(s->ppl_base, 1.0);
  o.score_all = true;
  auto q = run_kl_eval(**base, **test, stream(200, 320), o);
  ASSERT_TRUE(q.ok()) << q.status().to_string();
  EXPECT_EQ(q->tokens, 3 * 31);
  EXPECT_GT(q->mean_kl, 0.0);
  EXPECT_LT(q->mean_kl, 0.05);  // fp8 e4m3 weights of a random tiny model: ~4e-3
  EXPECT_GE(q->p99_kl, q->mean_kl);
  EXPECT_GE(q->max_kl, q->p99_kl);
  EXPECT_GT(q->top1_agreement, 0.6);
  o.ctx = 512;  // more than the tokens
  EXPECT_FALSE(run_kl_eval(**base, **test, stream(200, 320), o).ok());
}

}  // namespace
}  // namespace kiln::eval
