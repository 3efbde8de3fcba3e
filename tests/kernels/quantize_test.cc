// quantize_fp8_cpu (weights per channel / per tensor, activations per row) against the rule
// written out: scale = amax / 448 (1 for a zero row), q = f32_to_fp8_e4m3(v / scale); and the
// dequantized values within half an e4m3 step of the input.
#include "kiln/kernels/quantize.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "kiln/core/dtype.h"

#include "tests/kernels/kernel_test_util.h"

namespace kiln {
namespace {

TEST(QuantizeFp8Cpu, FollowsTheRule) {
  std::mt19937 rng(5);
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (bool per_tensor : {false, true}) {
      const int64_t rows = 7, k = 300;
      HostTensor src = test::random_tensor(dt, {rows, k}, rng, 3.0f);
      // Row 2 all zeros, row 4 with one large value.
      std::vector<float> v = test::to_f32(src.tensor);
      for (int64_t c = 0; c < k; ++c) v[static_cast<size_t>(2 * k + c)] = 0.f;
      v[static_cast<size_t>(4 * k + 11)] = -1000.f;
      ASSERT_TRUE(convert(v.data(), DType::kF32, src.tensor.data, dt, rows * k).ok());
      v = test::to_f32(src.tensor);
      HostTensor q = HostTensor::zeros(DType::kFp8E4M3, {rows, k});
      HostTensor scale = HostTensor::zeros(DType::kF32, {per_tensor ? 1 : rows});
      ASSERT_TRUE(quantize_fp8_cpu({src.tensor, q.tensor, scale.tensor}).ok());
      float global = 0.f;
      for (float f : v) global = std::max(global, std::fabs(f));
      for (int64_t r = 0; r < rows; ++r) {
        float amax = 0.f;
        for (int64_t c = 0; c < k; ++c) amax = std::max(amax, std::fabs(v[static_cast<size_t>(r * k + c)]));
        const float want_scale = per_tensor ? global / 448.f : (amax > 0 ? amax / 448.f : 1.f);
        const float s = scale.tensor.ptr<float>()[per_tensor ? 0 : r];
        ASSERT_EQ(s, want_scale) << "row " << r;
        for (int64_t c = 0; c < k; ++c) {
          const float x = v[static_cast<size_t>(r * k + c)];
          const uint8_t got = q.tensor.ptr<uint8_t>()[r * k + c];
          ASSERT_EQ(got, f32_to_fp8_e4m3(x / s)) << "row " << r << " col " << c;
          // e4m3 keeps 3 mantissa bits: within 1/16 relative, or the subnormal step 2^-9 * s.
          EXPECT_LE(std::fabs(fp8_e4m3_to_f32(got) * s - x), std::max(std::fabs(x) / 16.f, s * 0.001953125f) * 1.0001f);
        }
      }
      // Dequantization gives the same numbers.
      HostTensor back = HostTensor::zeros(DType::kF32, {rows, k});
      ASSERT_TRUE(dequantize_fp8_weights_cpu(q.tensor, scale.tensor, back.tensor).ok());
      for (int64_t i = 0; i < rows * k; ++i)
        ASSERT_EQ(back.tensor.ptr<float>()[i],
                  fp8_e4m3_to_f32(q.tensor.ptr<uint8_t>()[i]) * scale.tensor.ptr<float>()[per_tensor ? 0 : i / k]);
    }
  }
}

TEST(QuantizeFp8Cpu, WeightsHelperAndErrors) {
  std::mt19937 rng(6);
  HostTensor w = test::random_tensor(DType::kBF16, {5, 32}, rng);
  auto q = quantize_fp8_weights_cpu(w.tensor, false);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->scale.tensor.numel(), 5);
  auto qt = quantize_fp8_weights_cpu(w.tensor, true);
  ASSERT_TRUE(qt.ok());
  EXPECT_EQ(qt->scale.tensor.numel(), 1);
  HostTensor bad_q = HostTensor::zeros(DType::kFp8E4M3, {5, 31});
  HostTensor s = HostTensor::zeros(DType::kF32, {5});
  EXPECT_FALSE(quantize_fp8_cpu({w.tensor, bad_q.tensor, s.tensor}).ok());
  HostTensor s3 = HostTensor::zeros(DType::kF32, {3});
  EXPECT_FALSE(quantize_fp8_cpu({w.tensor, q->q.tensor, s3.tensor}).ok());
}

// fp8_round_trip_cpu: every output is an fp8 code times its row's scale (amax / 448), the row's
// largest magnitude survives exactly, a second round trip changes nothing, and it works in place.
TEST(QuantizeFp8Cpu, RoundTripActivations) {
  std::mt19937 rng(12);
  const int64_t rows = 5, k = 96;
  HostTensor x = test::random_tensor(DType::kF32, {rows, k}, rng);
  x.tensor.ptr<float>()[3] = 37.5f;  // a large value in row 0
  HostTensor y = HostTensor::zeros(DType::kF32, {rows, k}), z = HostTensor::zeros(DType::kF32, {rows, k});
  ASSERT_TRUE(fp8_round_trip_cpu(x.tensor, y.tensor, false).ok());
  for (int64_t r = 0; r < rows; ++r) {
    float amax = 0.f;
    for (int64_t c = 0; c < k; ++c) amax = std::max(amax, std::fabs(x.tensor.ptr<float>()[r * k + c]));
    const float scale = amax / 448.f;
    for (int64_t c = 0; c < k; ++c) {
      const float v = x.tensor.ptr<float>()[r * k + c], got = y.tensor.ptr<float>()[r * k + c];
      EXPECT_EQ(got, fp8_e4m3_to_f32(f32_to_fp8_e4m3(v / scale)) * scale) << r << "," << c;
      if (std::fabs(v) == amax) EXPECT_FLOAT_EQ(got, v);
    }
  }
  EXPECT_GT(test::max_abs_diff(test::to_f32(x.tensor), test::to_f32(y.tensor)), 0.0);
  ASSERT_TRUE(fp8_round_trip_cpu(y.tensor, z.tensor, false).ok());
  EXPECT_EQ(test::to_f32(y.tensor), test::to_f32(z.tensor));
  ASSERT_TRUE(fp8_round_trip_cpu(x.tensor, x.tensor, true).ok());  // per tensor, in place
  EXPECT_FALSE(fp8_round_trip_cpu(x.tensor, HostTensor::zeros(DType::kF32, {rows, k + 1}).tensor, false).ok());
}

}  // namespace
}  // namespace kiln
