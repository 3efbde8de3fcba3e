// `kiln serve`: load a model, start the engine loop and the OpenAI-compatible HTTP server; on
// SIGTERM or SIGINT stop accepting, finish the requests in flight, and exit (a second signal
// exits at once).
#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "apps/commands.h"
#include "apps/default_model.h"
#include "apps/flag_ranges.h"
#include "apps/model_flags.h"
#include "kiln/core/host_memory.h"
#include "kiln/core/log.h"
#include "kiln/engine/engine.h"
#include "kiln/io/model_loader.h"
#include "kiln/server/http_server.h"
#include "kiln/server/openai_server.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::apps {
namespace {

struct ServeFlags {
  std::string model, host = "127.0.0.1", api_key, dtype = "bf16", device = "cpu", served_model_name;
  int port = 8000, http_threads = 2;
  int64_t max_num_seqs = 0, max_model_len = 0, num_kv_blocks = 0, max_num_batched_tokens = 0;
  double kv_cache_gib = 0;  // 0: not given (the CPU: 1 GiB; the GPU: see run_serve)
  bool no_prefix_caching = false, no_warmup = false;
  int64_t moe_top_k = 0;
  QuantFlags quant;
  std::string load_format = "auto", tokenizer;
};

// "SmolLM2-135M-Instruct.Q4_1" for ".../SmolLM2-135M-Instruct.Q4_1.gguf", the folder name for a directory.
std::string model_name_of(const std::string& path) {
  std::filesystem::path p(path);
  while (!p.empty() && !p.has_filename()) p = p.parent_path();
  return p.extension() == ".gguf" ? p.stem().string() : p.filename().string();
}

std::string gib_text(double gib) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", gib);
  return buf;
}

Status run_serve(const ServeFlags& f) {
  if (f.device != "cpu" && f.device != "cuda") return invalid_argument("--device " + f.device + ": expected cpu or cuda");
  ModelOptions options;
  options.device = f.device == "cuda" ? Device::kCuda : Device::kCpu;
  options.moe_top_k = f.moe_top_k;
  KILN_ASSIGN_OR_RETURN(DType dtype, apply_quant_flags(f.quant, f.dtype, DType::kBF16, &options));
  const std::string path = f.model.empty() ? default_model_path() : f.model;
  log_info("loading ", path);
  if (f.load_format != "auto" && f.load_format != "dummy")
    return invalid_argument("--load-format " + f.load_format + " (supported: auto, dummy)");
  if (f.load_format == "dummy" && f.tokenizer.empty())
    return invalid_argument("--load-format dummy reads only config.json: give a --tokenizer (a .gguf or HF directory)");
  LoadedModel loaded;
  if (f.load_format == "dummy") {
    KILN_ASSIGN_OR_RETURN(loaded, load_config_only(path));
    options.dummy_weights = true;
  } else {
    KILN_ASSIGN_OR_RETURN(loaded, load_model(path, options.device == Device::kCuda ? DType::kBF16 : dtype));
  }
  std::unique_ptr<Tokenizer> tokenizer;
  if (!f.tokenizer.empty()) {
    KILN_ASSIGN_OR_RETURN(tokenizer, load_tokenizer(f.tokenizer));
  } else {
    KILN_ASSIGN_OR_RETURN(tokenizer, load_tokenizer(loaded));
  }
  if (tokenizer->vocab_size() > loaded.config.vocab_size)
    return invalid_argument("tokenizer has " + std::to_string(tokenizer->vocab_size()) + " tokens, the model's vocabulary " +
                            std::to_string(loaded.config.vocab_size));
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, create_model(std::move(loaded), options));
  EngineConfig ec;
  // Default batch: 64 sequences on the CPU; 256 on the GPU (vLLM's default; decode graphs run at
  // rounded batch sizes, so a wide range of them stays cheap).
  ec.max_num_seqs = f.max_num_seqs > 0 ? f.max_num_seqs : options.device == Device::kCuda ? 256 : 64;
  // Default step budget: 512 tokens on the CPU; 2048 on the GPU (what docs/perf.md's sweeps ran).
  ec.max_num_batched_tokens = f.max_num_batched_tokens > 0 ? f.max_num_batched_tokens : options.device == Device::kCuda ? 2048 : 512;
  ec.num_kv_blocks = f.num_kv_blocks;
  const double kv_gib = f.kv_cache_gib > 0 ? f.kv_cache_gib : 1.0;
  const std::string kv_flag = "--kv-cache-gib " + gib_text(kv_gib);
  // --kv-cache-gib given (or the CPU): Engine::create sizes the cache from kv_cache_bytes in blocks
  // of the model's KV dtype; past device memory the allocation fails with the flag named below.
  if (options.device == Device::kCuda && ec.num_kv_blocks <= 0 && f.kv_cache_gib <= 0) {
    // The GPU cache is bf16 and sized from the memory left after the weights (90% of it).
    const int64_t max_len = f.max_model_len > 0 ? f.max_model_len : model->config().max_position_embeddings;
    const int64_t want = ec.max_num_seqs * ((max_len + 15) / 16);
    ec.num_kv_blocks = std::max<int64_t>(1, std::min(want, model->max_kv_blocks(16, 0.9)));
  }
  ec.kv_cache_bytes = static_cast<int64_t>(kv_gib * double(int64_t{1} << 30));
  ec.max_model_len = f.max_model_len;
  ec.prefix_caching = !f.no_prefix_caching;
  if (options.device == Device::kCpu && ec.num_kv_blocks == 0)
    KILN_RETURN_IF_ERROR(check_fits_host_memory(static_cast<double>(ec.kv_cache_bytes), kv_flag + ": the CPU KV cache"));
  Result<std::unique_ptr<Engine>> created = Engine::create(std::move(model), tokenizer.get(), ec);
  if (!created.ok() && f.num_kv_blocks > 0) return created.status().with_context("--num-kv-blocks " + std::to_string(f.num_kv_blocks));
  if (!created.ok() && options.device == Device::kCuda && f.kv_cache_gib > 0)
    return created.status().with_context(kv_flag);
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, std::move(created));
  // The GPU's first steps pay one-time costs (buffers, GEMM plans, graph capture): pay them here.
  if (options.device == Device::kCuda && !f.no_warmup) KILN_RETURN_IF_ERROR(engine->warm_up());
  engine->start();

  server::OpenAiServerOptions so;
  so.model_name = f.served_model_name.empty() ? model_name_of(path) : f.served_model_name;
  so.model_aliases = {path, model_name_of(path)};
  so.api_key = f.api_key;
  server::OpenAiServer api(*engine, *tokenizer, so);
  server::HttpServerOptions ho;
  ho.num_threads = f.http_threads;
  server::HttpServer http([&api](server::HttpRequest r, std::shared_ptr<server::HttpResponder> w) { api.handle(std::move(r), std::move(w)); },
                          ho);
  KILN_RETURN_IF_ERROR(http.listen(f.host, f.port));
  bool draining = false;
  http.on_signal([&](int sig) {
    if (draining) {
      log_warn("signal ", sig, " again: stopping now");
      return http.stop();
    }
    draining = true;
    log_info("signal ", sig, ": no new connections; finishing ", api.stats().in_flight_requests, " requests in flight");
    http.stop_accepting();
    api.drain([&http] { http.stop_when_idle(); });
  });
  std::printf("kiln serve: listening on http://%s:%d (model '%s')\n", f.host.c_str(), http.port(), so.model_name.c_str());
  std::fflush(stdout);
  http.run();
  engine->stop();  // before the server's connections go away: the engine thread posts to them
  log_info("kiln serve: stopped");
  return ok_status();
}

}  // namespace

