// linear_cpu against a double-precision triple loop, for every weight dtype, tiled and tail shapes.
#include "kiln/kernels/linear.h"

#include <gtest/gtest.h>

#include "tests/kernels/kernel_test_util.h"

namespace kiln {
namespace {

struct Shape { int64_t m, k, n; bool bias; };

TEST(LinearCpu, MatchesNaiveReference) {
  std::mt19937 rng(1234);
  for (DType wt : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (Shape s : {Shape{1, 64, 8, false}, Shape{3, 17, 5, true}, Shape{2, 576, 1536, false},
                    Shape{9, 96, 13, true}, Shape{64, 256, 97, false}}) {
      HostTensor x = test::random_tensor(DType::kF32, {s.m, s.k}, rng);
      HostTensor w = test::random_tensor(wt, {s.n, s.k}, rng, 0.1f);
      HostTensor b = test::random_tensor(DType::kF32, {s.n}, rng);
      HostTensor y = HostTensor::zeros(DType::kF32, {s.m, s.n});
      ASSERT_TRUE(linear_cpu({x.tensor, w.tensor, s.bias ? b.tensor : Tensor{}, y.tensor}).ok());
      const auto xf = test::to_f32(x.tensor), wf = test::to_f32(w.tensor), bf = test::to_f32(b.tensor);
      const auto yf = test::to_f32(y.tensor);
      double worst = 0;
      for (int64_t i = 0; i < s.m; ++i) {
        for (int64_t j = 0; j < s.n; ++j) {
          double ref = s.bias ? bf[static_cast<size_t>(j)] : 0.0;
          for (int64_t p = 0; p < s.k; ++p) ref += static_cast<double>(xf[static_cast<size_t>(i * s.k + p)]) * wf[static_cast<size_t>(j * s.k + p)];
          worst = std::max(worst, std::fabs(ref - yf[static_cast<size_t>(i * s.n + j)]) / (1.0 + std::fabs(ref)));
        }
      }
      EXPECT_LT(worst, 2e-5) << dtype_name(wt) << " m=" << s.m << " k=" << s.k << " n=" << s.n;
    }
  }
}

TEST(LinearCpu, RejectsBadShapesAndDtypes) {
  HostTensor x = HostTensor::zeros(DType::kF32, {2, 8});
  HostTensor w = HostTensor::zeros(DType::kF32, {4, 9});
  HostTensor y = HostTensor::zeros(DType::kF32, {2, 4});
  EXPECT_EQ(linear_cpu({x.tensor, w.tensor, {}, y.tensor}).code(), StatusCode::kInvalidArgument);
  HostTensor w8 = HostTensor::zeros(DType::kFp8E4M3, {4, 8});
  EXPECT_EQ(linear_cpu({x.tensor, w8.tensor, {}, y.tensor}).code(), StatusCode::kInvalidArgument);  // no w_scale
  HostTensor w5 = HostTensor::zeros(DType::kFp8E5M2, {4, 8});
  EXPECT_EQ(linear_cpu({x.tensor, w5.tensor, {}, y.tensor}).code(), StatusCode::kUnimplemented);
  HostTensor bad_scale = HostTensor::zeros(DType::kF32, {3});
  EXPECT_EQ(linear_cpu({x.tensor, w8.tensor, {}, y.tensor, bad_scale.tensor}).code(), StatusCode::kInvalidArgument);
}

// fp8 e4m3 weights with per-channel and per-tensor scales against a double loop over
// float(q) * scale; the weights are random codes (every finite e4m3 value, subnormals included).
TEST(LinearCpu, Fp8WeightsMatchNaiveReference) {
  std::mt19937 rng(77);
  std::uniform_int_distribution<int> code(0, 255);
  for (bool per_tensor : {false, true}) {
    for (Shape s : {Shape{1, 64, 8, false}, Shape{3, 17, 5, true}, Shape{2, 576, 131, true}, Shape{9, 96, 13, false}}) {
      HostTensor x = test::random_tensor(DType::kF32, {s.m, s.k}, rng);
      HostTensor w = HostTensor::zeros(DType::kFp8E4M3, {s.n, s.k});
      for (int64_t i = 0; i < s.n * s.k; ++i) {
        int c = code(rng);
        if ((c & 0x7f) == 0x7f) c = 0;  // no NaN
        w.tensor.ptr<uint8_t>()[i] = static_cast<uint8_t>(c);
      }
      HostTensor scale = test::random_tensor(DType::kF32, {per_tensor ? 1 : s.n}, rng, 0.01f);
      HostTensor b = test::random_tensor(DType::kF32, {s.n}, rng);
      HostTensor y = HostTensor::zeros(DType::kF32, {s.m, s.n});
      ASSERT_TRUE(linear_cpu({x.tensor, w.tensor, s.bias ? b.tensor : Tensor{}, y.tensor, scale.tensor}).ok());
      const auto xf = test::to_f32(x.tensor), bf = test::to_f32(b.tensor), yf = test::to_f32(y.tensor);
      double worst = 0;
      for (int64_t i = 0; i < s.m; ++i) {
        for (int64_t j = 0; j < s.n; ++j) {
          double acc = 0;
          for (int64_t p = 0; p < s.k; ++p)
            acc += static_cast<double>(xf[static_cast<size_t>(i * s.k + p)]) * fp8_e4m3_to_f32(w.tensor.ptr<uint8_t>()[j * s.k + p]);
          const double ref = acc * scale.tensor.ptr<float>()[per_tensor ? 0 : j] + (s.bias ? bf[static_cast<size_t>(j)] : 0.0);
          worst = std::max(worst, std::fabs(ref - yf[static_cast<size_t>(i * s.n + j)]) / (1.0 + std::fabs(ref)));
        }
      }
      EXPECT_LT(worst, 1e-4) << "per_tensor=" << per_tensor << " m=" << s.m << " k=" << s.k << " n=" << s.n;
    }
  }
}

}  // namespace
}  // namespace kiln
