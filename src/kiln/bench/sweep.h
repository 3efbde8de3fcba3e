// Sweep: a serving benchmark repeated over a list of request rates (open loop) or concurrencies
// (closed loop), each point on fresh prompts; finds the highest point whose chosen latency
// percentile stays under a cutoff, and writes sweep.json, sweep.csv and two SVG charts (end-to-end
// latency and time per output token against achieved requests/second). Charts of several sweep
// files, one curve each, come from plot_sweep_files (`kiln bench plot`).
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/bench/bench_summary.h"
#include "kiln/bench/load_runner.h"
#include "kiln/core/status.h"

namespace kiln::bench {

struct SweepOptions {
  std::vector<double> request_rates;   // open loop, one point each
  std::vector<int64_t> concurrencies;  // or closed loop, one point each
  std::string slo_metric = "e2el";     // ttft, tpot, itl, lpt, e2el
  double slo_percentile = 99;
  double slo_cutoff_ms = 0;            // 0: no cutoff (every point without errors passes)
  std::string result_dir = ".";
  std::string label;                   // the curve's name in charts ("" : the result dir's name)
};

// requests: num_prompts per point (point k uses [k * n, (k + 1) * n)). Writes the files and
// returns the sweep JSON; errors in a point fail it but not the sweep.
Result<nlohmann::json> run_sweep(const SweepOptions& options, const LoadOptions& load, const SummaryOptions& summary,
                                 const std::vector<BenchRequest>& warmups, const std::vector<BenchRequest>& requests);

// Reads sweep.json files (or single `bench serve` results) and draws, for the given percentile,
// <out_dir>/latency.svg and <out_dir>/token_latency.svg with one curve per file. Returns the paths.
Result<std::vector<std::string>> plot_sweep_files(const std::vector<std::string>& paths, double percentile,
                                                  const std::string& out_dir);

}  // namespace kiln::bench
