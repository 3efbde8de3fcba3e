// EngineStats: what the engine counts for monitoring (the server's /metrics renders it): gauges of
// the queues and the KV pool, token and request counters, and latency histograms.
#pragma once
#include <array>
#include <cstdint>
#include <mutex>
#include <vector>

#include "kiln/engine/request.h"

namespace kiln {

// A Prometheus-style histogram: counts per upper bound (cumulative when rendered), sum, count.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}
  void observe(double value);
  const std::vector<double>& bounds() const { return bounds_; }
  const std::vector<int64_t>& counts() const { return counts_; }  // last: above every bound
  double sum() const { return sum_; }
  int64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<int64_t> counts_;
  double sum_ = 0;
  int64_t count_ = 0;
};

struct EngineStats {
  int64_t num_running = 0, num_waiting = 0;
  int64_t num_blocks = 0, num_free_blocks = 0, block_size = 0;
  int64_t prompt_tokens_total = 0, generation_tokens_total = 0, cached_prompt_tokens_total = 0;
  int64_t preemptions_total = 0, steps_total = 0;
  // Where the engine thread's time goes: inside Model::forward (the device computing, plus
  // launches; it ends synchronized) vs the whole step (scheduling, batch assembly, sampling on
  // the host, detokenization and streaming). forward / wall clock = the device busy fraction.
  double forward_seconds_total = 0, step_seconds_total = 0;
  std::array<int64_t, 5> finished_total{};  // by FinishReason
  Histogram time_to_first_token{{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80}};
  Histogram inter_token_latency{{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5, 5}};
  Histogram e2e_latency{{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320}};
  Histogram batch_tokens{{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096}};
};

}  // namespace kiln
