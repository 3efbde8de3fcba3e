// ArrivalSchedule: the gap generators.
#include "kiln/bench/arrival_schedule.h"

#include <cmath>

namespace kiln::bench {

Result<ArrivalDistribution> arrival_distribution_from_name(const std::string& name) {
  if (name == "constant") return ArrivalDistribution::kConstant;
  if (name == "uniform") return ArrivalDistribution::kUniform;
  if (name == "poisson" || name == "gamma") return ArrivalDistribution::kGamma;
  return invalid_argument("arrival distribution '" + name + "' (supported: constant, uniform, poisson, gamma)");
}

const char* arrival_distribution_name(ArrivalDistribution d) {
  switch (d) {
    case ArrivalDistribution::kConstant: return "constant";
    case ArrivalDistribution::kUniform: return "uniform";
    case ArrivalDistribution::kGamma: return "gamma";
  }
  return "?";
}

ArrivalSchedule::ArrivalSchedule(double rate, ArrivalDistribution distribution, double burstiness, uint64_t seed)
    : rate_(rate), distribution_(distribution), burstiness_(burstiness > 0 ? burstiness : 1.0), rng_(seed) {}

double ArrivalSchedule::next_gap() {
  if (!std::isfinite(rate_) || rate_ <= 0) return 0;
  const double mean = 1.0 / rate_;
  switch (distribution_) {
    case ArrivalDistribution::kConstant: return mean;
    case ArrivalDistribution::kUniform: return std::uniform_real_distribution<double>(0, 2 * mean)(rng_);
    case ArrivalDistribution::kGamma:
      return std::gamma_distribution<double>(burstiness_, mean / burstiness_)(rng_);
  }
  return mean;
}

double ArrivalSchedule::next_offset() {
  if (first_) {
    first_ = false;
    return 0;
  }
  offset_ += next_gap();
  return offset_;
}

std::vector<double> ArrivalSchedule::offsets(double rate, ArrivalDistribution d, double burstiness, uint64_t seed,
                                             int64_t n) {
  ArrivalSchedule s(rate, d, burstiness, seed);
  std::vector<double> out;
  for (int64_t i = 0; i < n; ++i) out.push_back(s.next_offset());
  return out;
}

}  // namespace kiln::bench
