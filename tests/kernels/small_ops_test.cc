// RMSNorm (+ residual), SiLU-mul, embedding, MoE routing and sampling against direct formulas.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

#include "kiln/kernels/activation.h"
#include "kiln/kernels/embedding.h"
#include "kiln/kernels/moe.h"
#include "kiln/kernels/rmsnorm.h"
#include "kiln/kernels/sampling.h"
#include "tests/kernels/kernel_test_util.h"

namespace kiln {
namespace {

TEST(RmsNormCpu, FusedResidual) {
  std::mt19937 rng(3);
  for (DType wt : {DType::kF32, DType::kBF16}) {
    HostTensor x = test::random_tensor(DType::kF32, {3, 40}, rng);
    HostTensor r = test::random_tensor(DType::kF32, {3, 40}, rng);
    HostTensor w = test::random_tensor(wt, {40}, rng);
    HostTensor out = HostTensor::zeros(DType::kF32, {3, 40});
    const auto xf = test::to_f32(x.tensor), rf = test::to_f32(r.tensor), wf = test::to_f32(w.tensor);
    ASSERT_TRUE(rmsnorm_cpu({x.tensor, r.tensor, w.tensor, out.tensor, 1e-6f}).ok());
    for (int t = 0; t < 3; ++t) {
      double ss = 0;
      for (int i = 0; i < 40; ++i) ss += std::pow(double(xf[t * 40 + i]) + rf[t * 40 + i], 2);
      const double inv = 1 / std::sqrt(ss / 40 + 1e-6);
      for (int i = 0; i < 40; ++i) {
        const double sum = double(xf[t * 40 + i]) + rf[t * 40 + i];
        EXPECT_NEAR(r.tensor.ptr<float>()[t * 40 + i], sum, 1e-6);
        EXPECT_NEAR(out.tensor.ptr<float>()[t * 40 + i], sum * inv * wf[i], 1e-5);
      }
    }
  }
}

TEST(SiluMulCpu, Formula) {
  std::mt19937 rng(4);
  HostTensor gu = test::random_tensor(DType::kF32, {2, 2 * 24}, rng);
  HostTensor out = HostTensor::zeros(DType::kF32, {2, 24});
  ASSERT_TRUE(silu_mul_cpu({gu.tensor, out.tensor}).ok());
  for (int t = 0; t < 2; ++t)
    for (int i = 0; i < 24; ++i) {
      const double g = gu.tensor.ptr<float>()[t * 48 + i], u = gu.tensor.ptr<float>()[t * 48 + 24 + i];
      EXPECT_NEAR(out.tensor.ptr<float>()[t * 24 + i], g / (1 + std::exp(-g)) * u, 1e-6);
    }
}

TEST(EmbeddingCpu, GathersAndRejectsBadIds) {
  std::mt19937 rng(6);
  HostTensor table = test::random_tensor(DType::kBF16, {10, 8}, rng);
  std::vector<int32_t> ids = {3, 0, 9};
  HostTensor out = HostTensor::zeros(DType::kF32, {3, 8});
  ASSERT_TRUE(embedding_cpu({Tensor::view(ids.data(), DType::kInt32, {3}), table.tensor, out.tensor}).ok());
  const auto tf = test::to_f32(table.tensor);
  for (int t = 0; t < 3; ++t)
    for (int i = 0; i < 8; ++i) EXPECT_EQ(out.tensor.ptr<float>()[t * 8 + i], tf[static_cast<size_t>(ids[t] * 8 + i)]);
  ids[1] = 10;
  EXPECT_EQ(embedding_cpu({Tensor::view(ids.data(), DType::kInt32, {3}), table.tensor, out.tensor}).code(), StatusCode::kOutOfRange);
}

TEST(MoeRouteCpu, TopKRenormalized) {
  std::vector<float> logits = {0.1f, 2.0f, -1.0f, 1.5f, /**/ 3.f, 3.f, 0.f, -5.f};
  HostTensor ids = HostTensor::zeros(DType::kInt32, {2, 2});
  HostTensor w = HostTensor::zeros(DType::kF32, {2, 2});
  ASSERT_TRUE(moe_route_cpu({Tensor::view(logits.data(), DType::kF32, {2, 4}), ids.tensor, w.tensor, true}).ok());
  EXPECT_EQ(ids.tensor.ptr<int32_t>()[0], 1);
  EXPECT_EQ(ids.tensor.ptr<int32_t>()[1], 3);
  EXPECT_NEAR(w.tensor.ptr<float>()[0], 1 / (1 + std::exp(-0.5)), 1e-6);
  EXPECT_NEAR(w.tensor.ptr<float>()[0] + w.tensor.ptr<float>()[1], 1.0, 1e-6);
  EXPECT_EQ(ids.tensor.ptr<int32_t>()[2], 0);  // tie: lower id first
  EXPECT_EQ(ids.tensor.ptr<int32_t>()[3], 1);
  ASSERT_TRUE(moe_route_cpu({Tensor::view(logits.data(), DType::kF32, {2, 4}), ids.tensor, w.tensor, false}).ok());
  double sm = 0;
  for (int i = 0; i < 4; ++i) sm += std::exp(logits[static_cast<size_t>(i)]);
  EXPECT_NEAR(w.tensor.ptr<float>()[0], std::exp(2.0) / sm, 1e-6);
}

// NaN logits (a broken checkpoint's activations) route to valid experts: the lowest ids, weight 0.
TEST(MoeRouteCpu, NanLogitsStayInRange) {
  const float nan = std::nanf("");
  std::vector<float> logits = {nan, 1.f, nan, 0.f};
  HostTensor ids = HostTensor::zeros(DType::kInt32, {1, 2}), w = HostTensor::zeros(DType::kF32, {1, 2});
  ASSERT_TRUE(moe_route_cpu({Tensor::view(logits.data(), DType::kF32, {1, 4}), ids.tensor, w.tensor, false}).ok());
  for (int j = 0; j < 2; ++j) {
    EXPECT_GE(ids.tensor.ptr<int32_t>()[j], 0);
    EXPECT_LT(ids.tensor.ptr<int32_t>()[j], 4);
  }
  EXPECT_NE(ids.tensor.ptr<int32_t>()[0], ids.tensor.ptr<int32_t>()[1]);
}

// With x and router_weight the logits are computed first (x @ w^T) and written, then routed.
TEST(MoeRouteCpu, RouterGemmInTheSameCall) {
  std::vector<float> x = {1.f, 0.f, 2.f, /**/ 0.f, 1.f, -1.f};             // [2, 3]
  std::vector<float> w = {1.f, 1.f, 0.f, /**/ 0.f, 0.f, 1.f, /**/ -1.f, 2.f, 0.f};  // [3 experts, 3]
  HostTensor logits = HostTensor::zeros(DType::kF32, {2, 3});
  HostTensor ids = HostTensor::zeros(DType::kInt32, {2, 1}), tw = HostTensor::zeros(DType::kF32, {2, 1});
  ASSERT_TRUE(moe_route_cpu({logits.tensor, ids.tensor, tw.tensor, true, Tensor::view(x.data(), DType::kF32, {2, 3}),
                             Tensor::view(w.data(), DType::kF32, {3, 3})}).ok());
  const std::vector<float> want = {1.f, 2.f, -1.f, /**/ 1.f, -1.f, 2.f};
  for (int i = 0; i < 6; ++i) EXPECT_FLOAT_EQ(logits.tensor.ptr<float>()[i], want[static_cast<size_t>(i)]);
  EXPECT_EQ(ids.tensor.ptr<int32_t>()[0], 1);
  EXPECT_EQ(ids.tensor.ptr<int32_t>()[1], 2);
  EXPECT_FLOAT_EQ(tw.tensor.ptr<float>()[0], 1.f);
  EXPECT_FALSE(moe_route_cpu({logits.tensor, ids.tensor, tw.tensor, true, Tensor::view(x.data(), DType::kF32, {2, 3}),
                              Tensor::view(w.data(), DType::kF32, {3, 2})}).ok());
}

TEST(SampleCpu, GreedySeededAndFiltered) {
  std::vector<float> logits = {1.f, 3.f, 2.9f, -2.f, 0.f, 2.8f};
  Tensor l = Tensor::view(logits.data(), DType::kF32, {1, 6});
  HostTensor out = HostTensor::zeros(DType::kInt32, {1});
  ASSERT_TRUE(sample_cpu({l, {SamplingParams{}}, {0}, out.tensor}).ok());
  EXPECT_EQ(out.tensor.ptr<int32_t>()[0], 1);
  std::map<int, int> counts;
  for (uint64_t step = 0; step < 3000; ++step) {
    SamplingParams p{1.0f, 3, 1.0f, 0.f, 42};
    ASSERT_TRUE(sample_cpu({l, {p}, {step}, out.tensor}).ok());
    counts[out.tensor.ptr<int32_t>()[0]]++;
  }
  EXPECT_EQ(counts.size(), 3u);  // only the top 3
  for (int id : {1, 2, 5}) EXPECT_GT(counts[id], 700);
  // top-p 0.5 keeps the two most likely of {3, 2.9, 2.8, ...} (0.35 + 0.32 >= 0.5).
  std::set<int> seen;
  for (uint64_t step = 0; step < 500; ++step) {
    ASSERT_TRUE(sample_cpu({l, {SamplingParams{1.0f, 0, 0.5f, 0.f, 7}}, {step}, out.tensor}).ok());
    seen.insert(out.tensor.ptr<int32_t>()[0]);
  }
  EXPECT_EQ(seen, (std::set<int>{1, 2}));
  // Same seed and step -> same token; min-p 0.99 -> argmax only.
  SamplingParams p{0.7f, 0, 1.f, 0.f, 123};
  ASSERT_TRUE(sample_cpu({l, {p}, {17}, out.tensor}).ok());
  const int first = out.tensor.ptr<int32_t>()[0];
  ASSERT_TRUE(sample_cpu({l, {p}, {17}, out.tensor}).ok());
  EXPECT_EQ(out.tensor.ptr<int32_t>()[0], first);
  ASSERT_TRUE(sample_cpu({l, {SamplingParams{1.f, 0, 1.f, 0.99f, 1}}, {3}, out.tensor}).ok());
  EXPECT_EQ(out.tensor.ptr<int32_t>()[0], 1);
  EXPECT_FALSE(sample_cpu({l, {SamplingParams{1.f, 0, 0.f, 0.f, 1}}, {3}, out.tensor}).ok());
  // Banned tokens count as -inf: greedy moves to the next best; the logits are left as they were.
  ASSERT_TRUE(sample_cpu({l, {SamplingParams{}}, {0}, out.tensor, {{0, 1}}}).ok());
  EXPECT_EQ(out.tensor.ptr<int32_t>()[0], 2);
  ASSERT_TRUE(sample_cpu({l, {SamplingParams{}}, {0}, out.tensor, {{0, 1}, {0, 2}}}).ok());
  EXPECT_EQ(out.tensor.ptr<int32_t>()[0], 5);
  EXPECT_EQ(logits[1], 3.f);
  for (uint64_t step = 0; step < 200; ++step) {
    ASSERT_TRUE(sample_cpu({l, {SamplingParams{1.0f, 3, 1.0f, 0.f, 42}}, {step}, out.tensor, {{0, 2}}}).ok());
    EXPECT_NE(out.tensor.ptr<int32_t>()[0], 2);
  }
  EXPECT_FALSE(sample_cpu({l, {SamplingParams{}}, {0}, out.tensor, {{1, 0}}}).ok());   // no row 1
  EXPECT_FALSE(sample_cpu({l, {SamplingParams{}}, {0}, out.tensor, {{0, 6}}}).ok());   // no token 6
}

}  // namespace
}  // namespace kiln
