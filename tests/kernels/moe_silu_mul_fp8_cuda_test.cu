// silu_mul_fp8_cuda against silu_mul_fp8_cpu (and the two-kernel path it replaces: silu_mul_cuda
// then the GPU quantizer), Gemm::run_quantized against Gemm::run on the same per-token-quantized x
// (aligned and unaligned scale slices), and moe_grouped_gemm_cuda with fp8 x against bf16 x.
// Fresh random inputs. GPU suites skip without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <tuple>
#include <vector>

#include "kiln/kernels/activation.h"
#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/gemm_cuda.h"
#include "kiln/kernels/moe_cuda.h"
#include "kiln/kernels/quantize.h"
#include "kiln/kernels/silu_mul_fp8.h"
#include "tests/kernels/kernel_test_util.h"

namespace kiln {
namespace {

std::vector<float> dequant(const HostTensor& q, const HostTensor& s) {
  const int64_t rows = q.tensor.shape[0], k = q.tensor.shape[1];
  std::vector<float> v = test::to_f32(q.tensor);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < k; ++i) v[static_cast<size_t>(r * k + i)] *= s.tensor.ptr<float>()[r];
  return v;
}

TEST(SiluMulFp8Cpu, MatchesSiluMulThenQuantize) {
  std::mt19937 rng(7);
  const int64_t rows = 5, inter = 48;
  HostTensor gu = test::random_tensor(DType::kF32, {rows, 2 * inter}, rng, 2.0f);
  HostTensor q = HostTensor::zeros(DType::kFp8E4M3, {rows, inter}), s = HostTensor::zeros(DType::kF32, {rows});
  ASSERT_TRUE(silu_mul_fp8_cpu({gu.tensor, q.tensor, s.tensor}).ok());
  HostTensor act = HostTensor::zeros(DType::kF32, {rows, inter});
  ASSERT_TRUE(silu_mul_cpu({gu.tensor, act.tensor}).ok());
  const std::vector<float> got = dequant(q, s), want = test::to_f32(act.tensor);
  EXPECT_LE(test::scaled_error(got, want), 0.07);  // e4m3: 3 mantissa bits
  for (int64_t r = 0; r < rows; ++r) EXPECT_GT(s.tensor.ptr<float>()[r], 0.0f);
}

TEST(SiluMulFp8Cuda, MatchesCpuReference) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(11);
  for (int64_t inter : {8, 1000, 4096, 14336, 16384}) {
    for (int64_t rows : {1, 37, 130}) {  // 130: past the few-row (1024-thread) variants
      HostTensor gu = test::random_tensor(DType::kBF16, {rows, 2 * inter}, rng, 3.0f);
      if (rows > 1) std::memset(gu.tensor.ptr<uint16_t>() + 2 * inter, 0, 2 * inter * 2);  // an all-zero row: scale 1
      HostTensor q = HostTensor::zeros(DType::kFp8E4M3, {rows, inter}), s = HostTensor::zeros(DType::kF32, {rows});
      ASSERT_TRUE(silu_mul_fp8_cpu({gu.tensor, q.tensor, s.tensor}).ok());
      auto dgu = to_device(gu.tensor);
      auto dq = DeviceTensor::empty(DType::kFp8E4M3, {rows, inter});
      auto ds = DeviceTensor::empty(DType::kF32, {rows});
      ASSERT_TRUE(dgu.ok() && dq.ok() && ds.ok());
      ASSERT_TRUE(silu_mul_fp8_cuda({dgu->tensor, dq->tensor, ds->tensor}, nullptr).ok());
      auto hq = to_host(dq->tensor);
      auto hs = to_host(ds->tensor);
      ASSERT_TRUE(hq.ok() && hs.ok());
      int64_t diff = 0;
      for (int64_t i = 0; i < rows * inter; ++i) diff += hq->tensor.ptr<uint8_t>()[i] != q.tensor.ptr<uint8_t>()[i];
      for (int64_t r = 0; r < rows; ++r)
        EXPECT_NEAR(hs->tensor.ptr<float>()[r], s.tensor.ptr<float>()[r], 1e-2 * s.tensor.ptr<float>()[r]) << r;
      if (rows > 1) EXPECT_EQ(hs->tensor.ptr<float>()[1], 1.0f);
      // expf differs in the last bit between host and device: a few codes may differ by one step.
      EXPECT_LE(diff, rows * inter / 100 + 1) << "inter " << inter << " rows " << rows;
      EXPECT_LE(test::scaled_error(dequant(*hq, *hs), dequant(q, s)), 0.08) << "inter " << inter;
      // The two-kernel path it replaces: silu_mul_cuda then the quantizer, same bits.
      auto act = DeviceTensor::empty(DType::kBF16, {rows, inter});
      auto q2 = DeviceTensor::empty(DType::kFp8E4M3, {rows, inter});
      auto s2 = DeviceTensor::empty(DType::kF32, {rows});
      ASSERT_TRUE(act.ok() && q2.ok() && s2.ok());
      ASSERT_TRUE(silu_mul_cuda({dgu->tensor, act->tensor}, nullptr).ok());
      ASSERT_TRUE(quantize_fp8_cuda({act->tensor, q2->tensor, s2->tensor}, nullptr).ok());
      auto hq2 = to_host(q2->tensor);
      auto hs2 = to_host(s2->tensor);
      ASSERT_TRUE(hq2.ok() && hs2.ok());
      EXPECT_EQ(std::memcmp(hq2->tensor.data, hq->tensor.data, rows * inter), 0) << "inter " << inter;
      EXPECT_EQ(std::memcmp(hs2->tensor.data, hs->tensor.data, rows * 4), 0) << "inter " << inter;
    }
  }
}

