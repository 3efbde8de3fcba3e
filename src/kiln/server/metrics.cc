// Metrics rendering: one HELP/TYPE block per family, every sample labelled with the model name.
#include "kiln/server/metrics.h"

#include <cstdio>

namespace kiln::server {
namespace {

class Writer {
 public:
  explicit Writer(std::string model) : labels_("model_name=\"" + escape(model) + "\"") {}

  void family(const char* name, const char* type, const char* help) {
    out_ += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  }
  void sample(const std::string& name, double value, const std::string& extra_labels = "") {
    out_ += name + "{" + labels_ + (extra_labels.empty() ? "" : "," + extra_labels) + "} " + number(value) + "\n";
  }
  void gauge(const char* name, const char* help, double value) {
    family(name, "gauge", help);
    sample(name, value);
  }
  void counter(const char* name, const char* help, double value) {
    family(name, "counter", help);
    sample(name, value);
  }
  void histogram(const char* name, const char* help, const Histogram& h) {
    family(name, "histogram", help);
    int64_t cumulative = 0;
    for (size_t i = 0; i < h.bounds().size(); ++i) {
      cumulative += h.counts()[i];
      sample(std::string(name) + "_bucket", static_cast<double>(cumulative), "le=\"" + number(h.bounds()[i]) + "\"");
    }
    sample(std::string(name) + "_bucket", static_cast<double>(h.count()), "le=\"+Inf\"");
    sample(std::string(name) + "_sum", h.sum());
    sample(std::string(name) + "_count", static_cast<double>(h.count()));
  }
  std::string take() { return std::move(out_); }

 private:
  static std::string number(double v) {
    char b[64];
    std::snprintf(b, sizeof b, "%.10g", v);
    return b;
  }
  static std::string escape(const std::string& s) {
    std::string o;
    for (char c : s) {
      if (c == '\\' || c == '"') o += '\\';
      if (c == '\n') { o += "\\n"; continue; }
      o += c;
    }
    return o;
  }
  std::string labels_, out_;
};

}  // namespace

std::string render_metrics(const EngineStats& e, const ServerStats& s, const std::string& model_name) {
  Writer w(model_name);
  w.gauge("kiln_num_requests_running", "Sequences in the running batch.", static_cast<double>(e.num_running));
  w.gauge("kiln_num_requests_waiting", "Sequences waiting to be scheduled (preempted ones included).", static_cast<double>(e.num_waiting));
  w.gauge("kiln_kv_cache_usage_perc", "Fraction of KV cache blocks in use (0 to 1).",
          e.num_blocks > 0 ? 1.0 - static_cast<double>(e.num_free_blocks) / static_cast<double>(e.num_blocks) : 0.0);
  w.gauge("kiln_kv_cache_free_blocks", "Free KV cache blocks (cached prefix blocks that can be reclaimed included).",
          static_cast<double>(e.num_free_blocks));
  w.gauge("kiln_kv_cache_total_blocks", "KV cache blocks in the pool.", static_cast<double>(e.num_blocks));
  w.gauge("kiln_kv_cache_block_size", "Tokens per KV cache block.", static_cast<double>(e.block_size));
  w.gauge("kiln_http_requests_in_flight", "Completion and chat requests being answered.", static_cast<double>(s.in_flight_requests));
  w.counter("kiln_prompt_tokens_total", "Prompt tokens received.", static_cast<double>(e.prompt_tokens_total));
  w.counter("kiln_generation_tokens_total", "Tokens generated.", static_cast<double>(e.generation_tokens_total));
  w.counter("kiln_prefix_cache_hit_tokens_total", "Prompt tokens served from the prefix cache.",
            static_cast<double>(e.cached_prompt_tokens_total));
  w.counter("kiln_num_preemptions_total", "Sequences preempted (to be recomputed) for lack of KV blocks.",
            static_cast<double>(e.preemptions_total));
  w.counter("kiln_engine_steps_total", "Engine steps run.", static_cast<double>(e.steps_total));
  w.counter("kiln_engine_forward_seconds_total", "Engine thread time inside the model's forward pass (device work, synchronized).",
            e.forward_seconds_total);
  w.counter("kiln_engine_step_seconds_total", "Engine thread time in steps (forward, scheduling, sampling, output).",
            e.step_seconds_total);
  w.family("kiln_request_success_total", "counter", "Requests finished, by finish reason.");
  const char* reasons[] = {"stop", "length", "abort", "error"};
  for (int r = 1; r <= 4; ++r)
    w.sample("kiln_request_success_total", static_cast<double>(e.finished_total[static_cast<size_t>(r)]),
             std::string("finished_reason=\"") + reasons[r - 1] + "\"");
  w.counter("kiln_http_requests_total", "Completion and chat requests received.", static_cast<double>(s.requests_total));
  w.counter("kiln_http_client_errors_total", "Requests answered with a 4xx status.", static_cast<double>(s.client_errors_total));
  w.counter("kiln_http_disconnects_total", "Clients that went away before their answer ended.", static_cast<double>(s.disconnects_total));
  w.histogram("kiln_time_to_first_token_seconds", "Time from arrival to the first generated token.", e.time_to_first_token);
  w.histogram("kiln_inter_token_latency_seconds", "Time between consecutive tokens of a request.", e.inter_token_latency);
  w.histogram("kiln_e2e_request_latency_seconds", "Time from arrival to the last token.", e.e2e_latency);
  w.histogram("kiln_iteration_tokens", "Tokens per engine step.", e.batch_tokens);
  return w.take();
}

}  // namespace kiln::server
