// `kiln bench`: serving and engine benchmarks. serve: load a server over HTTP (flags as in
// `vllm bench serve`); sweep: serve at a list of rates or concurrencies, find the highest that
// meets a latency cutoff, write JSON, CSV and SVG charts; plot: charts of several sweeps; latency:
// the model in-process for one batch shape (vLLM's `bench latency`).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "apps/default_model.h"
#include "apps/flag_ranges.h"
#include "apps/model_flags.h"
#include "kiln/bench/bench_summary.h"
#include "kiln/bench/http_client.h"
#include "kiln/bench/latency_bench.h"
#include "kiln/bench/load_runner.h"
#include "kiln/bench/sweep.h"
#include "kiln/bench/workload.h"
#include "kiln/core/log.h"
#include "kiln/io/model_loader.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::apps {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// Flags shared by `bench serve` and `bench sweep`.
struct ServeFlags {
  std::string base_url, host = "127.0.0.1", endpoint, backend = "openai", api_key, model, tokenizer;
  int port = 8000;
  std::string dataset_name = "random", dataset_path, request_rate = "inf", arrivals = "poisson";
  bench::WorkloadOptions workload;
  bench::LoadOptions load;
  double temperature = -1;
  int64_t num_warmups = 0;
  std::string percentile_metrics = "ttft,tpot,itl,lpt,e2el", metric_percentiles = "50,90,95,99,99.9", slo;
  std::vector<std::string> goodput;
  std::string result_dir, result_filename, label;
  bool save_result = false, save_detailed = false, no_progress = false, no_keep_alive = false;
  // sweep
  std::string request_rates, concurrencies, slo_metric = "e2el";
  double slo_percentile = 99, slo_cutoff_ms = 0;
  // MFU
  std::string model_config;
  int64_t moe_top_k = 0;
  double peak_tflops = 0;
};

Result<std::vector<double>> parse_list(const std::string& text, const std::string& flag) {
  std::vector<double> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    char* end = nullptr;
    const double v = std::strtod(item.c_str(), &end);
    if (*end != '\0' || !(v > 0)) return invalid_argument(flag + ": '" + item + "' is not a positive number");
    out.push_back(v);
  }
  if (out.empty()) return invalid_argument(flag + ": empty list");
  return out;
}

// Fills the option structs from the flags; asks the server for its model when --model is not given.
Status resolve_flags(ServeFlags& f, bench::SummaryOptions& summary) {
  bench::LoadOptions& lo = f.load;
  lo.base_url = f.base_url.empty() ? "http://" + f.host + ":" + std::to_string(f.port) : f.base_url;
  if (f.backend != "openai" && f.backend != "openai-chat")
    return invalid_argument("--backend " + f.backend + " (supported: openai, openai-chat)");
  lo.endpoint = !f.endpoint.empty() ? f.endpoint : f.backend == "openai-chat" ? "/v1/chat/completions" : "/v1/completions";
  f.workload.chat = lo.endpoint.find("chat/completions") != std::string::npos;
  if (f.api_key.empty())
    if (const char* k = std::getenv("OPENAI_API_KEY")) f.api_key = k;
  lo.api_key = f.api_key;
  char* end = nullptr;
  lo.request_rate = std::strtod(f.request_rate.c_str(), &end);
  if (*end != '\0' || !(lo.request_rate > 0)) return invalid_argument("--request-rate " + f.request_rate + ": expected a positive number or inf");
  KILN_ASSIGN_OR_RETURN(lo.arrivals, bench::arrival_distribution_from_name(f.arrivals));
  lo.seed = f.workload.seed;
  if (f.no_progress) lo.progress_interval_s = 0;
  lo.keep_alive = !f.no_keep_alive;
  f.workload.dataset = f.dataset_name == "custom" ? "jsonl" : f.dataset_name;
  f.workload.dataset_path = f.dataset_path;
  if (f.temperature >= 0) f.workload.temperature = f.temperature;
  KILN_ASSIGN_OR_RETURN(summary.percentile_metrics, bench::parse_metric_names(f.percentile_metrics));
  KILN_ASSIGN_OR_RETURN(summary.percentiles, bench::parse_percentiles(f.metric_percentiles));
  std::string slos = f.slo;
  for (const std::string& g : f.goodput) slos += "," + g;
  KILN_ASSIGN_OR_RETURN(summary.slos, bench::parse_slos(slos));
  if (!f.model_config.empty()) {
    const std::string dir = fs::is_directory(f.model_config) ? f.model_config : fs::path(f.model_config).parent_path().string();
    if (!fs::is_directory(f.model_config) && fs::path(f.model_config).filename() != "config.json")
      return invalid_argument("--model-config " + f.model_config + ": want a config.json or its directory");
    KILN_ASSIGN_OR_RETURN(LoadedModel cfg, load_config_only(dir.empty() ? "." : dir));
    summary.model_config = cfg.config;
    summary.moe_top_k = f.moe_top_k;
    summary.peak_tflops = f.peak_tflops;
  }
  f.workload.model = f.model;
  if (f.model.empty()) {
    KILN_ASSIGN_OR_RETURN(bench::HttpTarget target, bench::parse_base_url(lo.base_url));
    auto models = bench::http_get(target, bench::endpoint_path(target, "/v1/models"), f.api_key, 30);
    json j = models.ok() ? json::parse(*models, nullptr, false) : json();
    if (j.is_object() && j.contains("data") && j["data"].is_array() && !j["data"].empty())
      f.workload.model = j["data"][0].value("id", "");
    else
      log_warn("kiln bench: no --model and the server's /v1/models did not name one; sending no model field");
  }
  return ok_status();
}

