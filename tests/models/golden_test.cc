// Models against golden logits from Hugging Face transformers (scripts/make_golden.py): tiny
// random Llama 3 (rope scaling), sharded tied Llama, Qwen2 (qkv bias), Mistral and Mixtral
// checkpoints, SmolLM2-135M from its GGUF, and an upcycled Mixtral built from SmolLM2 whose
// identical experts must reproduce the dense logits.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>

#include "kiln/engine/generator.h"
#include "kiln/io/model_loader.h"
#include "kiln/io/safetensors.h"
#include "kiln/models/model.h"

namespace kiln {
namespace {

const std::string kGolden = std::string(KILN_SOURCE_DIR) + "/tests/golden/";

std::string smollm2_path() {
  if (const char* m = std::getenv("KILN_MODEL")) return m;
  const char* d = std::getenv("KILN_MODEL_DIR");
  const std::string dir = d ? d : std::string(std::getenv("HOME") ? std::getenv("HOME") : ".") + "/.cache/kiln/models";
  return dir + "/SmolLM2-135M-Instruct.Q4_1.gguf";
}

std::vector<int32_t> ids_of(const SafetensorsFile& f, const std::string& name) {
  const SafetensorsTensor* t = f.find(name);
  if (!t) return {};
  const int32_t* p = reinterpret_cast<const int32_t*>(t->data);
  return std::vector<int32_t>(p, p + t->nbytes / 4);
}

// Per-dtype tolerances: the weights of the tiny checkpoints are bf16, so f32 and bf16 loads are
// the same numbers; f16 rounds them again.
struct Tolerance { DType dtype; double max_abs; double min_top1; };
const Tolerance kTiny[] = {{DType::kF32, 1e-4, 1.0}, {DType::kBF16, 1e-4, 1.0}, {DType::kF16, 1e-3, 1.0}};

struct Comparison { double max_abs = 0, top1 = 0; };

Comparison compare_rows(const float* got, const float* want, int64_t rows, int64_t vocab) {
  Comparison c;
  int agree = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = got + r * vocab;
    const float* w = want + r * vocab;
    for (int64_t i = 0; i < vocab; ++i) c.max_abs = std::max(c.max_abs, std::fabs(double(g[i]) - w[i]));
    agree += std::max_element(g, g + vocab) - g == std::max_element(w, w + vocab) - w;
  }
  c.top1 = double(agree) / double(rows);
  return c;
}

class TinyGolden : public ::testing::TestWithParam<const char*> {};

TEST_P(TinyGolden, LogitsAndGreedyMatchTransformers) {
  const std::string dir = kGolden + GetParam();
  auto golden = SafetensorsFile::open(dir + "/golden.safetensors");
  ASSERT_TRUE(golden.ok()) << golden.status().to_string();
  const std::vector<int32_t> ids = ids_of(*golden, "input_ids"), greedy = ids_of(*golden, "greedy");
  const SafetensorsTensor* want = golden->find("logits");
  ASSERT_TRUE(want && !ids.empty() && !greedy.empty());
  for (const Tolerance& tol : kTiny) {
    auto loaded = load_model(dir, tol.dtype);
    ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
    auto model = create_model(std::move(loaded).value());
    ASSERT_TRUE(model.ok()) << model.status().to_string();
    const int64_t vocab = (*model)->config().vocab_size;
    // Prefill in chunks of 5 so the paged cache and chunked prefill are exercised.
    auto logits = prompt_logits(**model, ids, 5);
    ASSERT_TRUE(logits.ok()) << logits.status().to_string();
    const Comparison c = compare_rows(logits->tensor.ptr<float>(), reinterpret_cast<const float*>(want->data),
                                      static_cast<int64_t>(ids.size()), vocab);
    std::printf("golden %s %s: max |logit err| %.2e, top-1 agreement %.3f\n", GetParam(),
                std::string(dtype_name(tol.dtype)).c_str(), c.max_abs, c.top1);
    EXPECT_LE(c.max_abs, tol.max_abs) << GetParam() << " " << dtype_name(tol.dtype);
    EXPECT_GE(c.top1, tol.min_top1) << GetParam() << " " << dtype_name(tol.dtype);
    if (tol.dtype == DType::kF16) continue;
    GenerateOptions go;
    go.max_new_tokens = static_cast<int64_t>(greedy.size());
    go.prefill_chunk = 3;
    auto gen = generate(**model, std::vector<int32_t>(ids.begin(), ids.begin() + 8), go);
    ASSERT_TRUE(gen.ok()) << gen.status().to_string();
    EXPECT_EQ(gen->tokens, greedy) << GetParam() << " " << dtype_name(tol.dtype);
  }
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, TinyGolden,
                         ::testing::Values("llama3", "llama_tied_sharded", "qwen2", "mistral", "mixtral"));

TEST(SmolLM2Golden, LogitsArgmaxAndGreedy32) {
  const std::string path = smollm2_path();
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " missing (run scripts/setup.sh)";
  auto golden = SafetensorsFile::open(kGolden + "smollm2/golden.safetensors");
  ASSERT_TRUE(golden.ok()) << golden.status().to_string();
  auto loaded = load_model(path, DType::kF32);
  ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
  auto model = create_model(std::move(loaded).value());
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  const int64_t vocab = (*model)->config().vocab_size;
  for (int p = 0; p < 2; ++p) {
    const std::string s = std::to_string(p);
    const auto ids = ids_of(*golden, "input_ids_" + s), argmax = ids_of(*golden, "argmax_" + s);
    const auto positions = ids_of(*golden, "positions_" + s), greedy = ids_of(*golden, "greedy_" + s);
    const SafetensorsTensor* want = golden->find("logits_" + s);
    ASSERT_TRUE(want && !ids.empty());
    auto logits = prompt_logits(**model, ids, 7);
    ASSERT_TRUE(logits.ok()) << logits.status().to_string();
    for (size_t t = 0; t < ids.size(); ++t) {
      const float* row = logits->tensor.ptr<float>() + static_cast<int64_t>(t) * vocab;
      EXPECT_EQ(std::max_element(row, row + vocab) - row, argmax[t]) << "prompt " << p << " position " << t;
    }
    for (size_t i = 0; i < positions.size(); ++i) {
      const Comparison c = compare_rows(logits->tensor.ptr<float>() + positions[i] * vocab,
                                        reinterpret_cast<const float*>(want->data) + static_cast<int64_t>(i) * vocab, 1, vocab);
      std::printf("smollm2 prompt %d position %d: max |logit err| %.2e\n", p, positions[i], c.max_abs);
      EXPECT_LE(c.max_abs, 1e-3) << "prompt " << p << " position " << positions[i];
    }
    GenerateOptions go;
    go.max_new_tokens = static_cast<int64_t>(greedy.size());
    auto gen = generate(**model, ids, go);
    ASSERT_TRUE(gen.ok()) << gen.status().to_string();
    EXPECT_EQ(gen->tokens, greedy) << "prompt " << p;
  }
}

// SmolLM2 turned into a Mixtral with 4 identical experts (copies of the dense MLP) and a random
// router: whatever the routing, the renormalized expert mix equals the dense MLP.
TEST(UpcycledMixtral, ReproducesDenseSmolLM2) {
  const std::string path = smollm2_path();
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " missing (run scripts/setup.sh)";
  auto dense_loaded = load_model(path, DType::kF32);
  ASSERT_TRUE(dense_loaded.ok()) << dense_loaded.status().to_string();
  auto moe_loaded = load_model(path, DType::kF32);
  ASSERT_TRUE(moe_loaded.ok());
  LoadedModel& m = *moe_loaded;
  m.config.arch = Arch::kMixtral;
  m.config.num_experts = 4;
  m.config.num_experts_per_tok = 2;
  std::mt19937 rng(11);
  std::normal_distribution<float> dist(0.f, 1.f);
  const int64_t h = m.config.hidden_size;
  for (int64_t l = 0; l < m.config.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const std::pair<const char*, const char*> map[] = {{"gate_proj", "w1"}, {"up_proj", "w3"}, {"down_proj", "w2"}};
    for (auto [dense, expert] : map) {
      const Tensor& src = m.weights.at(p + "mlp." + dense + ".weight").tensor;
      for (int e = 0; e < 4; ++e) {
        HostTensor copy = HostTensor::zeros(src.dtype, {src.shape[0], src.shape[1]});
        std::memcpy(copy.tensor.data, src.data, static_cast<size_t>(src.nbytes()));
        m.weights[p + "block_sparse_moe.experts." + std::to_string(e) + "." + expert + ".weight"] = std::move(copy);
      }
      m.weights.erase(p + "mlp." + dense + ".weight");
    }
    HostTensor router = HostTensor::zeros(DType::kF32, {4, h});
    for (int64_t i = 0; i < 4 * h; ++i) router.tensor.ptr<float>()[i] = dist(rng);
    m.weights[p + "block_sparse_moe.gate.weight"] = std::move(router);
  }
  auto dense = create_model(std::move(dense_loaded).value());
  auto moe = create_model(std::move(m));
  ASSERT_TRUE(dense.ok() && moe.ok()) << moe.status().to_string();
  const std::vector<int32_t> ids = {504, 3458, 282, 4649, 314, 7042, 30, 378, 3458, 282, 6318, 314};
  auto a = prompt_logits(**dense, ids), b = prompt_logits(**moe, ids);
  ASSERT_TRUE(a.ok() && b.ok());
  const Comparison c = compare_rows(b->tensor.ptr<float>(), a->tensor.ptr<float>(), static_cast<int64_t>(ids.size()),
                                    (*dense)->config().vocab_size);
  std::printf("upcycled mixtral vs dense: max |logit err| %.2e, top-1 agreement %.3f\n", c.max_abs, c.top1);
  EXPECT_LE(c.max_abs, 1e-3);
  EXPECT_EQ(c.top1, 1.0);
}

}  // namespace
}  // namespace kiln
