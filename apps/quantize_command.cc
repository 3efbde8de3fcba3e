// `kiln quantize`: any model kiln loads (HF directory or GGUF) -> an fp8 Hugging Face checkpoint
// (models/fp8_checkpoint.h): fp8 e4m3 linear weights with per-channel (default) or per-tensor
// scales, the rest bf16, optional static KV cache scales (calibrated on a text, or one value).
// The source is loaded in f32, so weights are quantized from their full-precision values.
#include <cstdint>
#include <cstdio>
#include <unistd.h>
#include <fstream>
#include <sstream>

#include "apps/commands.h"
#include "apps/default_model.h"
#include "kiln/core/log.h"
#include "kiln/eval/input_hessians.h"
#include "kiln/eval/kv_scale_calibration.h"
#include "kiln/io/model_loader.h"
#include "kiln/models/fp8_checkpoint.h"
#include "kiln/models/model.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::apps {
namespace {

struct QuantizeFlags {
  std::string model, out_dir, kv_cache_scales, calib_file, method = "rtn";
  int64_t calib_tokens = 0;  // 0: 512 for KV cache scales, 4096 for GPTQ
  int64_t calib_skip = 0, calib_window = 512;
  bool per_tensor = false;
};

// A one-line progress bar on stderr, redrawn in place.
class ProgressBar {
 public:
  // bytes: done / total are bytes (shown in MiB), else counts (tokens).
  explicit ProgressBar(const char* what, bool bytes = true) : what_(what), bytes_(bytes), tty_(isatty(fileno(stderr)) != 0) {}
  void update(int64_t done, int64_t total) {
    int pct = total > 0 ? static_cast<int>(done * 100 / total) : 100;
    if (!tty_ && pct < 100) pct -= pct % 10;  // logs and pipes: a line per 10%, not a redraw per 1%
    if (pct == last_) return;
    last_ = pct;
    char bar[31];
    for (int i = 0; i < 30; ++i) bar[i] = i < pct * 30 / 100 ? '#' : '.';
    bar[30] = '\0';
    const double unit = bytes_ ? 1 << 20 : 1;
    std::fprintf(stderr, tty_ ? "\r%s [%s] %3d%% (%.*f / %.*f %s)" : "%s [%s] %3d%% (%.*f / %.*f %s)\n", what_, bar, pct, bytes_ ? 1 : 0,
                 static_cast<double>(done) / unit, bytes_ ? 1 : 0, static_cast<double>(total) / unit, bytes_ ? "MiB" : "tokens");
    if (pct == 100 && tty_) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  }

 private:
  const char* what_;
  bool bytes_;
  bool tty_;
  int last_ = -1;
};

Result<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found(path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// --calib-file's tokens [calib_skip, calib_skip + tokens), at most `cap`.
Result<std::vector<int32_t>> calib_tokens(const QuantizeFlags& f, const LoadedModel& m, int64_t tokens, int64_t cap) {
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, load_tokenizer(m));
  KILN_ASSIGN_OR_RETURN(std::string text, read_file(f.calib_file));
  KILN_ASSIGN_OR_RETURN(std::vector<int32_t> ids, tok->encode(text, true));
  if (f.calib_skip >= static_cast<int64_t>(ids.size()))
    return invalid_argument("--calib-skip " + std::to_string(f.calib_skip) + ": " + f.calib_file + " has only " + std::to_string(ids.size()) + " tokens");
  ids.erase(ids.begin(), ids.begin() + f.calib_skip);
  ids.resize(static_cast<size_t>(std::min<int64_t>({static_cast<int64_t>(ids.size()), tokens, cap})));
  return ids;
}

// GPTQ's input Hessians over --calib-file (windows of --calib-window tokens).
Status gptq_hessians(const QuantizeFlags& f, const std::string& path, Fp8CheckpointOptions* o) {
  if (f.method == "rtn") return ok_status();
  if (f.method != "gptq") return invalid_argument("--method " + f.method + ": expected rtn or gptq");
  if (f.calib_file.empty()) return invalid_argument("--method gptq needs --calib-file TEXT");
  KILN_ASSIGN_OR_RETURN(LoadedModel m, load_model(path, DType::kF32));
  KILN_ASSIGN_OR_RETURN(std::vector<int32_t> ids, calib_tokens(f, m, f.calib_tokens > 0 ? f.calib_tokens : 4096, INT64_MAX));
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, create_model(std::move(m)));
  std::fprintf(stderr, "GPTQ: collecting input Hessians on %zu tokens of %s\n", ids.size(), f.calib_file.c_str());
  ProgressBar bar("calibrating", false);
  KILN_ASSIGN_OR_RETURN(o->hessians, eval::collect_input_hessians(*model, ids, f.calib_window, [&](int64_t d, int64_t t) { bar.update(d, t); }));
  return ok_status();
}