// The workload: warm-ups first, then `count` measured requests.
Result<std::vector<bench::BenchRequest>> make_requests(const ServeFlags& f, int64_t count) {
  std::unique_ptr<Tokenizer> tok;
  const std::string path = f.tokenizer.empty() ? default_model_path() : f.tokenizer;
  auto loaded = load_tokenizer(path);
  if (loaded.ok()) tok = std::move(loaded).value();
  else if (f.workload.dataset == "random") return loaded.status().with_context("--tokenizer");
  else log_warn("kiln bench: no tokenizer (", loaded.status().to_string(), "); prompt lengths come from the server");
  const auto t0 = std::chrono::steady_clock::now();
  auto reqs = bench::build_workload(f.workload, tok.get(), f.num_warmups + count);
  log_info("kiln bench: built ", f.num_warmups + count, " requests in ",
           std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), " s");
  return reqs;
}

json config_json(const ServeFlags& f) {
  const std::time_t now = std::time(nullptr);
  char date[32];
  std::strftime(date, sizeof date, "%Y%m%d-%H%M%S", std::localtime(&now));
  const bench::LoadOptions& lo = f.load;
  return {{"date", date}, {"base_url", lo.base_url}, {"endpoint", lo.endpoint}, {"model_id", f.workload.model},
          {"tokenizer", f.tokenizer.empty() ? default_model_path() : f.tokenizer}, {"dataset_name", f.workload.dataset},
          {"random_input_len", f.workload.input_len}, {"random_output_len", f.workload.output_len},
          {"random_range_ratio", f.workload.range_ratio}, {"shared_prefix_len", f.workload.shared_prefix_len},
          {"ignore_eos", f.workload.ignore_eos}, {"request_rate", std::isfinite(lo.request_rate) ? json(lo.request_rate) : json("inf")},
          {"burstiness", lo.burstiness}, {"arrival_distribution", bench::arrival_distribution_name(lo.arrivals)},
          {"max_concurrency", lo.max_concurrency > 0 ? json(lo.max_concurrency) : json(nullptr)},
          {"num_prompts", lo.num_prompts}, {"duration_s", lo.duration_s}, {"num_warmups", f.num_warmups}, {"seed", f.workload.seed}};
}

Status write_json(const std::string& path, const json& j) {
  std::ofstream out(path);
  out << j.dump(2) << "\n";
  out.close();
  if (!out) return Status(StatusCode::kUnavailable, path + ": cannot write");
  std::fprintf(stderr, "kiln bench: wrote %s\n", path.c_str());
  return ok_status();
}

