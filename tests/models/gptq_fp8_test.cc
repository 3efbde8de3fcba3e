// GPTQ for fp8 weights: the input Hessian against a plain double sum, GPTQ == round-to-nearest
// when inputs are uncorrelated, a smaller layer-output error than round-to-nearest on correlated
// inputs (same scales), dead input columns, clear errors; and the calibration over a checkpoint
// (shared Hessians, token counts) through write_fp8_checkpoint.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include <unistd.h>

#include "kiln/core/dtype.h"
#include "kiln/eval/input_hessians.h"
#include "kiln/io/model_loader.h"
#include "kiln/kernels/quantize.h"
#include "kiln/models/fp8_checkpoint.h"
#include "kiln/models/gptq_fp8.h"
#include "kiln/models/model.h"

namespace kiln {
namespace {

HostTensor random_matrix(int64_t rows, int64_t cols, std::mt19937& rng, float sigma = 1.0f) {
  std::normal_distribution<float> normal(0.0f, sigma);
  HostTensor t = HostTensor::zeros(DType::kF32, {rows, cols});
  for (int64_t i = 0; i < rows * cols; ++i) t.tensor.ptr<float>()[i] = normal(rng);
  return t;
}

// x = z a + 0.05 noise: inputs whose columns are strongly correlated (as LLM activations are).
HostTensor correlated_inputs(int64_t rows, int64_t cols, std::mt19937& rng) {
  const int64_t rank = cols / 4;
  HostTensor z = random_matrix(rows, rank, rng), a = random_matrix(rank, cols, rng), x = random_matrix(rows, cols, rng, 0.05f);
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t c = 0; c < cols; ++c) {
      float s = 0;
      for (int64_t r = 0; r < rank; ++r) s += z.tensor.ptr<float>()[t * rank + r] * a.tensor.ptr<float>()[r * cols + c];
      x.tensor.ptr<float>()[t * cols + c] += s;
    }
  return x;
}

InputHessian hessian_of(const HostTensor& x) {
  InputHessian h(x.tensor.shape[1]);
  EXPECT_TRUE(h.add(x.tensor).ok());
  return h;
}

// sum over rows t and outputs r of ((w - dequant(q)) x_t)_r^2
double output_error(const HostTensor& w, const Fp8Weights& q, const HostTensor& x) {
  const int64_t n = w.tensor.shape[0], k = w.tensor.shape[1], rows = x.tensor.shape[0];
  const bool per_tensor = q.scale.tensor.numel() == 1;
  double total = 0;
  for (int64_t r = 0; r < n; ++r) {
    const float s = q.scale.tensor.ptr<float>()[per_tensor ? 0 : r];
    for (int64_t t = 0; t < rows; ++t) {
      double e = 0;
      for (int64_t c = 0; c < k; ++c)
        e += (double(w.tensor.ptr<float>()[r * k + c]) - double(fp8_e4m3_to_f32(q.q.tensor.ptr<uint8_t>()[r * k + c])) * s) *
             x.tensor.ptr<float>()[t * k + c];
      total += e * e;
    }
  }
  return total;
}

TEST(InputHessian, MatchesDoubleSumAndAccumulates) {
  std::mt19937 rng(11);
  const HostTensor x1 = random_matrix(37, 24, rng), x2 = random_matrix(5, 24, rng);
  InputHessian h(24);
  ASSERT_TRUE(h.add(x1.tensor).ok());
  ASSERT_TRUE(h.add(x2.tensor).ok());
  EXPECT_EQ(h.samples, 42);
  for (int64_t i = 0; i < 24; ++i)
    for (int64_t j = 0; j < 24; ++j) {
      double want = 0;
      for (const HostTensor* x : {&x1, &x2})
        for (int64_t t = 0; t < x->tensor.shape[0]; ++t) want += double(x->tensor.ptr<float>()[t * 24 + i]) * x->tensor.ptr<float>()[t * 24 + j];
      EXPECT_NEAR(h.h[static_cast<size_t>(i * 24 + j)], want, 1e-4 * (1 + std::fabs(want))) << i << "," << j;
    }
  EXPECT_FALSE(h.add(random_matrix(3, 23, rng).tensor).ok());
}

TEST(GptqFp8, UncorrelatedInputsGiveRoundToNearest) {
  // A diagonal H (any values: act order permutes) leaves no error to push: RTN exactly.
  std::mt19937 rng(12);
  const HostTensor w = random_matrix(16, 32, rng);
  InputHessian h(32);
  h.samples = 1;
  for (int64_t i = 0; i < 32; ++i) h.h[static_cast<size_t>(i * 32 + i)] = 1.0 + i % 7;
  for (bool per_tensor : {false, true}) {
    auto g = quantize_fp8_gptq_cpu(w.tensor, h, {per_tensor});
    auto r = quantize_fp8_weights_cpu(w.tensor, per_tensor);
    ASSERT_TRUE(g.ok() && r.ok()) << g.status().to_string();
    EXPECT_EQ(std::memcmp(g->q.tensor.data, r->q.tensor.data, 16 * 32), 0) << per_tensor;
    EXPECT_EQ(std::memcmp(g->scale.tensor.data, r->scale.tensor.data, static_cast<size_t>(r->scale.tensor.nbytes())), 0);
  }
}

TEST(GptqFp8, SmallerOutputErrorThanRoundToNearestOnCorrelatedInputs) {
  for (int seed = 0; seed < 3; ++seed) {
    std::mt19937 rng(100 + seed);
    const HostTensor w = random_matrix(24, 64, rng), x = correlated_inputs(512, 64, rng), fresh = correlated_inputs(1, 64, rng);
    const InputHessian h = hessian_of(x);
    for (bool per_tensor : {false, true}) {
      auto g = quantize_fp8_gptq_cpu(w.tensor, h, {per_tensor});
      auto r = quantize_fp8_weights_cpu(w.tensor, per_tensor);
      ASSERT_TRUE(g.ok() && r.ok()) << g.status().to_string();
      EXPECT_EQ(std::memcmp(g->scale.tensor.data, r->scale.tensor.data, static_cast<size_t>(r->scale.tensor.nbytes())), 0);
      int changed = 0;
      for (int64_t i = 0; i < 24 * 64; ++i) {
        const uint8_t b = g->q.tensor.ptr<uint8_t>()[i];
        EXPECT_NE(b & 0x7f, 0x7f) << "NaN code at " << i;
        changed += b != r->q.tensor.ptr<uint8_t>()[i];
      }
      EXPECT_GT(changed, 0);
      const double eg = output_error(w, *g, x), er = output_error(w, *r, x);
      EXPECT_LT(eg, 0.7 * er) << "seed " << seed << " per_tensor " << per_tensor;
    }
  }
}

TEST(GptqFp8, DeadInputColumnsAndBadArguments) {
  std::mt19937 rng(13);
  const HostTensor w = random_matrix(8, 16, rng);
  HostTensor x = correlated_inputs(64, 16, rng);
  for (int64_t t = 0; t < 64; ++t) x.tensor.ptr<float>()[t * 16 + 5] = 0.0f;  // column 5 never used
  auto g = quantize_fp8_gptq_cpu(w.tensor, hessian_of(x), {});
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  for (int64_t r = 0; r < 8; ++r) EXPECT_EQ(g->q.tensor.ptr<uint8_t>()[r * 16 + 5], 0) << r;
  EXPECT_FALSE(quantize_fp8_gptq_cpu(w.tensor, InputHessian(15), {}).ok());  // wrong k
  EXPECT_FALSE(quantize_fp8_gptq_cpu(w.tensor, InputHessian(16), {}).ok());  // no samples
}

TEST(InputHessians, CalibrationOverACheckpointFeedsTheWriter) {
  const std::string dir = std::string(KILN_SOURCE_DIR) + "/tests/golden/llama3";
  auto loaded = load_model(dir, DType::kF32);
  ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
  const ModelConfig c = loaded->config;
  auto model = create_model(std::move(loaded).value());
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  std::vector<int32_t> tokens;
  for (int i = 0; i < 50; ++i) tokens.push_back((i * 37 + 3) % static_cast<int>(c.vocab_size));
  int64_t last = 0;
  auto hs = eval::collect_input_hessians(**model, tokens, 32, [&](int64_t d, int64_t) { last = d; });
  ASSERT_TRUE(hs.ok()) << hs.status().to_string();
  EXPECT_EQ(last, 50);
  EXPECT_EQ(static_cast<int64_t>(hs->size()), 7 * c.num_layers);  // q k v o gate up down
  const auto& q = hs->at("model.layers.1.self_attn.q_proj.weight");
  EXPECT_EQ(q.get(), hs->at("model.layers.1.self_attn.v_proj.weight").get());
  EXPECT_EQ(q->samples, 50);  // windows of 32 + 18
  EXPECT_EQ(hs->at("model.layers.0.mlp.down_proj.weight")->k, c.intermediate_size);
  EXPECT_GT(q->h[0], 0.0);

  auto src = load_model(dir, DType::kF32);
  ASSERT_TRUE(src.ok());
  const Tensor* down = src->find("model.layers.0.mlp.down_proj.weight");
  ASSERT_NE(down, nullptr);
  auto want = quantize_fp8_gptq_cpu(*down, *hs->at("model.layers.0.mlp.down_proj.weight"), {});
  ASSERT_TRUE(want.ok());
  Fp8CheckpointOptions o;
  o.hessians = *hs;
  const std::string out = ::testing::TempDir() + "/kiln_gptq_" + std::to_string(::getpid());
  ASSERT_TRUE(write_fp8_checkpoint(*src, o, out).ok());
  auto back = load_model(out, DType::kF32);
  ASSERT_TRUE(back.ok()) << back.status().to_string();
  const Tensor* got = back->find("model.layers.0.mlp.down_proj.weight");
  ASSERT_NE(got, nullptr);
  EXPECT_EQ(std::memcmp(got->data, want->q.tensor.data, static_cast<size_t>(want->q.tensor.nbytes())), 0);
  std::filesystem::remove_all(out);
}

TEST(InputHessians, MixtralExpertsSeeTheirRoutedTokens) {
  const std::string dir = std::string(KILN_SOURCE_DIR) + "/tests/golden/mixtral";
  auto loaded = load_model(dir, DType::kF32);
  ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
  const ModelConfig c = loaded->config;
  ASSERT_GT(c.num_experts, 0);
  auto model = create_model(std::move(loaded).value());
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  std::vector<int32_t> tokens;
  for (int i = 0; i < 40; ++i) tokens.push_back((i * 53 + 11) % static_cast<int>(c.vocab_size));
  auto hs = eval::collect_input_hessians(**model, tokens, 16);
  ASSERT_TRUE(hs.ok()) << hs.status().to_string();
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    EXPECT_EQ(hs->count(p + "mlp.gate_proj.weight"), 0u);
    EXPECT_EQ(hs->at(p + "self_attn.q_proj.weight")->samples, 40);
    int64_t routed = 0;
    for (int64_t e = 0; e < c.num_experts; ++e) {
      const std::string x = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
      auto w1 = hs->find(x + "w1.weight");
      if (w1 == hs->end()) {  // no token routed here
        EXPECT_EQ(hs->count(x + "w2.weight"), 0u);
        continue;
      }
      EXPECT_EQ(w1->second.get(), hs->at(x + "w3.weight").get());
      EXPECT_EQ(w1->second->k, c.hidden_size);
      const auto& w2 = hs->at(x + "w2.weight");
      EXPECT_EQ(w2->k, c.intermediate_size);
      EXPECT_EQ(w2->samples, w1->second->samples);
      routed += w1->second->samples;
    }
    EXPECT_EQ(routed, 40 * c.num_experts_per_tok) << "layer " << l;
  }
}

}  // namespace
}  // namespace kiln