void register_serve_command(CLI::App& app, int* exit_code) {
  auto f = std::make_shared<ServeFlags>();
  CLI::App* cmd = app.add_subcommand("serve", "Serve a model over an OpenAI-compatible HTTP API");
  cmd->add_option("-m,--model", f->model, "Model: a .gguf file or a Hugging Face directory (default: SmolLM2-135M)");
  cmd->add_option("--host", f->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", f->port, "Port (0: any free port, printed at start)")->capture_default_str()->check(CLI::Range(0, 65535));
  cmd->add_option("--api-key", f->api_key, "Require 'Authorization: Bearer KEY' on /v1 routes");
  cmd->add_option("--served-model-name", f->served_model_name, "Model name in the API (default: the file's name)");
  cmd->add_option("--max-num-seqs", f->max_num_seqs, "Sequences per batch at most (default 64 on the CPU, 256 on the GPU)")
      ->check(CLI::Range(int64_t{1}, int64_t{4096}));
  cmd->add_option("--max-model-len", f->max_model_len, "Prompt + completion tokens at most (0: the model's context)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-num-batched-tokens", f->max_num_batched_tokens,
                  "Tokens per engine step at most (prefill chunk budget; default 512 on the CPU, 2048 on the GPU)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--num-kv-blocks", f->num_kv_blocks, "KV cache blocks of 16 tokens (0: sized by --kv-cache-gib)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--kv-cache-gib", f->kv_cache_gib,
                  "KV cache memory when --num-kv-blocks is 0 (default: 1 on the CPU; on the GPU room for --max-num-seqs full "
                  "contexts within 90% of the memory left after the weights)")
      ->check(finite_range(0.001, 1024.0));
  cmd->add_flag("--no-prefix-caching", f->no_prefix_caching, "Do not share KV blocks between requests with a common prefix");
  cmd->add_flag("--no-warmup", f->no_warmup,
                "GPU: skip the start-up warm-up (a full step of prompt + 8 decode steps, then a full batch of one-token requests)");
  cmd->add_option("--dtype", f->dtype, "Weight / compute dtype on the CPU: f32, bf16, f16, or fp8 (= --quantization fp8)")->capture_default_str();
  add_quant_flags(cmd, f->quant);
  cmd->add_option("--moe-top-k", f->moe_top_k, "Experts per token (MoE; 0 = the model's)")->check(CLI::Range(int64_t{0}, int64_t{1024}));
  cmd->add_option("--device", f->device, "cpu or cuda")->capture_default_str();
  cmd->add_option("--load-format", f->load_format, "auto, or dummy (random weights from the --model directory's config.json)")->capture_default_str();
  cmd->add_option("--tokenizer", f->tokenizer, "Tokenizer from elsewhere: a .gguf (vocab-only works) or an HF directory");
  cmd->add_option("--http-threads", f->http_threads, "Threads serving connections")->capture_default_str()->check(CLI::Range(1, 64));
  cmd->callback([f, exit_code] {
    Status s = run_serve(*f);
    if (!s.ok()) {
      std::fprintf(stderr, "kiln serve: %s\n", s.to_string().c_str());
      *exit_code = 1;
    }
  });
}

}  // namespace kiln::apps
