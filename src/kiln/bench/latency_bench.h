// LatencyBench: the model in-process, no server and no scheduler (vLLM's `bench latency`): a
// batch of random prompts prefilled together, then decoded greedily one token per sequence per
// step; times the prefill, every decode step and the whole, and reports tokens/s.
#pragma once
#include <cstdint>
#include <cstdio>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/core/status.h"
#include "kiln/models/model.h"

namespace kiln::bench {

struct LatencyOptions {
  int64_t batch_size = 8, input_len = 32, output_len = 128;
  int64_t num_iters = 3, num_iters_warmup = 1;
  int64_t max_prefill_tokens = 8192;  // tokens per prefill forward, over the whole batch
  int64_t block_size = 16;
  uint64_t seed = 0;
};

struct LatencyIteration {
  double prefill_s = 0;               // the prompts -> the first token of each sequence
  std::vector<double> decode_step_s;  // one per later token
  double total_s = 0;
};

Result<std::vector<LatencyIteration>> run_latency(Model& model, const LatencyOptions& options);
// Averages over the measured iterations: prefill ms and tokens/s, decode step mean/p50/p90/p99 ms,
// decode tokens/s, end-to-end latency, and every iteration's raw numbers.
nlohmann::json latency_json(const std::vector<LatencyIteration>& iterations, const LatencyOptions& options);
void print_latency(const nlohmann::json& summary, std::FILE* out);

}  // namespace kiln::bench
