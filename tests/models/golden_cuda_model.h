// The GPU model tests' shared set-up: whether a GPU is there, and a golden model on it.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <initializer_list>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "kiln/engine/generator.h"
#include "kiln/io/model_loader.h"
#include "kiln/io/safetensors.h"
#include "kiln/models/model.h"
#ifdef KILN_WITH_CUDA
#include "kiln/kernels/cuda/common/device_buffer.h"
#endif

namespace kiln {

inline bool have_gpu() {
#ifdef KILN_WITH_CUDA
  return cuda_available();
#else
  return false;
#endif
}

// rel_err: max |got - want| / max |want|; mean_rel_err: the mean |got - want| over all logits / max
// |want|; top1: the rows whose argmax agrees.
struct Agreement { double rel_err = 0, mean_rel_err = 0, top1 = 0; };

inline Agreement agree(const float* got, const float* want, int64_t rows, int64_t vocab) {
  Agreement a;
  double err = 0, sum = 0, mag = 0;
  int same = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = got + r * vocab;
    const float* w = want + r * vocab;
    for (int64_t i = 0; i < vocab; ++i) {
      const double e = std::fabs(double(g[i]) - w[i]);
      err = std::max(err, e);
      sum += e;
      mag = std::max(mag, std::fabs(double(w[i])));
    }
    same += std::max_element(g, g + vocab) - g == std::max_element(w, w + vocab) - w;
  }
  a.rel_err = err / std::max(mag, 1e-6);
  a.mean_rel_err = sum / double(std::max<int64_t>(rows * vocab, 1)) / std::max(mag, 1e-6);
  a.top1 = double(same) / double(rows);
  return a;
}

// The model in dir on the GPU: bf16 weights, or fp8 quantized at load.
inline Result<std::unique_ptr<Model>> cuda_model_from(const std::string& dir, bool fp8_weights) {
  KILN_ASSIGN_OR_RETURN(LoadedModel loaded, load_model(dir, DType::kBF16));
  ModelOptions o;
  o.device = Device::kCuda;
  o.fp8_weights = fp8_weights;
  return create_model(std::move(loaded), o);
}

// The golden model tests/golden/NAME in bf16 on the GPU.
inline Result<std::unique_ptr<Model>> golden_cuda_model(const char* name) {
  KILN_ASSIGN_OR_RETURN(LoadedModel loaded, load_model(std::string(KILN_SOURCE_DIR) + "/tests/golden/" + name, DType::kBF16));
  ModelOptions o;
  o.device = Device::kCuda;
  return create_model(std::move(loaded), o);
}

// The golden Mixtral with a context of 1024 (its config says 256), for prompts that take the grouped
// MoE path at 1024 slots: its files linked into a temporary folder, config.json rewritten. Returns
// the folder.
inline Result<std::string> golden_mixtral_ctx1024() {
  const std::filesystem::path src = std::filesystem::path(KILN_SOURCE_DIR) / "tests/golden/mixtral";
  const std::filesystem::path tmp = std::filesystem::path(::testing::TempDir()) / "kiln_mixtral_ctx1024";
  std::filesystem::remove_all(tmp);
  std::filesystem::create_directories(tmp);
  for (const auto& f : std::filesystem::directory_iterator(src))
    if (f.path().filename() != "config.json") std::filesystem::create_symlink(f.path(), tmp / f.path().filename());
  std::ifstream in(src / "config.json");
  std::string config((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string key = "\"max_position_embeddings\": 256";
  const size_t at = config.find(key);
  if (at == std::string::npos) return internal_error("golden mixtral config lacks " + key);
  config.replace(at, key.size(), "\"max_position_embeddings\": 1024");
  std::ofstream(tmp / "config.json") << config;
  return tmp.string();
}

// The golden Mixtral's prompt (from dir's golden.safetensors) repeated 22 times, 528 tokens, run
// in chunks of 512 (1024 (token, expert) slots: the grouped MoE path, x quantized once before the
// offsets reach the host) through a fresh fp8 model per mode, with the environment variable `env`
// set to the mode, `passes` times each: the logits in that order. `env` is unset after.
inline Result<std::vector<HostTensor>> mixtral_chunk512_logits(const std::string& dir, const char* env,
                                                               std::initializer_list<const char*> modes, int passes) {
  KILN_ASSIGN_OR_RETURN(SafetensorsFile golden, SafetensorsFile::open(dir + "/golden.safetensors"));
  const SafetensorsTensor* ids_t = golden.find("input_ids");
  if (ids_t == nullptr) return internal_error("golden.safetensors lacks input_ids");
  const int32_t* ids = reinterpret_cast<const int32_t*>(ids_t->data);
  std::vector<int32_t> prompt;
  for (int r = 0; r < 22; ++r) prompt.insert(prompt.end(), ids, ids + ids_t->nbytes / 4);
  std::vector<HostTensor> logits;
  for (const char* mode : modes) {
    setenv(env, mode, 1);
    auto model = cuda_model_from(dir, true);
    if (!model.ok()) return unsetenv(env), model.status();
    for (int pass = 0; pass < passes; ++pass) {
      auto l = prompt_logits(**model, prompt, 512);
      if (!l.ok()) return unsetenv(env), l.status();
      logits.push_back(std::move(l).value());
    }
  }
  unsetenv(env);
  return logits;
}

// "d128": a small Llama with random (--load-format dummy, deterministic) weights whose head_dim 128
// takes the tuned decode attention kernels (split K at a few hundred keys); bf16, or with an fp8 KV
// cache (keys Hadamard-rotated unless rotate_keys is false).
inline Result<std::unique_ptr<Model>> random_cuda_llama_d128(bool fp8_kv = false, bool rotate_keys = true) {
  const std::filesystem::path dir = std::filesystem::path(::testing::TempDir()) / "kiln_random_llama_d128";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "config.json") << R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "vocab_size": 512, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
    "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 128, "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0, "tie_word_embeddings": false})";
  KILN_ASSIGN_OR_RETURN(LoadedModel loaded, load_config_only(dir.string()));
  ModelOptions o;
  o.device = Device::kCuda;
  o.dummy_weights = true;
  o.fp8_kv_cache = fp8_kv;
  o.kv_cache_scale = 0.05f;
  o.fp8_kv_hadamard = rotate_keys;
  return create_model(std::move(loaded), o);
}

}  // namespace kiln