TEST(SiluMulFp8Cuda, RejectsWhatItDoesNotTake) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  auto gu = DeviceTensor::empty(DType::kBF16, {2, 2 * 20000});
  auto q = DeviceTensor::empty(DType::kFp8E4M3, {2, 20000});
  auto s = DeviceTensor::empty(DType::kF32, {2});
  ASSERT_TRUE(gu.ok() && q.ok() && s.ok());
  EXPECT_EQ(silu_mul_fp8_cuda({gu->tensor, q->tensor, s->tensor}, nullptr).code(), StatusCode::kUnimplemented);
  auto q1 = DeviceTensor::empty(DType::kFp8E4M3, {3, 20000});
  ASSERT_TRUE(q1.ok());
  EXPECT_EQ(silu_mul_fp8_cuda({gu->tensor, q1->tensor, s->tensor}, nullptr).code(), StatusCode::kInvalidArgument);
}

struct Fp8W {
  DeviceTensor w, s;
};
Fp8W fp8_weights(int64_t n, int64_t k, std::mt19937& rng) {
  HostTensor f = test::random_tensor(DType::kF32, {n, k}, rng, 0.05f);
  auto q = quantize_fp8_weights_cpu(f.tensor, false);
  EXPECT_TRUE(q.ok());
  auto w = to_device(q->q.tensor);
  auto s = to_device(q->scale.tensor);
  EXPECT_TRUE(w.ok() && s.ok());
  return {std::move(w).value(), std::move(s).value()};
}

// Random bf16 x [m, k] on the device, and its per-token fp8 quantization (quantize_fp8_cpu).
struct QuantizedX {
  DeviceTensor x, q, scale;
};
QuantizedX quantized_x(int64_t m, int64_t k, std::mt19937& rng) {
  HostTensor x = test::random_tensor(DType::kBF16, {m, k}, rng);
  HostTensor xq = HostTensor::zeros(DType::kFp8E4M3, {m, k}), xs = HostTensor::zeros(DType::kF32, {m});
  EXPECT_TRUE(quantize_fp8_cpu({x.tensor, xq.tensor, xs.tensor}).ok());
  auto dx = to_device(x.tensor);
  auto dxq = to_device(xq.tensor);
  auto dxs = to_device(xs.tensor);
  EXPECT_TRUE(dx.ok() && dxq.ok() && dxs.ok());
  return {std::move(dx).value(), std::move(dxq).value(), std::move(dxs).value()};
}

