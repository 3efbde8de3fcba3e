// Sweep: points run one after the other; the JSON keeps each point's full summary so the CSV and
// the charts (and later `kiln bench plot`) are derived from it alone.
#include "kiln/bench/sweep.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "kiln/bench/svg_chart.h"

namespace kiln::bench {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

Status write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  if (!out) return Status(StatusCode::kUnavailable, path + ": cannot write");
  return ok_status();
}

std::string csv_number(const json& v) {
  if (v.is_boolean()) return v.get<bool>() ? "1" : "0";
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number()) {
    char b[32];
    std::snprintf(b, sizeof b, "%.6g", v.get<double>());
    return b;
  }
  return "";
}

// A CSV field: quoted when it holds a comma, a quote or a line break.
std::string csv_text(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string o = "\"";
  for (char c : s) o += c == '"' ? std::string("\"\"") : std::string(1, c);
  return o + "\"";
}

std::string sweep_csv(const json& sweep, const std::vector<double>& percentiles) {
  std::vector<std::string> cols = {"completed", "failed", "duration", "request_throughput", "output_throughput",
                                   "total_token_throughput", "total_input_tokens", "total_output_tokens"};
  for (const std::string& m : all_metrics()) {
    cols.push_back("mean_" + m + "_ms");
    for (double p : percentiles) cols.push_back(metric_key(p, m));
  }
  std::ostringstream o;
  o << "label,request_rate,max_concurrency";
  for (const std::string& c : cols) o << "," << c;
  o << ",request_goodput,achieved_send_rate,pacer_fell_behind,meets_slo\n";
  for (const json& p : sweep["points"]) {
    o << csv_text(sweep["label"].get<std::string>()) << "," << csv_number(p["request_rate"]) << "," << csv_number(p["max_concurrency"]);
    for (const std::string& c : cols) o << "," << csv_number(p[c]);
    o << "," << (p.contains("request_goodput") ? csv_number(p["request_goodput"]) : "") << ","
      << csv_number(p["pacer"]["achieved_send_rate"]) << "," << csv_number(p["pacer"]["fell_behind"]) << ","
      << csv_number(p["meets_slo"]) << "\n";
  }
  return o.str();
}

// One curve: (achieved requests/s, the metric's percentile) for every point of a result.
ChartSeries curve(const json& result, const std::string& label, const std::string& key) {
  ChartSeries s{label, {}};
  const json points = result.contains("points") ? result["points"] : json::array({result});
  for (const json& p : points)
    if (p.contains("request_throughput") && p.contains(key) && p.value("completed", 0) > 0)
      s.points.emplace_back(p["request_throughput"].get<double>(), p[key].get<double>());
  return s;
}

Result<std::vector<std::string>> write_charts(const std::vector<std::pair<std::string, json>>& results, double percentile,
                                              const std::string& dir) {
  const std::string pk = percentile_key(percentile);
  struct Spec {
    const char* file;
    const char* metric;
    const char* title;  // "<title> (pNN) vs throughput", y axis "PNN <title> (ms)"
  };
  const Spec specs[] = {{"latency.svg", "e2el", "end-to-end latency"}, {"token_latency.svg", "tpot", "time per output token"}};
  std::vector<std::string> written;
  for (const Spec& s : specs) {
    std::string title = s.title;
    title[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(title[0])));
    Chart c{title + " (p" + pk + ") vs throughput", "Achieved throughput (requests/s)", "P" + pk + " " + s.title + " (ms)", {}};
    for (const auto& [label, result] : results) c.series.push_back(curve(result, label, metric_key(percentile, s.metric)));
    const std::string path = (fs::path(dir) / s.file).string();
    KILN_RETURN_IF_ERROR(write_file(path, render_svg_chart(c)));
    written.push_back(path);
  }
  return written;
}

}  // namespace

