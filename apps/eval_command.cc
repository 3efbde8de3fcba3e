// `kiln eval kl`: KL divergence of a test model (fp8 weights, fp8 KV cache, another checkpoint)
// against a baseline over a text file, llama.cpp `perplexity --kl-divergence` style
// (src/kiln/eval/kl_eval.h says which tokens are scored). Progress on stderr; results on stdout,
// the last line machine-readable: "@@ eval_kl {json}".
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "apps/default_model.h"
#include "apps/model_flags.h"
#include "kiln/core/log.h"
#include "kiln/eval/kl_eval.h"
#include "kiln/io/model_loader.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::apps {
namespace {

struct ModelSide {
  std::string model, dtype, device;
  QuantFlags quant;
  int64_t moe_top_k = 0;
};

struct EvalKlFlags {
  std::string file;
  bool file_ids = false;  // the file holds token ids, not text
  ModelSide base{"", "f32", "", {}, 0}, test{"", "f32", "cpu", {}, 0};
  eval::KlEvalOptions options;
};

// Token ids separated by spaces, commas or newlines.
Result<std::vector<int32_t>> parse_ids(const std::string& text, const std::string& path) {
  std::vector<int32_t> ids;
  std::string item;
  std::stringstream ss(text);
  while (ss >> item) {
    std::stringstream parts(item);
    std::string id;
    while (std::getline(parts, id, ',')) {
      if (id.empty()) continue;
      char* end = nullptr;
      const long v = std::strtol(id.c_str(), &end, 10);
      if (*end != '\0' || v < 0 || v > INT32_MAX) return invalid_argument(path + ": '" + id + "' is not a token id");
      ids.push_back(static_cast<int32_t>(v));
    }
  }
  return ids;
}

Result<std::unique_ptr<Model>> build(const ModelSide& s, const std::string& path) {
  ModelOptions o;
  o.device = s.device == "cuda" ? Device::kCuda : Device::kCpu;
  if (s.device != "cpu" && s.device != "cuda") return invalid_argument("--device " + s.device + " (supported: cpu, cuda)");
  o.moe_top_k = s.moe_top_k;
  KILN_ASSIGN_OR_RETURN(DType dtype, apply_quant_flags(s.quant, s.dtype, DType::kF32, &o));
  KILN_ASSIGN_OR_RETURN(LoadedModel m, load_model(path, o.device == Device::kCuda ? DType::kBF16 : dtype));
  return create_model(std::move(m), o);
}

std::string describe(const ModelSide& s, const std::string& path) {
  std::string d = path + " " + s.device + " " + (s.device == "cuda" ? "bf16" : s.dtype);
  if (s.quant.quantization == "fp8" || s.dtype == "fp8") d += s.quant.fp8_per_tensor ? " fp8-weights(per-tensor)" : " fp8-weights";
  if (s.quant.fp8_activations) d += " fp8-activations";
  if (s.quant.kv_cache_dtype != "auto") d += " kv-" + s.quant.kv_cache_dtype;
  return d;
}

Status run_eval_kl(EvalKlFlags f) {
  const std::string base_path = f.base.model.empty() ? default_model_path() : f.base.model;
  const std::string test_path = f.test.model.empty() ? base_path : f.test.model;
  if (f.base.device.empty()) f.base.device = f.test.device;
  std::ifstream in(f.file, std::ios::binary);
  if (!in) return not_found(f.file + ": cannot open");
  std::stringstream text;
  text << in.rdbuf();
  std::vector<int32_t> tokens;
  if (f.file_ids) {
    KILN_ASSIGN_OR_RETURN(tokens, parse_ids(text.str(), f.file));
  } else {
    KILN_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, load_tokenizer(base_path));
    KILN_ASSIGN_OR_RETURN(tokens, tok->encode(text.str(), false));
    if (tok->adds_bos() && tok->bos_id() >= 0) f.options.bos_id = tok->bos_id();
  }
  std::fprintf(stderr, "eval kl: %s: %zu tokens; base: %s; test: %s\n", f.file.c_str(), tokens.size(),
               describe(f.base, base_path).c_str(), describe(f.test, test_path).c_str());
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<Model> base, build(f.base, base_path));
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<Model> test, build(f.test, test_path));
  auto progress = [](int64_t done, int64_t total, const eval::KlSummary& s) {
    std::fprintf(stderr, "[%lld/%lld] tokens %lld  ppl base %.4f test %.4f  mean KL %.6f  top-1 %.2f%%\n",
                 static_cast<long long>(done), static_cast<long long>(total), static_cast<long long>(s.tokens), s.ppl_base,
                 s.ppl_test, s.mean_kl, 100.0 * s.top1_agreement);
  };
  KILN_ASSIGN_OR_RETURN(eval::KlSummary s, eval::run_kl_eval(*base, *test, tokens, f.options, progress));
  std::printf("scored tokens      %lld (%s of each %lld-token window)\n", static_cast<long long>(s.tokens),
              f.options.score_all ? "all but the last" : "second half", static_cast<long long>(f.options.ctx));
  std::printf("PPL(base)          %.6f\nPPL(test)          %.6f\n", s.ppl_base, s.ppl_test);
  std::printf("mean KL(base||test) %.6g\nmedian KL          %.6g\np99 KL             %.6g\nmax KL             %.6g\n",
              s.mean_kl, s.median_kl, s.p99_kl, s.max_kl);
  std::printf("top-1 agreement    %.4f%%\n", 100.0 * s.top1_agreement);
  const nlohmann::json j = {{"file", f.file}, {"ctx", f.options.ctx}, {"tokens", s.tokens},
                            {"base", describe(f.base, base_path)}, {"test", describe(f.test, test_path)},
                            {"ppl_base", s.ppl_base}, {"ppl_test", s.ppl_test}, {"mean_kl", s.mean_kl},
                            {"median_kl", s.median_kl}, {"p99_kl", s.p99_kl}, {"max_kl", s.max_kl},
                            {"top1_agreement", s.top1_agreement}};
  std::printf("@@ eval_kl %s\n", j.dump().c_str());
  return ok_status();
}

}  // namespace