Status run_bench_serve(ServeFlags& f, int* exit_code) {
  bench::SummaryOptions so;
  KILN_RETURN_IF_ERROR(resolve_flags(f, so));
  KILN_ASSIGN_OR_RETURN(std::vector<bench::BenchRequest> all, make_requests(f, f.load.num_prompts));
  const std::vector<bench::BenchRequest> warmups(all.begin(), all.begin() + f.num_warmups);
  const std::vector<bench::BenchRequest> measured(all.begin() + f.num_warmups, all.end());
  KILN_ASSIGN_OR_RETURN(bench::LoadResult run, bench::run_load(f.load, warmups, measured));
  json result = config_json(f);
  result.update(bench::summarize(run, so));
  if (f.save_detailed) result.update(bench::detailed_json(run));
  bench::print_summary(result, so, stdout);
  if (run.prompts_reused) log_warn("kiln bench: the run cycled through its ", measured.size(), " prompts; raise --num-prompts");
  if (f.save_result || !f.result_dir.empty() || !f.result_filename.empty()) {
    const std::string dir = f.result_dir.empty() ? "." : f.result_dir;
    std::error_code ec;
    fs::create_directories(dir, ec);
    std::string name = f.result_filename;
    if (name.empty()) {
      std::ostringstream n;
      n << "bench-serve-" << f.request_rate << "qps"
        << (f.load.max_concurrency > 0 ? "-c" + std::to_string(f.load.max_concurrency) : "") << "-"
        << result["date"].get<std::string>() << ".json";
      name = n.str();
    }
    if (!f.label.empty()) result["label"] = f.label;
    KILN_RETURN_IF_ERROR(write_json((fs::path(dir) / name).string(), result));
  }
  if (result["failed"].get<int64_t>() > 0) {
    std::fprintf(stderr, "kiln bench serve: %lld of %zu requests failed\n", static_cast<long long>(result["failed"].get<int64_t>()),
                 run.records.size());
    *exit_code = 1;
  }
  return ok_status();
}

Status run_bench_sweep(ServeFlags& f, int* exit_code) {
  bench::SummaryOptions so;
  KILN_RETURN_IF_ERROR(resolve_flags(f, so));
  bench::SweepOptions sw;
  if (!f.request_rates.empty()) {
    KILN_ASSIGN_OR_RETURN(sw.request_rates, parse_list(f.request_rates, "--request-rates"));
  }
  if (!f.concurrencies.empty()) {
    KILN_ASSIGN_OR_RETURN(std::vector<double> c, parse_list(f.concurrencies, "--concurrencies"));
    for (double x : c) sw.concurrencies.push_back(static_cast<int64_t>(x));
  }
  if (sw.request_rates.empty() == sw.concurrencies.empty())
    return invalid_argument("give one of --request-rates R1,R2,... or --concurrencies C1,C2,...");
  KILN_RETURN_IF_ERROR(bench::parse_metric_names(f.slo_metric).status());
  sw.slo_metric = f.slo_metric;
  sw.slo_percentile = f.slo_percentile;
  sw.slo_cutoff_ms = f.slo_cutoff_ms;
  sw.result_dir = f.result_dir.empty() ? "bench-sweep" : f.result_dir;
  sw.label = f.label;
  const size_t points = sw.request_rates.size() + sw.concurrencies.size();
  KILN_ASSIGN_OR_RETURN(std::vector<bench::BenchRequest> all,
                        make_requests(f, f.load.num_prompts * static_cast<int64_t>(points)));
  const std::vector<bench::BenchRequest> warmups(all.begin(), all.begin() + f.num_warmups);
  const std::vector<bench::BenchRequest> measured(all.begin() + f.num_warmups, all.end());
  KILN_ASSIGN_OR_RETURN(json sweep, bench::run_sweep(sw, f.load, so, warmups, measured));
  sweep["config"] = config_json(f);
  KILN_RETURN_IF_ERROR(write_json((fs::path(sw.result_dir) / "sweep.json").string(), sweep));
  std::printf("%-14s %12s %12s %14s %8s %s\n", sw.request_rates.empty() ? "concurrency" : "rate (req/s)", "achieved",
              "out tok/s", sweep["slo"]["key"].get<std::string>().c_str(), "errors", "meets");
  int64_t errors = 0;
  for (const json& p : sweep["points"]) {
    const json& v = sw.request_rates.empty() ? p["max_concurrency"] : p["request_rate"];
    errors += p["failed"].get<int64_t>();
    std::printf("%-14g %12.2f %12.1f %14.1f %8lld %s\n", v.get<double>(), p["request_throughput"].get<double>(),
                p["output_throughput"].get<double>(), p[sweep["slo"]["key"].get<std::string>()].get<double>(),
                static_cast<long long>(p["failed"].get<int64_t>()), p["meets_slo"].get<bool>() ? "yes" : "no");
  }
  if (sweep["best"].is_null()) std::printf("no point meets the cutoff\n");
  else std::printf("best: %s\n", sweep["best"].dump().c_str());
  std::printf("wrote %s/{sweep.json,sweep.csv,latency.svg,token_latency.svg}\n", sw.result_dir.c_str());
  if (errors > 0) *exit_code = 1;
  return ok_status();
}

