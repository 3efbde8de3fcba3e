// ArrivalSchedule: when an open-loop benchmark sends each request. Gaps between arrivals are
// constant, uniform on [0, 2/rate], or gamma(shape = burstiness, mean = 1/rate), which is Poisson
// arrivals at burstiness 1 (vLLM's --burstiness); seeded, so a run can be repeated exactly.
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kiln/core/status.h"

namespace kiln::bench {

enum class ArrivalDistribution { kConstant, kUniform, kGamma };

// "constant", "uniform", "poisson" or "gamma" (the last two are the same: burstiness picks the shape).
Result<ArrivalDistribution> arrival_distribution_from_name(const std::string& name);
const char* arrival_distribution_name(ArrivalDistribution d);

class ArrivalSchedule {
 public:
  // rate in requests/second; infinity: every request at time 0 (closed loop / burst).
  ArrivalSchedule(double rate, ArrivalDistribution distribution, double burstiness, uint64_t seed);

  // Seconds from the first arrival to arrival i (0 for i = 0), for i = 0, 1, 2, ... in order.
  double next_offset();

  // The first n offsets of a fresh schedule (for tests and planning).
  static std::vector<double> offsets(double rate, ArrivalDistribution d, double burstiness, uint64_t seed, int64_t n);

 private:
  double next_gap();

  double rate_;
  ArrivalDistribution distribution_;
  double burstiness_;
  std::mt19937_64 rng_;
  double offset_ = 0;
  bool first_ = true;
};

}  // namespace kiln::bench
