// BenchSummary: statistics over the successful requests (failed ones are counted, not timed).
#include "kiln/bench/bench_summary.h"

#include "kiln/bench/model_flops.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace kiln::bench {

using nlohmann::json;

namespace {

bool known_metric(const std::string& m) {
  return std::find(all_metrics().begin(), all_metrics().end(), m) != all_metrics().end();
}

std::vector<std::string> split(const std::string& text, const char* seps) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < text.size()) {
    const size_t j = text.find_first_of(seps, i);
    const std::string part = text.substr(i, j == std::string::npos ? std::string::npos : j - i);
    if (!part.empty()) out.push_back(part);
    if (j == std::string::npos) break;
    i = j + 1;
  }
  return out;
}

Result<double> parse_number(const std::string& s, const std::string& what) {
  try {
    size_t used = 0;
    const double v = std::stod(s, &used);
    if (used == s.size() && std::isfinite(v)) return v;
  } catch (...) {
  }
  return invalid_argument(what + ": '" + s + "' is not a number");
}

// Seconds -> the metric's values in ms over the successful requests.
std::vector<double> metric_values_ms(const LoadResult& run, const std::string& metric) {
  std::vector<double> v;
  for (const RequestRecord& r : run.records) {
    if (!r.ok) continue;
    if (metric == "ttft") v.push_back(r.ttft * 1e3);
    if (metric == "e2el") v.push_back(r.e2e * 1e3);
    if (metric == "tpot" && r.tpot()) v.push_back(*r.tpot() * 1e3);
    if (metric == "lpt" && r.lpt()) v.push_back(*r.lpt() * 1e3);
    if (metric == "itl")
      for (double x : r.itl) v.push_back(x * 1e3);
  }
  std::sort(v.begin(), v.end());
  return v;
}

const char* metric_title(const std::string& m) {
  if (m == "ttft") return "Time to First Token";
  if (m == "tpot") return "Time per Output Token (excl. 1st token)";
  if (m == "itl") return "Inter-token Latency";
  if (m == "lpt") return "Latency per Token (after the 1st)";
  return "End-to-end Latency";
}

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

Result<std::vector<Slo>> parse_slos(const std::string& text) {
  std::vector<Slo> out;
  for (const std::string& item : split(text, ", ")) {
    const size_t eq = item.find_first_of("=:");
    if (eq == std::string::npos) return invalid_argument("SLO '" + item + "': expected METRIC=MS");
    Slo s{item.substr(0, eq), 0};
    if (!known_metric(s.metric) || s.metric == "itl")
      return invalid_argument("SLO metric '" + s.metric + "' (supported: ttft, tpot, lpt, e2el)");
    KILN_ASSIGN_OR_RETURN(s.ms, parse_number(item.substr(eq + 1), "SLO " + s.metric));
    if (s.ms <= 0) return invalid_argument("SLO " + s.metric + " must be positive");
    out.push_back(s);
  }
  return out;
}

Result<std::vector<double>> parse_percentiles(const std::string& text) {
  std::vector<double> out;
  for (const std::string& item : split(text, ", ")) {
    KILN_ASSIGN_OR_RETURN(double p, parse_number(item, "--metric-percentiles"));
    if (p <= 0 || p > 100) return invalid_argument("--metric-percentiles: " + item + " is not in (0, 100]");
    out.push_back(p);
  }
  return out;
}

Result<std::vector<std::string>> parse_metric_names(const std::string& text) {
  std::vector<std::string> out = split(text, ", ");
  for (const std::string& m : out)
    if (!known_metric(m)) return invalid_argument("metric '" + m + "' (supported: ttft, tpot, itl, lpt, e2el)");
  return out;
}

std::string percentile_key(double p) {
  if (p == std::floor(p)) return std::to_string(static_cast<int64_t>(p));
  std::ostringstream os;
  os << p;
  return os.str();
}

std::string metric_key(double p, const std::string& metric) {
  std::string k = "p";
  k += percentile_key(p);
  k += '_';
  k += metric;
  k += "_ms";
  return k;
}

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const double rank = p / 100.0 * static_cast<double>(sorted.size() - 1);
  const auto lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - static_cast<double>(lo));
}