struct LatencyFlags {
  std::string model, device = "cpu", load_format = "auto", dtype = "bf16", output_json;
  bench::LatencyOptions options;
  int64_t moe_top_k = 0;
  QuantFlags quant;
};

Status run_bench_latency(const LatencyFlags& f) {
  if (f.device != "cpu" && f.device != "cuda") return invalid_argument("--device " + f.device + " (supported: cpu, cuda)");
  if (f.load_format != "auto" && f.load_format != "dummy")
    return invalid_argument("--load-format " + f.load_format + " (supported: auto, dummy)");
  ModelOptions mo;
  mo.device = f.device == "cuda" ? Device::kCuda : Device::kCpu;
  mo.moe_top_k = f.moe_top_k;
  KILN_ASSIGN_OR_RETURN(DType dtype, apply_quant_flags(f.quant, f.dtype, DType::kBF16, &mo));
  LoadedModel loaded;
  if (f.load_format == "dummy") {
    if (f.model.empty()) return invalid_argument("--load-format dummy needs --model DIR (a directory with config.json)");
    KILN_ASSIGN_OR_RETURN(loaded, load_config_only(f.model));
    mo.dummy_weights = true;
  } else {
    const std::string path = f.model.empty() ? default_model_path() : f.model;
    log_info("loading ", path);
    KILN_ASSIGN_OR_RETURN(loaded, load_model(path, mo.device == Device::kCuda ? DType::kBF16 : dtype));
  }
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, create_model(std::move(loaded), mo));
  auto run = bench::run_latency(*model, f.options);
  if (!run.ok())
    return run.status().with_context("--batch-size " + std::to_string(f.options.batch_size) + " --input-len " +
                                     std::to_string(f.options.input_len) + " --output-len " + std::to_string(f.options.output_len));
  auto iterations = std::move(run).value();
  json j = bench::latency_json(iterations, f.options);
  j["device"] = f.device;
  j["quantization"] = mo.fp8_weights ? "fp8" : "none";
  j["kv_cache_dtype"] = mo.fp8_kv_cache ? "fp8" : "auto";
  j["load_format"] = f.load_format;
  j["model"] = f.model.empty() ? default_model_path() : f.model;
  bench::print_latency(j, stdout);
  if (!f.output_json.empty()) KILN_RETURN_IF_ERROR(write_json(f.output_json, j));
  return ok_status();
}