// Per-layer KV cache scales: none, one value for every layer, or calibrated on --calib-file.
Status kv_scales(const QuantizeFlags& f, const std::string& path, Fp8CheckpointOptions* o) {
  if (f.kv_cache_scales.empty()) return ok_status();
  if (f.kv_cache_scales != "calibrate") {
    char* end = nullptr;
    const float s = std::strtof(f.kv_cache_scales.c_str(), &end);
    if (*end != '\0' || !(s > 0.0f)) return invalid_argument("--kv-cache-scales " + f.kv_cache_scales + ": expected calibrate or a number > 0");
    KILN_ASSIGN_OR_RETURN(LoadedModel m, load_model(path, DType::kF32));
    o->k_scales.assign(static_cast<size_t>(m.config.num_layers), s);
    o->v_scales = o->k_scales;
    return ok_status();
  }
  if (f.calib_file.empty()) return invalid_argument("--kv-cache-scales calibrate needs --calib-file TEXT");
  KILN_ASSIGN_OR_RETURN(LoadedModel m, load_model(path, DType::kF32));
  KILN_ASSIGN_OR_RETURN(std::vector<int32_t> ids, calib_tokens(f, m, f.calib_tokens > 0 ? f.calib_tokens : 512, m.config.max_position_embeddings));
  const int64_t n = static_cast<int64_t>(ids.size());
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, create_model(std::move(m)));
  std::fprintf(stderr, "calibrating KV cache scales on %lld tokens of %s\n", static_cast<long long>(n), f.calib_file.c_str());
  KILN_ASSIGN_OR_RETURN(eval::KvScales s, eval::calibrate_kv_scales(*model, ids));
  o->k_scales = s.k;
  o->v_scales = s.v;
  for (size_t l = 0; l < s.k.size(); ++l) log_info("layer ", l, ": k_scale ", s.k[l], ", v_scale ", s.v[l]);
  return ok_status();
}

Status run_quantize(const QuantizeFlags& f) {
  const std::string path = f.model.empty() ? default_model_path() : f.model;
  Fp8CheckpointOptions o;
  o.per_tensor = f.per_tensor;
  KILN_RETURN_IF_ERROR(kv_scales(f, path, &o));
  KILN_RETURN_IF_ERROR(gptq_hessians(f, path, &o));
  ProgressBar load_bar("loading   "), write_bar("quantizing");
  KILN_ASSIGN_OR_RETURN(LoadedModel m, load_model(path, DType::kF32, [&](int64_t d, int64_t t) { load_bar.update(d, t); }));
  KILN_RETURN_IF_ERROR(write_fp8_checkpoint(m, o, f.out_dir, [&](int64_t d, int64_t t) { write_bar.update(d, t); }));
  std::printf("wrote %s: fp8 e4m3 weights (%s scales, %s)%s, %s\n", f.out_dir.c_str(), f.per_tensor ? "per-tensor" : "per-channel",
              o.hessians.empty() ? "rounded to nearest" : "GPTQ",
              o.k_scales.empty() ? "" : ", KV cache scales", m.gguf ? "tokenizer.gguf from the GGUF metadata" : "tokenizer files copied");
  return ok_status();
}

}  // namespace

void register_quantize_command(CLI::App& app, int* exit_code) {
  auto f = std::make_shared<QuantizeFlags>();
  CLI::App* cmd = app.add_subcommand("quantize", "Write an fp8 (e4m3) copy of a model as a Hugging Face directory");
  cmd->add_option("-m,--model", f->model, "Model: a .gguf file or a Hugging Face directory (default: SmolLM2-135M)");
  cmd->add_option("-o,--output", f->out_dir, "Output directory (model.safetensors, config.json, tokenizer)")->required();
  cmd->add_flag("--per-tensor", f->per_tensor, "One scale per weight matrix (vLLM 'fp8' format) instead of per output channel");
  cmd->add_option("--kv-cache-scales", f->kv_cache_scales,
                  "Write fp8 KV cache scales: calibrate (amax/448 over --calib-file) or one number for every layer");
  cmd->add_option("--method", f->method, "Weight rounding: rtn (round to nearest) or gptq (needs --calib-file)")
      ->capture_default_str();
  cmd->add_option("--calib-file", f->calib_file, "Text to calibrate on (KV cache scales, GPTQ)");
  cmd->add_option("--calib-tokens", f->calib_tokens, "Tokens of --calib-file to run (default: 512 for KV cache scales, 4096 for GPTQ)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--calib-skip", f->calib_skip, "Tokens at the start of --calib-file to skip (keep calibration text apart from evaluation text)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--calib-window", f->calib_window, "GPTQ: tokens per calibration sequence")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->callback([f, exit_code] {
    Status s = run_quantize(*f);
    if (!s.ok()) {
      std::fprintf(stderr, "kiln quantize: %s\n", s.to_string().c_str());
      *exit_code = 1;
    }
  });
}

}  // namespace kiln::apps
