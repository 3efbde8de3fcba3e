// KL divergence and perplexity between a baseline model and a test model (llama.cpp's
// `perplexity --kl-divergence`): for each scored token, KL(P_base || P_test) over the whole
// vocabulary, both models' negative log-likelihood of the true next token, and whether their
// argmax agrees. Math in double precision from f32 logits.
#pragma once
#include <cstdint>
#include <vector>

namespace kiln::eval {

struct TokenComparison {
  double kl = 0;                       // sum_i p_i (ln p_i - ln q_i), p = softmax(base), q = softmax(test)
  double nll_base = 0, nll_test = 0;   // -ln p[target], -ln q[target]
  bool same_top1 = false;              // argmax(base) == argmax(test)
};

// base, test: [vocab] logits; target: the token that follows.
TokenComparison compare_logits(const float* base, const float* test, int64_t vocab, int32_t target);

struct KlSummary {
  int64_t tokens = 0;
  double ppl_base = 0, ppl_test = 0;   // exp(mean nll)
  double mean_kl = 0, p99_kl = 0, max_kl = 0, median_kl = 0;
  double top1_agreement = 0;           // fraction in [0, 1]
};

// Collects TokenComparisons; summary() at any time (running numbers for progress lines).
class KlAccumulator {
 public:
  void add(const TokenComparison& c);
  KlSummary summary() const;

 private:
  std::vector<double> kl_;
  double sum_kl_ = 0, sum_nll_base_ = 0, sum_nll_test_ = 0, max_kl_ = 0;
  int64_t same_ = 0;
};

// Percentile p in [0, 100] of values with linear interpolation between closest ranks (numpy's
// default). values is sorted in place. 0 for an empty vector.
double percentile(std::vector<double>& values, double p);

}  // namespace kiln::eval