void add_serve_flags(CLI::App* c, ServeFlags& f) {
  c->add_option("--base-url", f.base_url, "Server URL, e.g. http://127.0.0.1:8000 (default: from --host and --port)");
  c->add_option("--host", f.host, "Server host")->capture_default_str();
  c->add_option("--port", f.port, "Server port")->capture_default_str();
  c->add_option("--endpoint", f.endpoint, "API path (default: /v1/completions, or /v1/chat/completions for openai-chat)");
  c->add_option("--backend", f.backend, "openai (completions) or openai-chat")->capture_default_str();
  c->add_option("--api-key", f.api_key, "Bearer token (default: $OPENAI_API_KEY)");
  c->add_option("--model", f.model, "Model name in the requests (default: the server's first /v1/models entry)");
  c->add_option("--tokenizer", f.tokenizer, "Tokenizer for synthetic prompts: a .gguf or HF directory (default: kiln's default model)");
  c->add_option("--dataset-name", f.dataset_name, "random (synthetic) or jsonl (custom)")->capture_default_str();
  c->add_option("--dataset-path", f.dataset_path, "JSONL file: {\"prompt\": ...} or {\"messages\": [...]}, optional \"output_tokens\"");
  c->add_option("--random-input-len", f.workload.input_len, "Prompt tokens")->capture_default_str();
  c->add_option("--random-output-len", f.workload.output_len, "Output tokens")->capture_default_str();
  c->add_option("--random-range-ratio", f.workload.range_ratio, "Lengths uniform in [len*(1-r), len*(1+r)]")->capture_default_str()->check(finite_range(0.0, 1.0));
  c->add_option("--shared-prefix-len,--random-prefix-len", f.workload.shared_prefix_len, "Tokens every prompt shares (prefix caching)");
  c->add_flag("--ignore-eos,!--no-ignore-eos", f.workload.ignore_eos, "Fixed output length: ignore_eos and min_tokens (default on)");
  c->add_option("--temperature", f.temperature, "Sampling temperature (default: the server's)")->check(finite_range(0.0, 100.0));
  c->add_option("--extra-body", f.workload.extra_body, "JSON object merged into every request body");
  c->add_option("--num-prompts", f.load.num_prompts, "Requests to send (with --duration: the pool cycled through)")->capture_default_str();
  c->add_option("--duration", f.load.duration_s, "Seconds to send for (instead of --num-prompts requests)")->check(finite_positive());
  c->add_option("--num-warmups", f.num_warmups, "Warm-up requests before measuring (not counted)")->capture_default_str();
  c->add_option("--burstiness", f.load.burstiness, "Gamma shape of the gaps (1: Poisson)")->capture_default_str()->check(finite_positive());
  c->add_option("--arrival-distribution", f.arrivals, "poisson (gamma), uniform or constant")->capture_default_str();
  c->add_option("--max-concurrency", f.load.max_concurrency, "Requests in flight at most (with inf rate: closed loop)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30));
  c->add_option("--seed", f.workload.seed, "Seed for prompts, lengths and arrivals")->capture_default_str();
  c->add_option("--request-timeout", f.load.request_timeout_s, "Seconds without a byte before a request fails")->capture_default_str()->check(finite_positive());
  c->add_option("--percentile-metrics", f.percentile_metrics, "Metrics to print: ttft,tpot,itl,lpt,e2el")->capture_default_str();
  c->add_option("--metric-percentiles", f.metric_percentiles, "Percentiles to report")->capture_default_str();
  c->add_option("--goodput", f.goodput, "SLOs as vLLM writes them: ttft:MS tpot:MS e2el:MS");
  c->add_option("--slo", f.slo, "SLOs for goodput: ttft=MS,tpot=MS,e2el=MS,lpt=MS");
  c->add_option("--result-dir", f.result_dir, "Where result files go");
  c->add_option("--label", f.label, "Name of this run in charts");
  c->add_flag("--no-progress", f.no_progress, "No progress lines on stderr");
  c->add_flag("--no-keep-alive", f.no_keep_alive, "A new connection per request (default: reuse idle ones)");
  c->add_option("--model-config", f.model_config, "The served model's config.json (or its directory): report model FLOPs utilisation");
  c->add_option("--model-moe-top-k", f.moe_top_k, "Experts per token the server runs (MoE; 0 = the config's), for the FLOPs")
      ->check(CLI::Range(int64_t{0}, int64_t{1024}));
  c->add_option("--peak-tflops", f.peak_tflops, "Dense GEMM ceiling of the served dtype, for MFU (e.g. gpu_ceilings.py's; 0: none)")
      ->check(finite_range(0.0, 1e9));
}

}  // namespace

