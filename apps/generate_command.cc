// `kiln generate`: load a model, generate a continuation of a prompt, print it and the speed.
#include <algorithm>
#include <charconv>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>

#include "apps/commands.h"
#include "apps/default_model.h"
#include "apps/flag_ranges.h"
#include "apps/model_flags.h"
#include "kiln/core/log.h"
#include "kiln/engine/generator.h"
#include "kiln/io/model_loader.h"
#include "kiln/tokenizer/chat_template.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::apps {
namespace {

struct GenerateFlags {
  std::string model, prompt, prompt_ids, dtype = "f32", device = "cpu", load_format = "auto";
  int64_t random_prompt_len = 0;
  int64_t n = 64;
  float temperature = 0.f, top_p = 1.f, min_p = 0.f;
  int32_t top_k = 0;
  uint64_t seed = 0;
  bool chat = false;
  int64_t moe_top_k = 0;
  QuantFlags quant;
};

// "1,2,3": every item a whole decimal number in [0, 2^31) (the vocabulary check comes with the model).
Result<std::vector<int32_t>> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const size_t b = item.find_first_not_of(' '), e = item.find_last_not_of(' ');
    const std::string t = b == std::string::npos ? "" : item.substr(b, e - b + 1);
    int64_t v = 0;
    const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
    if (t.empty() || ec != std::errc() || end != t.data() + t.size())
      return invalid_argument("--prompt-ids: '" + item + "' is not an integer token id");
    if (v < 0 || v > std::numeric_limits<int32_t>::max())
      return invalid_argument("--prompt-ids: " + t + " is not a token id (ids are in [0, 2^31))");
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.empty()) return invalid_argument("--prompt-ids: no ids given");
  return ids;
}

Result<std::vector<int32_t>> prompt_tokens(const GenerateFlags& f, const Tokenizer& tok) {
  if (!f.prompt_ids.empty()) return parse_ids(f.prompt_ids);
  if (!f.chat) return tok.encode(f.prompt, true);
  KILN_ASSIGN_OR_RETURN(std::string text, render_chat(tok.chat_template(), {{"user", f.prompt}}, true,
                                                      tok.bos_id() >= 0 ? tok.token_piece(tok.bos_id()) : "",
                                                      tok.eos_ids().empty() ? "" : tok.token_piece(tok.eos_ids()[0])));
  return tok.encode(text, false);
}

// --load-format dummy: only config.json is read; no tokenizer, prompt from ids or random.
Status run_dummy(const GenerateFlags& f, const ModelOptions& options);
void print_speed(const GenerateResult& r);

Status run_generate(const GenerateFlags& f) {
  if (f.device != "cpu" && f.device != "cuda") return invalid_argument("--device " + f.device + " (supported: cpu, cuda)");
  if (f.load_format != "auto" && f.load_format != "dummy")
    return invalid_argument("--load-format " + f.load_format + " (supported: auto, dummy)");
  ModelOptions options;
  KILN_ASSIGN_OR_RETURN(DType dtype, apply_quant_flags(f.quant, f.dtype, DType::kF32, &options));
  options.moe_top_k = f.moe_top_k;
  options.device = f.device == "cuda" ? Device::kCuda : Device::kCpu;
  if (f.load_format == "dummy") return run_dummy(f, options);
  const std::string path = f.model.empty() ? default_model_path() : f.model;
  log_info("loading ", path);
  KILN_ASSIGN_OR_RETURN(LoadedModel loaded, load_model(path, options.device == Device::kCuda ? DType::kBF16 : dtype));
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok, load_tokenizer(loaded));
  KILN_ASSIGN_OR_RETURN(std::vector<int32_t> prompt, prompt_tokens(f, *tok));
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, create_model(std::move(loaded), options));
  GenerateOptions go;
  go.max_new_tokens = f.n;
  go.sampling = {f.temperature, f.top_k, f.top_p, f.min_p, f.seed};
  go.stop_ids = tok->eos_ids();
  std::vector<int32_t> out;
  std::string printed;
  std::fputs(f.prompt_ids.empty() ? f.prompt.c_str() : tok->decode(prompt).c_str(), stdout);
  if (f.chat) std::fputs("\n", stdout);
  std::fflush(stdout);
  auto on_token = [&](int32_t id) {
    out.push_back(id);
    const std::string text = tok->decode(out, true);
    // Print only whole characters: hold back a trailing incomplete UTF-8 sequence.
    size_t end = text.size();
    while (end > 0 && (static_cast<unsigned char>(text[end - 1]) & 0xC0) == 0x80) --end;
    if (end > 0 && static_cast<unsigned char>(text[end - 1]) >= 0xC0) --end;
    if (end > printed.size() && text.compare(0, printed.size(), printed) == 0) {
      std::fwrite(text.data() + printed.size(), 1, end - printed.size(), stdout);
      std::fflush(stdout);
      printed = text.substr(0, end);
    }
  };
  KILN_ASSIGN_OR_RETURN(GenerateResult r, generate(*model, prompt, go, on_token));
  const std::string full = tok->decode(out, true);
  if (full.size() > printed.size()) std::fputs(full.c_str() + printed.size(), stdout);
  std::printf("\n");
  print_speed(r);
  std::string ids;
  for (int32_t id : r.tokens) ids += (ids.empty() ? "" : " ") + std::to_string(id);
  log_debug("generated ids: ", ids);
  return ok_status();
}

