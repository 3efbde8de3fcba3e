// ArrivalSchedule: rates and spreads of the three gap distributions, seeding, infinite rate.
#include "kiln/bench/arrival_schedule.h"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

namespace kiln::bench {
namespace {

// Mean and coefficient of variation of the gaps.
std::pair<double, double> gap_stats(const std::vector<double>& t) {
  std::vector<double> g;
  for (size_t i = 1; i < t.size(); ++i) g.push_back(t[i] - t[i - 1]);
  double mean = 0, var = 0;
  for (double x : g) mean += x / static_cast<double>(g.size());
  for (double x : g) var += (x - mean) * (x - mean) / static_cast<double>(g.size());
  return {mean, std::sqrt(var) / mean};
}

TEST(ArrivalSchedule, ConstantIsExact) {
  auto t = ArrivalSchedule::offsets(4.0, ArrivalDistribution::kConstant, 1, 0, 5);
  EXPECT_EQ(t, (std::vector<double>{0, 0.25, 0.5, 0.75, 1.0}));
}

TEST(ArrivalSchedule, PoissonUniformAndBurstySpreads) {
  const int n = 20001;
  auto [pm, pcv] = gap_stats(ArrivalSchedule::offsets(10, ArrivalDistribution::kGamma, 1, 1, n));
  EXPECT_NEAR(pm, 0.1, 0.003);
  EXPECT_NEAR(pcv, 1.0, 0.03);  // exponential gaps
  auto [um, ucv] = gap_stats(ArrivalSchedule::offsets(10, ArrivalDistribution::kUniform, 1, 1, n));
  EXPECT_NEAR(um, 0.1, 0.003);
  EXPECT_NEAR(ucv, 1 / std::sqrt(3.0), 0.02);
  auto [bm, bcv] = gap_stats(ArrivalSchedule::offsets(10, ArrivalDistribution::kGamma, 0.25, 1, n));
  EXPECT_NEAR(bm, 0.1, 0.006);
  EXPECT_NEAR(bcv, 2.0, 0.15);  // gamma shape k: cv = 1/sqrt(k)
}

TEST(ArrivalSchedule, SeededAndInfinite) {
  EXPECT_EQ(ArrivalSchedule::offsets(3, ArrivalDistribution::kGamma, 1, 42, 50),
            ArrivalSchedule::offsets(3, ArrivalDistribution::kGamma, 1, 42, 50));
  EXPECT_NE(ArrivalSchedule::offsets(3, ArrivalDistribution::kGamma, 1, 42, 50),
            ArrivalSchedule::offsets(3, ArrivalDistribution::kGamma, 1, 43, 50));
  auto t = ArrivalSchedule::offsets(std::numeric_limits<double>::infinity(), ArrivalDistribution::kGamma, 1, 0, 4);
  EXPECT_EQ(t, (std::vector<double>{0, 0, 0, 0}));
  EXPECT_FALSE(arrival_distribution_from_name("zipf").ok());
  EXPECT_EQ(*arrival_distribution_from_name("poisson"), ArrivalDistribution::kGamma);
}

}  // namespace
}  // namespace kiln::bench
