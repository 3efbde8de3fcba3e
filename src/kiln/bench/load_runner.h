// LoadRunner: drives a serving benchmark's requests at a server. Open loop: requests leave on an
// ArrivalSchedule at a target rate (optionally capped by --max-concurrency, in which case sends
// can fall behind and the pacer says so); closed loop (infinite rate + max concurrency): a fixed
// number in flight, a new one sent as each finishes. Runs for a number of requests or a duration,
// after warm-up requests that are not measured. One io_context thread does everything.
#pragma once
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "kiln/bench/arrival_schedule.h"
#include "kiln/bench/request_record.h"
#include "kiln/bench/workload.h"
#include "kiln/core/status.h"

namespace kiln::bench {

struct LoadOptions {
  std::string base_url = "http://127.0.0.1:8000";
  std::string endpoint = "/v1/completions";
  std::string api_key;
  double request_rate = std::numeric_limits<double>::infinity();  // requests/s; inf: all at once
  ArrivalDistribution arrivals = ArrivalDistribution::kGamma;
  double burstiness = 1.0;
  uint64_t seed = 0;
  int64_t max_concurrency = 0;   // 0: unbounded
  int64_t num_prompts = 1000;    // requests to send (by count), or the pool cycled through (by duration)
  double duration_s = 0;         // > 0: send for this long instead of num_prompts requests
  double request_timeout_s = 600;  // no bytes for this long: the request fails
  double progress_interval_s = 1;  // 0: no progress lines
  bool keep_alive = true;          // reuse connections (false: one connection per request)
};

// Did sends keep to the schedule? (open loop only)
struct PacerStats {
  bool open_loop = false;
  double target_rate = 0;          // requests/s asked for
  double scheduled_rate = 0;       // the drawn schedule's own rate: (n - 1) / last offset
  double achieved_send_rate = 0;   // (n - 1) / (last send - first send)
  double lag_mean_s = 0, lag_p99_s = 0, lag_max_s = 0;  // send time - scheduled time
  int64_t late_sends = 0;          // lag over kLagTolerance
  bool fell_behind = false;        // late sends, or sends 5% slower than scheduled
  static constexpr double kLagTolerance = 0.05;
};

struct LoadResult {
  std::vector<RequestRecord> records;  // measured requests, in send order
  double duration_s = 0;               // first send -> last response end
  PacerStats pacer;
  int64_t warmup_requests = 0;
  int64_t max_in_flight = 0;
  int64_t connections_opened = 0;
  bool prompts_reused = false;         // a duration run cycled through its pool of prompts
};

// warmups run first (all at once, or max_concurrency at a time); any warm-up failure fails the run.
Result<LoadResult> run_load(const LoadOptions& options, const std::vector<BenchRequest>& warmups,
                            const std::vector<BenchRequest>& requests);

}  // namespace kiln::bench