void print_speed(const GenerateResult& r) {
  std::fprintf(stderr, "prompt: %lld tokens, %.1f tokens/s | generation: %zu tokens, %.1f tokens/s\n",
               static_cast<long long>(r.prompt_tokens), static_cast<double>(r.prompt_tokens) / r.prefill_seconds,
               r.tokens.size(), static_cast<double>(r.tokens.size() > 1 ? r.tokens.size() - 1 : 0) / r.decode_seconds);
}

Status run_dummy(const GenerateFlags& f, const ModelOptions& base) {
  if (f.model.empty()) return invalid_argument("--load-format dummy needs --model DIR (a directory with config.json)");
  KILN_ASSIGN_OR_RETURN(LoadedModel loaded, load_config_only(f.model));
  ModelOptions options = base;
  options.dummy_weights = true;
  std::vector<int32_t> prompt;
  if (!f.prompt_ids.empty()) {
    KILN_ASSIGN_OR_RETURN(prompt, parse_ids(f.prompt_ids));
  } else {
    for (int64_t i = 0; i < std::max<int64_t>(1, f.random_prompt_len); ++i)
      prompt.push_back(static_cast<int32_t>((i * 7919 + 17) % loaded.config.vocab_size));
  }
  log_info("dummy weights for ", arch_name(loaded.config.arch), ", ", loaded.config.num_layers, " layers");
  KILN_ASSIGN_OR_RETURN(std::unique_ptr<Model> model, create_model(std::move(loaded), options));
  GenerateOptions go;
  go.max_new_tokens = f.n;
  go.sampling = {f.temperature, f.top_k, f.top_p, f.min_p, f.seed};
  go.prefill_chunk = 8192;
  KILN_ASSIGN_OR_RETURN(GenerateResult r, generate(*model, prompt, go));
  std::string ids;
  for (int32_t id : r.tokens) ids += (ids.empty() ? "" : " ") + std::to_string(id);
  std::printf("%s\n", ids.c_str());
  print_speed(r);
  return ok_status();
}

}  // namespace

void register_generate_command(CLI::App& app, int* exit_code) {
  auto flags = std::make_shared<GenerateFlags>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate a continuation of a prompt");
  cmd->add_option("-m,--model", flags->model, "Model: a .gguf file or a Hugging Face directory (default: SmolLM2-135M)");
  CLI::Option* prompt = cmd->add_option("-p,--prompt", flags->prompt, "Prompt text");
  cmd->add_option("--prompt-ids", flags->prompt_ids, "Prompt as comma-separated token ids (instead of text)")->excludes(prompt);
  cmd->add_option("-n,--max-tokens", flags->n, "Tokens to generate")->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option("--temperature", flags->temperature, "Sampling temperature (0 = greedy)")->check(finite_range(0, 100));
  cmd->add_option("--top-k", flags->top_k, "Top-k (0 = off)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--top-p", flags->top_p, "Top-p, in (0, 1] (1 = off)")->check(finite_range(0, 1, /*lo_open=*/true));
  cmd->add_option("--min-p", flags->min_p, "Min-p, in [0, 1] (0 = off)")->check(finite_range(0, 1));
  cmd->add_option("--seed", flags->seed, "Sampling seed");
  cmd->add_option("--dtype", flags->dtype, "Weight / compute dtype on the CPU: f32, bf16, f16, or fp8 (= --quantization fp8 with f32 compute; the GPU computes in bf16)");
  add_quant_flags(cmd, flags->quant);
  cmd->add_option("--device", flags->device, "cpu or cuda");
  cmd->add_option("--load-format", flags->load_format, "auto, or dummy (random weights from config.json; needs --device cuda)");
  cmd->add_option("--random-prompt-len", flags->random_prompt_len, "With dummy weights: prompt length of synthetic ids");
  cmd->add_option("--moe-top-k", flags->moe_top_k, "Experts per token (MoE; 0 = the model's)")->check(CLI::Range(int64_t{0}, int64_t{1024}));
  cmd->add_flag("--chat", flags->chat, "Wrap the prompt in the model's chat template");
  cmd->callback([flags, exit_code] {
    if (flags->prompt.empty() && flags->prompt_ids.empty()) flags->prompt = "Once upon a time";
    Status s = run_generate(*flags);
    if (!s.ok()) {
      std::fprintf(stderr, "kiln generate: %s\n", s.to_string().c_str());
      *exit_code = 1;
    }
  });
}

}  // namespace kiln::apps
