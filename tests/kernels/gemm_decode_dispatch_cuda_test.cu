// The decode-size fp8 dispatch of Gemm: large weights (48 MiB and more) on the decode kernel up to
// m = 64, and run_quantized at decode sizes (x quantized per token by its producer) on the
// decode kernel's e4m3 rows without their pre-pass: bit-identical to run() on the bf16 x there,
// and quantizes_x_per_token telling the model where that holds. CPU references: linear_cpu on x
// rounded per token to fp8 (fp8_round_trip_cpu) and the dequantized weights. Skipped without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstring>

#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/gemm_cuda.h"
#include "kiln/kernels/linear.h"
#include "kiln/kernels/quantize.h"
#include "tests/kernels/kernel_test_util.h"

namespace kiln {
namespace {

using test::scaled_error;

struct Fp8Weights {
  HostTensor w, scale;
  DeviceTensor dw, dscale;
};

Fp8Weights make_fp8(int64_t n, int64_t k, std::mt19937& rng) {
  auto q = quantize_fp8_weights_cpu(test::random_tensor(DType::kF32, {n, k}, rng, 0.05f).tensor, false);
  EXPECT_TRUE(q.ok());
  Fp8Weights W{std::move(q->q), std::move(q->scale), {}, {}};
  auto dw = to_device(W.w.tensor), ds = to_device(W.scale.tensor);
  EXPECT_TRUE(dw.ok() && ds.ok());
  W.dw = std::move(dw).value();
  W.dscale = std::move(ds).value();
  return W;
}

// max |y - ref| / max |ref| of a device y against linear_cpu on x (bf16, host) rounded per token.
double error_vs_per_token_reference(const DeviceTensor& y, const HostTensor& x, const Fp8Weights& W) {
  const int64_t m = x.tensor.shape[0], k = x.tensor.shape[1], n = W.w.tensor.shape[0];
  std::vector<float> xf = test::to_f32(x.tensor);
  const Tensor xv = Tensor::view(xf.data(), DType::kF32, {m, k});
  EXPECT_TRUE(fp8_round_trip_cpu(xv, xv, false).ok());
  HostTensor ref = HostTensor::zeros(DType::kF32, {m, n});
  EXPECT_TRUE(linear_cpu({xv, W.w.tensor, {}, ref.tensor, W.scale.tensor}).ok());
  auto yh = to_host(y.tensor, DType::kF32);
  EXPECT_TRUE(yh.ok());
  return scaled_error(test::to_f32(yh->tensor), test::to_f32(ref.tensor));
}

TEST(GemmDispatchCuda, LargeFp8WeightsKeepTheDecodeKernelTo64) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  const GemmOptions opt;
  const int64_t big = kGemmSkinnyLargeFp8Bytes, n = 12288, k = 4096;  // n * k: exactly the threshold
  EXPECT_EQ(gemm_path(opt, 64, DType::kFp8E4M3, big), GemmPath::kSkinny);
  EXPECT_EQ(gemm_path(opt, 65, DType::kFp8E4M3, big), GemmPath::kCublasFp8);
  EXPECT_EQ(gemm_path(opt, 32, DType::kFp8E4M3, big - 1), GemmPath::kSkinny);
  EXPECT_EQ(gemm_path(opt, 33, DType::kFp8E4M3, big - 1), GemmPath::kCublasFp8);
  EXPECT_EQ(gemm_path({.skinny_max_m_fp8 = 0}, 1, DType::kFp8E4M3, big), GemmPath::kCublasFp8);
  EXPECT_EQ(gemm_path(opt, 9, DType::kBF16, 2 * big), GemmPath::kCublasBf16);
  std::mt19937 rng(35);
  auto gemm = Gemm::create(opt);
  ASSERT_TRUE(gemm.ok());
  ASSERT_EQ(n * k, big);
  const Fp8Weights W = make_fp8(n, k, rng);
  for (int64_t m : {33, 64, 65}) {
    SCOPED_TRACE("m=" + std::to_string(m));
    EXPECT_EQ(gemm_path(opt, m, DType::kFp8E4M3, n * k) == GemmPath::kSkinny, m <= 64);
    EXPECT_TRUE(gemm->quantizes_x_per_token(m, W.dw.tensor, DType::kBF16));  // decode kernel's e4m3 rows, or cuBLASLt per token
    const HostTensor x = test::random_tensor(DType::kBF16, {m, k}, rng);
    auto dx = to_device(x.tensor);
    auto dy = DeviceTensor::empty(DType::kBF16, {m, n});
    ASSERT_TRUE(dx.ok() && dy.ok());
    ASSERT_TRUE(gemm->run({dx->tensor, W.dw.tensor, {}, dy->tensor, W.dscale.tensor}, nullptr).ok());
    EXPECT_LT(error_vs_per_token_reference(*dy, x, W), m > 64 ? 2e-2 : 1e-2);
  }
}

// run_quantized on x quantized per token (quantize_fp8_cuda, the bits the norms and the SwiGLU
// write) against run() on the bf16 x: the same bits wherever quantizes_x_per_token holds at a
// decode size (the e4m3 row without its pre-pass), and near the reference elsewhere (m <= 8:
// the f16 rows keep x bf16, so run_quantized takes cuBLASLt).
TEST(GemmDispatchCuda, PrequantizedXSkipsThePrepass) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(36);
  auto gemm = Gemm::create();
  ASSERT_TRUE(gemm.ok());
  const struct { int64_t n, k; } shapes[] = {{1536, 1024}, {12288, 4096}};
  for (const auto& s : shapes) {
    const Fp8Weights W = make_fp8(s.n, s.k, rng);
    for (int64_t m : {4, 9, 16, 32, 33, 64}) {
      SCOPED_TRACE("n=" + std::to_string(s.n) + " m=" + std::to_string(m));
      const HostTensor x = test::random_tensor(DType::kBF16, {m, s.k}, rng);
      auto dx = to_device(x.tensor);
      auto dq = DeviceTensor::empty(DType::kFp8E4M3, {m, s.k});
      auto ds = DeviceTensor::empty(DType::kF32, {m});
      auto dy1 = DeviceTensor::empty(DType::kBF16, {m, s.n}), dy2 = DeviceTensor::empty(DType::kBF16, {m, s.n});
      ASSERT_TRUE(dx.ok() && dq.ok() && ds.ok() && dy1.ok() && dy2.ok());
      ASSERT_TRUE(quantize_fp8_cuda({dx->tensor, dq->tensor, ds->tensor}, nullptr).ok());
      ASSERT_TRUE(gemm->run({dx->tensor, W.dw.tensor, {}, dy1->tensor, W.dscale.tensor}, nullptr).ok());
      const Status st = gemm->run_quantized({dq->tensor, ds->tensor, W.dw.tensor, {}, dy2->tensor, W.dscale.tensor}, nullptr);
      ASSERT_TRUE(st.ok()) << st.to_string();
      const bool decode = gemm_path(GemmOptions{}, m, DType::kFp8E4M3, s.n * s.k) == GemmPath::kSkinny;
      const bool same = gemm->quantizes_x_per_token(m, W.dw.tensor, DType::kBF16);
      EXPECT_EQ(same, m > 8) << "the f16 rows (m <= 8) keep x bf16; past them every path quantizes per token";
      if (decode && same) {
        auto y1 = to_host(dy1->tensor), y2 = to_host(dy2->tensor);
        ASSERT_TRUE(y1.ok() && y2.ok());
        EXPECT_EQ(0, std::memcmp(y1->tensor.data, y2->tensor.data, static_cast<size_t>(y1->tensor.nbytes())));
      }
      EXPECT_LT(error_vs_per_token_reference(*dy2, x, W), 2e-2);
    }
  }
  // bf16 weights never take a pre-quantized x
  const HostTensor wb = test::random_tensor(DType::kBF16, {64, 64}, rng);
  auto dwb = to_device(wb.tensor);
  ASSERT_TRUE(dwb.ok());
  EXPECT_FALSE(gemm->quantizes_x_per_token(16, dwb->tensor, DType::kBF16));
}

}  // namespace
}  // namespace kiln