bool meets_slos(const RequestRecord& r, const std::vector<Slo>& slos) {
  if (!r.ok) return false;
  for (const Slo& s : slos) {
    double v = 0;
    if (s.metric == "ttft") v = r.ttft;
    else if (s.metric == "e2el") v = r.e2e;
    else if (s.metric == "tpot") v = r.tpot().value_or(0);
    else if (s.metric == "lpt") v = r.lpt().value_or(0);
    if (v * 1e3 > s.ms) return false;
  }
  return true;
}

json summarize(const LoadResult& run, const SummaryOptions& o) {
  json j;
  int64_t completed = 0, failed = 0, input = 0, output = 0, good = 0;
  bool usage = true;
  json errors = json::array();
  for (const RequestRecord& r : run.records) {
    if (!r.ok) {
      ++failed;
      if (errors.size() < 10) errors.push_back(r.error);
      continue;
    }
    ++completed;
    input += r.prompt_tokens;
    output += r.output_tokens;
    usage = usage && r.usage_reported;
    if (meets_slos(r, o.slos)) ++good;
  }
  const double d = run.duration_s > 0 ? run.duration_s : 1e-9;
  j["completed"] = completed;
  j["failed"] = failed;
  j["errors"] = errors;
  j["duration"] = run.duration_s;
  j["total_input_tokens"] = input;
  j["total_output_tokens"] = output;
  j["usage_from_server"] = usage;
  j["request_throughput"] = static_cast<double>(completed) / d;
  j["output_throughput"] = static_cast<double>(output) / d;
  j["total_token_throughput"] = static_cast<double>(input + output) / d;
  if (!o.slos.empty()) {
    j["request_goodput"] = static_cast<double>(good) / d;
    json slos = json::object();
    for (const Slo& s : o.slos) slos[s.metric + "_ms"] = s.ms;
    j["slos"] = slos;
  }
  for (const std::string& m : all_metrics()) {
    const std::vector<double> v = metric_values_ms(run, m);
    double mean = 0, var = 0;
    for (double x : v) mean += x / static_cast<double>(v.size());
    for (double x : v) var += (x - mean) * (x - mean) / static_cast<double>(v.size());
    j["mean_" + m + "_ms"] = mean;
    j["median_" + m + "_ms"] = percentile(v, 50);
    j["std_" + m + "_ms"] = std::sqrt(var);
    for (double p : o.percentiles) j[metric_key(p, m)] = percentile(v, p);
  }
  const PacerStats& p = run.pacer;
  j["pacer"] = {{"open_loop", p.open_loop}, {"target_rate", p.target_rate}, {"scheduled_rate", p.scheduled_rate},
                {"achieved_send_rate", p.achieved_send_rate}, {"lag_mean_ms", p.lag_mean_s * 1e3},
                {"lag_p99_ms", p.lag_p99_s * 1e3}, {"lag_max_ms", p.lag_max_s * 1e3}, {"late_sends", p.late_sends},
                {"fell_behind", p.fell_behind}};
  j["pacer_lag"] = p.fell_behind;
  j["warmup_requests"] = run.warmup_requests;
  j["max_in_flight"] = run.max_in_flight;
  j["connections_opened"] = run.connections_opened;
  j["prompts_reused"] = run.prompts_reused;
  if (o.model_config) {
    double prefill = 0, decode = 0;
    for (const RequestRecord& r : run.records) {
      if (!r.ok) continue;
      const RequestFlops f = request_flops(*o.model_config, r.prompt_tokens, r.output_tokens, o.moe_top_k);
      prefill += f.prefill;
      decode += f.decode;
    }
    j["model_prefill_tflop"] = prefill / 1e12;
    j["model_decode_tflop"] = decode / 1e12;
    j["model_tflops"] = (prefill + decode) / d / 1e12;
    j["peak_tflops"] = o.peak_tflops;
    if (o.peak_tflops > 0) j["mfu"] = (prefill + decode) / d / 1e12 / o.peak_tflops;
  }
  return j;
}

