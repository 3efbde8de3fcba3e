// BenchSummary: a serving run reduced to the numbers people compare (the same JSON keys as
// `vllm bench serve`): counts, throughputs, goodput under SLOs, and mean / median / std /
// percentiles of TTFT, TPOT, ITL, latency per token and end-to-end latency, plus the pacer's report.
#pragma once
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/bench/load_runner.h"
#include "kiln/core/status.h"
#include "kiln/models/model_config.h"

namespace kiln::bench {

// One service-level objective: metric (ttft, tpot, lpt, e2el) at most `ms` milliseconds.
struct Slo {
  std::string metric;
  double ms = 0;
  bool operator==(const Slo&) const = default;
};

struct SummaryOptions {
  std::vector<std::string> percentile_metrics = {"ttft", "tpot", "itl", "lpt", "e2el"};  // printed
  std::vector<double> percentiles = {50, 90, 95, 99, 99.9};
  std::vector<Slo> slos;  // goodput: requests meeting all of them, per second
  // Model FLOPs utilisation (bench/model_flops.h) when the served model's config is known:
  // FLOPs of the completed requests' prompt and output tokens over the run's duration, against
  // peak_tflops (the measured dense GEMM ceiling of the dtype served; 0: FLOP rates only).
  std::optional<ModelConfig> model_config;
  int64_t moe_top_k = 0;
  double peak_tflops = 0;
};

// The metric names, what they measure.
inline const std::vector<std::string>& all_metrics() {
  static const std::vector<std::string> m = {"ttft", "tpot", "itl", "lpt", "e2el"};
  return m;
}

// "ttft=500,tpot=50" (kiln) or "ttft:500 tpot:50" (vLLM's --goodput); milliseconds.
Result<std::vector<Slo>> parse_slos(const std::string& text);
Result<std::vector<double>> parse_percentiles(const std::string& text);         // "50,90,99.9"
Result<std::vector<std::string>> parse_metric_names(const std::string& text);   // "ttft,tpot"
// "99" for 99, "99.9" for 99.9 (as in the JSON keys p99_ttft_ms, p99.9_ttft_ms).
std::string percentile_key(double p);
// "p99_ttft_ms", "p99.9_e2el_ms": a percentile's key in the summary JSON.
std::string metric_key(double p, const std::string& metric);
// numpy's default (linear interpolation between closest ranks); values sorted ascending.
double percentile(const std::vector<double>& sorted, double p);
bool meets_slos(const RequestRecord& r, const std::vector<Slo>& slos);

nlohmann::json summarize(const LoadResult& run, const SummaryOptions& options);
// Per-request arrays (vLLM's --save-detailed): input_lens, output_lens, ttfts, itls, errors, ...
nlohmann::json detailed_json(const LoadResult& run);
void print_summary(const nlohmann::json& summary, const SummaryOptions& options, std::FILE* out);

}  // namespace kiln::bench