// Gemm::run_quantized on x quantized per token (bit-identical to what Gemm::run's fp8 path does
// itself) against Gemm::run on the bf16 x; rows [3, m) too: an unaligned scale slice.
TEST(GemmQuantizedCuda, MatchesRunOnBf16X) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(5);
  auto gemm = Gemm::create();
  ASSERT_TRUE(gemm.ok());
  for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{40, 256, 512}, {300, 1024, 2048}, {5, 128, 4096}}) {
    Fp8W W = fp8_weights(n, k, rng);
    const QuantizedX qx = quantized_x(m, k, rng);
    const DeviceTensor *dx = &qx.x, *dxq = &qx.q, *dxs = &qx.scale;
    auto y1 = DeviceTensor::empty(DType::kBF16, {m, n});
    auto y2 = DeviceTensor::empty(DType::kBF16, {m, n});
    ASSERT_TRUE(y1.ok() && y2.ok());
    GemmOptions o;
    o.skinny_max_m_fp8 = 0;  // the fp8 cuBLASLt path for every m: what run_quantized computes
    auto g0 = Gemm::create(o);
    ASSERT_TRUE(g0.ok());
    ASSERT_TRUE(g0->run({dx->tensor, W.w.tensor, {}, y1->tensor, W.s.tensor}, nullptr).ok());
    ASSERT_TRUE(gemm->run_quantized({dxq->tensor, dxs->tensor, W.w.tensor, {}, y2->tensor, W.s.tensor}, nullptr).ok());
    const std::vector<float> a = test::to_f32(to_host(y1->tensor)->tensor), b = test::to_f32(to_host(y2->tensor)->tensor);
    EXPECT_LE(test::scaled_error(b, a), 1e-2) << m << "x" << n << "x" << k;
    // rows [3, m): x and its scales sliced (scale pointer 12 bytes into the buffer)
    auto y3 = DeviceTensor::empty(DType::kBF16, {m - 3, n});
    ASSERT_TRUE(y3.ok());
    ASSERT_TRUE(gemm->run_quantized({dxq->tensor.slice0(3, m), dxs->tensor.slice0(3, m), W.w.tensor, {}, y3->tensor, W.s.tensor},
                                    nullptr).ok());
    const std::vector<float> c = test::to_f32(to_host(y3->tensor)->tensor);
    const std::vector<float> a3(a.begin() + 3 * n, a.end());
    EXPECT_LE(test::scaled_error(c, a3), 1e-2) << "slice " << m << "x" << n << "x" << k;
  }
}

// The grouped expert GEMM on fp8 x (per-row scales) against the same on bf16 x.
TEST(MoeGroupedGemmCuda, Fp8XMatchesBf16X) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(9);
  const int64_t e = 4, n = 512, k = 1024;
  const std::vector<int32_t> offsets = {0, 70, 70, 133, 200};  // an empty expert, odd starts
  const int64_t rows = offsets.back();
  std::vector<Fp8W> ws;
  std::vector<Tensor> w, s;
  for (int64_t i = 0; i < e; ++i) ws.push_back(fp8_weights(n, k, rng));
  for (auto& x : ws) { w.push_back(x.w.tensor); s.push_back(x.s.tensor); }
  const QuantizedX qx = quantized_x(rows, k, rng);
  const DeviceTensor *dx = &qx.x, *dxq = &qx.q, *dxs = &qx.scale;
  auto y1 = DeviceTensor::empty(DType::kBF16, {rows, n});
  auto y2 = DeviceTensor::empty(DType::kBF16, {rows, n});
  ASSERT_TRUE(y1.ok() && y2.ok());
  GemmOptions o;
  o.skinny_max_m_fp8 = 0;
  auto gemm = Gemm::create(o);
  ASSERT_TRUE(gemm.ok());
  ASSERT_TRUE(moe_grouped_gemm_cuda(*gemm, {dx->tensor, w, offsets, y1->tensor, s}, nullptr).ok());
  ASSERT_TRUE(moe_grouped_gemm_cuda(*gemm, {dxq->tensor, w, offsets, y2->tensor, s, dxs->tensor}, nullptr).ok());
  const std::vector<float> a = test::to_f32(to_host(y1->tensor)->tensor), b = test::to_f32(to_host(y2->tensor)->tensor);
  EXPECT_LE(test::scaled_error(b, a), 1e-2);
  // fp8 x without its scales is refused
  EXPECT_FALSE(moe_grouped_gemm_cuda(*gemm, {dxq->tensor, w, offsets, y2->tensor, s}, nullptr).ok());
}

}  // namespace
}  // namespace kiln