void register_bench_command(CLI::App& app, int* exit_code) {
  CLI::App* bench = app.add_subcommand("bench", "Benchmarks: serve, sweep, plot, latency");
  bench->require_subcommand(1);

  auto sf = std::make_shared<ServeFlags>();
  CLI::App* serve = bench->add_subcommand("serve", "Load an OpenAI-compatible server and report latency and throughput");
  add_serve_flags(serve, *sf);
  serve->add_option("--request-rate", sf->request_rate, "Requests/second (inf: all at once)")->capture_default_str();
  serve->add_option("--result-filename", sf->result_filename, "Result JSON file name in --result-dir");
  serve->add_flag("--save-result", sf->save_result, "Write the result JSON (also implied by --result-dir)");
  serve->add_flag("--save-detailed", sf->save_detailed, "Add per-request arrays to the result JSON");
  serve->callback([sf, exit_code] {
    Status s = run_bench_serve(*sf, exit_code);
    if (!s.ok()) {
      std::fprintf(stderr, "kiln bench serve: %s\n", s.to_string().c_str());
      *exit_code = 1;
    }
  });

  auto wf = std::make_shared<ServeFlags>();
  CLI::App* sweep = bench->add_subcommand("sweep", "Serve benchmarks over several rates or concurrencies; JSON, CSV, SVG charts");
  add_serve_flags(sweep, *wf);
  sweep->add_option("--request-rates", wf->request_rates, "Open-loop rates, e.g. 1,2,4,8");
  sweep->add_option("--concurrencies", wf->concurrencies, "Closed-loop concurrencies, e.g. 1,4,16");
  sweep->add_option("--slo-metric", wf->slo_metric, "ttft, tpot, itl, lpt or e2el")->capture_default_str();
  sweep->add_option("--slo-percentile", wf->slo_percentile, "Percentile held to the cutoff")->capture_default_str()->check(finite_range(0.0, 100.0, true));
  sweep->add_option("--slo-cutoff-ms", wf->slo_cutoff_ms, "Cutoff in ms (0: none)")->capture_default_str()->check(finite_range(0.0, 1e12));
  sweep->callback([wf, exit_code] {
    Status s = run_bench_sweep(*wf, exit_code);
    if (!s.ok()) {
      std::fprintf(stderr, "kiln bench sweep: %s\n", s.to_string().c_str());
      *exit_code = 1;
    }
  });

  auto files = std::make_shared<std::vector<std::string>>();
  auto plot_dir = std::make_shared<std::string>(".");
  auto plot_pct = std::make_shared<double>(99);
  CLI::App* plot = bench->add_subcommand("plot", "Charts of sweep results, one curve per file");
  plot->add_option("files", *files, "sweep.json files (or bench serve results)")->required();
  plot->add_option("-o,--output-dir", *plot_dir, "Where latency.svg and token_latency.svg go")->capture_default_str();
  plot->add_option("--percentile", *plot_pct, "Latency percentile to draw")->capture_default_str();
  plot->callback([files, plot_dir, plot_pct, exit_code] {
    auto written = bench::plot_sweep_files(*files, *plot_pct, *plot_dir);
    if (!written.ok()) {
      std::fprintf(stderr, "kiln bench plot: %s\n", written.status().to_string().c_str());
      *exit_code = 1;
      return;
    }
    for (const std::string& p : *written) std::printf("wrote %s\n", p.c_str());
  });

  auto lf = std::make_shared<LatencyFlags>();
  CLI::App* lat = bench->add_subcommand("latency", "The model in-process: prefill and decode-step times for one batch shape");
  lat->add_option("-m,--model", lf->model, "Model file or directory (default: SmolLM2-135M)");
  lat->add_option("--device", lf->device, "cpu or cuda")->capture_default_str();
  lat->add_option("--load-format", lf->load_format, "auto, or dummy (random weights from config.json)")->capture_default_str();
  lat->add_option("--dtype", lf->dtype, "Weight dtype on the CPU: f32, bf16, f16, or fp8 (= --quantization fp8)")->capture_default_str();
  add_quant_flags(lat, lf->quant);
  lat->add_option("--moe-top-k", lf->moe_top_k, "Experts per token (MoE; 0 = the model's)")->check(CLI::Range(int64_t{0}, int64_t{1024}));
  lat->add_option("--batch-size", lf->options.batch_size, "Sequences")->capture_default_str();
  lat->add_option("--input-len", lf->options.input_len, "Prompt tokens per sequence")->capture_default_str();
  lat->add_option("--output-len", lf->options.output_len, "Output tokens per sequence")->capture_default_str();
  lat->add_option("--num-iters", lf->options.num_iters, "Measured iterations")->capture_default_str();
  lat->add_option("--num-iters-warmup", lf->options.num_iters_warmup, "Warm-up iterations")->capture_default_str();
  lat->add_option("--max-prefill-tokens", lf->options.max_prefill_tokens, "Tokens per prefill forward")->capture_default_str();
  lat->add_option("--output-json", lf->output_json, "Write the results here");
  lat->callback([lf, exit_code] {
    Status s = run_bench_latency(*lf);
    if (!s.ok()) {
      std::fprintf(stderr, "kiln bench latency: %s\n", s.to_string().c_str());
      *exit_code = 1;
    }
  });
}

}  // namespace kiln::apps