Result<json> run_sweep(const SweepOptions& o, const LoadOptions& load, const SummaryOptions& summary_options,
                       const std::vector<BenchRequest>& warmups, const std::vector<BenchRequest>& requests) {
  const bool by_rate = !o.request_rates.empty();
  const size_t num_points = by_rate ? o.request_rates.size() : o.concurrencies.size();
  if (num_points == 0 || (by_rate && !o.concurrencies.empty()))
    return invalid_argument("a sweep needs either --request-rates or --concurrencies");
  const size_t per_point = requests.size() / num_points;
  if (per_point == 0) return invalid_argument("fewer requests than sweep points");
  SummaryOptions so = summary_options;
  if (std::find(so.percentiles.begin(), so.percentiles.end(), o.slo_percentile) == so.percentiles.end())
    so.percentiles.push_back(o.slo_percentile);
  std::error_code ec;
  fs::create_directories(o.result_dir, ec);
  const std::string slo_key = metric_key(o.slo_percentile, o.slo_metric);
  json sweep = {{"label", o.label.empty() ? fs::path(o.result_dir).filename().string() : o.label},
                {"mode", by_rate ? "request_rate" : "concurrency"},
                {"slo", {{"metric", o.slo_metric}, {"percentile", o.slo_percentile}, {"cutoff_ms", o.slo_cutoff_ms}, {"key", slo_key}}},
                {"points", json::array()},
                {"best", nullptr}};
  if (sweep["label"].get<std::string>().empty() || sweep["label"] == ".") sweep["label"] = "sweep";
  for (size_t k = 0; k < num_points; ++k) {
    LoadOptions lo = load;
    if (by_rate) {
      lo.request_rate = o.request_rates[k];
    } else {
      lo.max_concurrency = o.concurrencies[k];
      lo.request_rate = std::numeric_limits<double>::infinity();
    }
    const std::string what = by_rate ? "request rate " + csv_number(o.request_rates[k]) + " req/s"
                                     : "concurrency " + std::to_string(o.concurrencies[k]);
    std::fprintf(stderr, "kiln bench sweep: point %zu/%zu: %s\n", k + 1, num_points, what.c_str());
    std::vector<BenchRequest> slice(requests.begin() + static_cast<std::ptrdiff_t>(k * per_point),
                                    requests.begin() + static_cast<std::ptrdiff_t>((k + 1) * per_point));
    KILN_ASSIGN_OR_RETURN(LoadResult run, run_load(lo, k == 0 ? warmups : std::vector<BenchRequest>{}, slice));
    json p = summarize(run, so);
    p["request_rate"] = by_rate ? json(o.request_rates[k]) : json(nullptr);
    p["max_concurrency"] = lo.max_concurrency > 0 ? json(lo.max_concurrency) : json(nullptr);
    const double v = p[slo_key].get<double>();
    const bool meets = p["failed"].get<int64_t>() == 0 && p["completed"].get<int64_t>() > 0 &&
                       (o.slo_cutoff_ms <= 0 || v <= o.slo_cutoff_ms);
    p["meets_slo"] = meets;
    std::string mfu;
    if (p.contains("model_tflops")) {
      char b[96];
      std::snprintf(b, sizeof b, ", model %.1f TFLOP/s", p["model_tflops"].get<double>());
      mfu = b;
      if (p.contains("mfu")) {
        std::snprintf(b, sizeof b, " (MFU %.1f%%)", 100 * p["mfu"].get<double>());
        mfu += b;
      }
    }
    std::fprintf(stderr, "kiln bench sweep: %s: %.2f req/s achieved, %s %.1f ms, %lld errors%s%s\n", what.c_str(),
                 p["request_throughput"].get<double>(), slo_key.c_str(), v, static_cast<long long>(p["failed"].get<int64_t>()),
                 mfu.c_str(), o.slo_cutoff_ms > 0 ? (meets ? " (meets the SLO)" : " (misses the SLO)") : "");
    if (meets) sweep["best"] = {{by_rate ? "request_rate" : "max_concurrency", by_rate ? json(o.request_rates[k]) : json(o.concurrencies[k])},
                                {"request_throughput", p["request_throughput"]}, {slo_key, v}};
    sweep["points"].push_back(std::move(p));
  }
  const std::string dir = o.result_dir;
  KILN_RETURN_IF_ERROR(write_file((fs::path(dir) / "sweep.json").string(), sweep.dump(2) + "\n"));
  KILN_RETURN_IF_ERROR(write_file((fs::path(dir) / "sweep.csv").string(), sweep_csv(sweep, so.percentiles)));
  KILN_ASSIGN_OR_RETURN(auto charts, write_charts({{sweep["label"].get<std::string>(), sweep}}, o.slo_percentile, dir));
  (void)charts;
  return sweep;
}

Result<std::vector<std::string>> plot_sweep_files(const std::vector<std::string>& paths, double percentile,
                                                  const std::string& out_dir) {
  std::vector<std::pair<std::string, json>> results;
  for (const std::string& path : paths) {
    std::ifstream in(path);
    if (!in) return not_found(path + ": cannot open");
    json j = json::parse(in, nullptr, false);
    if (!j.is_object()) return data_loss(path + ": not a JSON object");
    std::string label = j.value("label", "");
    if (label.empty() || label == "sweep") {
      const std::string parent = fs::path(path).parent_path().filename().string();
      label = (parent.empty() ? "" : parent + "/") + fs::path(path).stem().string();
    }
    results.emplace_back(label, std::move(j));
  }
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  return write_charts(results, percentile, out_dir);
}

}  // namespace kiln::bench
