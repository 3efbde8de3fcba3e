// KL divergence, perplexity and top-1 agreement from two rows of logits.
#include "kiln/eval/kl_divergence.h"

#include <algorithm>
#include <cmath>

namespace kiln::eval {
namespace {

// ln(sum exp(x)) and argmax of one row.
struct RowStats {
  double log_sum_exp = 0;
  int64_t argmax = 0;
};

RowStats row_stats(const float* x, int64_t n) {
  RowStats r;
  float mx = x[0];
  for (int64_t i = 1; i < n; ++i) {
    if (x[i] > mx) {
      mx = x[i];
      r.argmax = i;
    }
  }
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += std::exp(static_cast<double>(x[i]) - mx);
  r.log_sum_exp = mx + std::log(s);
  return r;
}

}  // namespace

TokenComparison compare_logits(const float* base, const float* test, int64_t vocab, int32_t target) {
  const RowStats b = row_stats(base, vocab), t = row_stats(test, vocab);
  TokenComparison c;
  double kl = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    const double lp = base[i] - b.log_sum_exp, lq = test[i] - t.log_sum_exp;
    kl += std::exp(lp) * (lp - lq);
  }
  c.kl = std::max(0.0, kl);  // rounding can leave -1e-17 for identical rows
  c.nll_base = b.log_sum_exp - base[target];
  c.nll_test = t.log_sum_exp - test[target];
  c.same_top1 = b.argmax == t.argmax;
  return c;
}

void KlAccumulator::add(const TokenComparison& c) {
  kl_.push_back(c.kl);
  sum_kl_ += c.kl;
  sum_nll_base_ += c.nll_base;
  sum_nll_test_ += c.nll_test;
  max_kl_ = std::max(max_kl_, c.kl);
  same_ += c.same_top1;
}

KlSummary KlAccumulator::summary() const {
  KlSummary s;
  s.tokens = static_cast<int64_t>(kl_.size());
  if (s.tokens == 0) return s;
  const double n = static_cast<double>(s.tokens);
  s.ppl_base = std::exp(sum_nll_base_ / n);
  s.ppl_test = std::exp(sum_nll_test_ / n);
  s.mean_kl = sum_kl_ / n;
  s.max_kl = max_kl_;
  std::vector<double> sorted = kl_;
  s.p99_kl = percentile(sorted, 99);
  s.median_kl = percentile(sorted, 50);
  s.top1_agreement = static_cast<double>(same_) / n;
  return s;
}

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double rank = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank)), hi = std::min(v.size() - 1, lo + 1);
  return v[lo] + (rank - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

}  // namespace kiln::eval