void register_eval_command(CLI::App& app, int* exit_code) {
  CLI::App* eval = app.add_subcommand("eval", "Model quality evaluations: kl");
  eval->require_subcommand(1);
  auto f = std::make_shared<EvalKlFlags>();
  CLI::App* kl = eval->add_subcommand("kl", "KL divergence, perplexity and top-1 agreement of a test model vs a baseline");
  kl->add_option("-m,--model", f->base.model, "Baseline model: .gguf or HF directory (default: SmolLM2-135M)");
  kl->add_option("--test-model", f->test.model, "Test model (default: the baseline's file, with the test options)");
  kl->add_option("--file", f->file, "Text file to evaluate on")->required();
  kl->add_flag("--file-ids", f->file_ids, "--file holds token ids (spaces, commas or newlines between them), not text");
  kl->add_option("--ctx", f->options.ctx, "Tokens per window")->capture_default_str()->check(CLI::Range(int64_t{4}, int64_t{1} << 20));
  kl->add_option("--chunks", f->options.chunks, "Windows to evaluate (0: all)")->capture_default_str()->check(CLI::NonNegativeNumber);
  kl->add_flag("--score-all", f->options.score_all, "Score every position but the last (default: the second half, as llama.cpp)");
  kl->add_option("--device", f->test.device, "Test model device: cpu or cuda")->capture_default_str();
  kl->add_option("--dtype", f->test.dtype, "Test model CPU compute dtype: f32, bf16, f16, or fp8 (= --quantization fp8)")->capture_default_str();
  add_quant_flags(kl, f->test.quant);
  kl->add_option("--moe-top-k", f->test.moe_top_k, "Test model experts per token (0 = the model's)")->check(CLI::Range(int64_t{0}, int64_t{1024}));
  kl->add_option("--base-device", f->base.device, "Baseline device (default: --device)");
  kl->add_option("--base-dtype", f->base.dtype, "Baseline CPU compute dtype")->capture_default_str();
  add_quant_flags(kl, f->base.quant, "base-");
  kl->add_option("--base-moe-top-k", f->base.moe_top_k, "Baseline experts per token (0 = the model's)")->check(CLI::Range(int64_t{0}, int64_t{1024}));
  kl->callback([f, exit_code] {
    Status s = run_eval_kl(*f);
    if (!s.ok()) {
      std::fprintf(stderr, "kiln eval kl: %s\n", s.to_string().c_str());
      *exit_code = 1;
    }
  });
}

}  // namespace kiln::apps