json detailed_json(const LoadResult& run) {
  json j = {{"input_lens", json::array()}, {"output_lens", json::array()}, {"ttfts", json::array()},
            {"e2els", json::array()}, {"itls", json::array()}, {"send_times", json::array()},
            {"scheduled_times", json::array()}, {"errors", json::array()}};
  for (const RequestRecord& r : run.records) {
    j["input_lens"].push_back(r.prompt_tokens);
    j["output_lens"].push_back(r.output_tokens);
    j["ttfts"].push_back(r.ttft);
    j["e2els"].push_back(r.e2e);
    j["itls"].push_back(r.itl);
    j["send_times"].push_back(r.send_time);
    j["scheduled_times"].push_back(r.scheduled_time);
    j["errors"].push_back(r.error);
  }
  return j;
}

void print_summary(const json& j, const SummaryOptions& o, std::FILE* out) {
  auto line = [out](const std::string& label, double v, int prec = 2) {
    std::fprintf(out, "%-40s %.*f\n", label.c_str(), prec, v);
  };
  auto count = [out](const std::string& label, int64_t v) { std::fprintf(out, "%-40s %lld\n", label.c_str(), static_cast<long long>(v)); };
  std::fprintf(out, "%s\n", "============ Serving Benchmark Result ============");
  count("Successful requests:", j["completed"].get<int64_t>());
  count("Failed requests:", j["failed"].get<int64_t>());
  line("Benchmark duration (s):", j["duration"].get<double>());
  count("Total input tokens:", j["total_input_tokens"].get<int64_t>());
  count("Total generated tokens:", j["total_output_tokens"].get<int64_t>());
  line("Request throughput (req/s):", j["request_throughput"].get<double>());
  if (j.contains("request_goodput")) line("Request goodput (req/s):", j["request_goodput"].get<double>());
  line("Output token throughput (tok/s):", j["output_throughput"].get<double>());
  line("Total token throughput (tok/s):", j["total_token_throughput"].get<double>());
  for (const std::string& m : o.percentile_metrics) {
    std::string title = std::string(" ") + metric_title(m) + " ";
    const size_t pad = title.size() < 50 ? 50 - title.size() : 0;
    std::fprintf(out, "%s%s%s\n", std::string(pad / 2, '-').c_str(), title.c_str(), std::string(pad - pad / 2, '-').c_str());
    const std::string u = upper(m);
    line("Mean " + u + " (ms):", j["mean_" + m + "_ms"].get<double>());
    line("Median " + u + " (ms):", j["median_" + m + "_ms"].get<double>());
    for (double p : o.percentiles) {
      if (p == 50) continue;  // the median, just printed
      std::string label = "P";
      label += percentile_key(p);
      line(label + " " + u + " (ms):", j[metric_key(p, m)].get<double>());
    }
  }
  if (j.contains("model_tflops")) {
    std::fprintf(out, "%s\n", "------------- Model FLOPs utilisation ------------");
    line("Model TFLOP/s (prefill + decode):", j["model_tflops"].get<double>());
    line("Prefill TFLOP (total):", j["model_prefill_tflop"].get<double>());
    line("Decode TFLOP (total):", j["model_decode_tflop"].get<double>());
    if (j.contains("mfu")) line("MFU (% of " + std::to_string(static_cast<int>(j["peak_tflops"].get<double>())) + " TFLOP/s):", 100 * j["mfu"].get<double>());
  }
  const json& p = j["pacer"];
  if (p["open_loop"].get<bool>()) {
    std::fprintf(out, "%s\n", "------------------ Open-loop pacer ---------------");
    line("Target request rate (req/s):", p["target_rate"].get<double>());
    line("Scheduled rate (req/s):", p["scheduled_rate"].get<double>());
    line("Achieved send rate (req/s):", p["achieved_send_rate"].get<double>());
    line("Send lag mean (ms):", p["lag_mean_ms"].get<double>());
    line("Send lag p99 (ms):", p["lag_p99_ms"].get<double>());
    line("Send lag max (ms):", p["lag_max_ms"].get<double>());
    if (p["fell_behind"].get<bool>())
      std::fprintf(out, "WARNING: the pacer fell behind its schedule (%lld late sends): the achieved rate is not the target\n",
                   static_cast<long long>(p["late_sends"].get<int64_t>()));
  }
  std::fprintf(out, "%s\n", "==================================================");
}

}  // namespace kiln::bench
