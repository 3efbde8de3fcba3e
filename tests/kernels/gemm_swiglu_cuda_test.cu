// The decode GEMM's SwiGLU rows (x = silu(gate) * up of a fused gate_up, computed in the kernel's
// x load): bit-identical to silu_mul_cuda followed by the same row without SwiGLU at the same
// launch shape, and within bf16 rounding of linear_cpu on the CPU SwiGLU; gate values that take
// the SiLU division's slow path (0, tiny, |g| >= 64) included. Gemm::run_swiglu: the
// decode-sized m it fuses, and a clear error past them. Skipped when no GPU is present (CI).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "kiln/core/dtype.h"
#include "kiln/kernels/activation.h"
#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/cuda/gemm/skinny_gemm.h"
#include "kiln/kernels/gemm_cuda.h"
#include "kiln/kernels/linear.h"
#include "kiln/kernels/quantize.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/kernels/skinny_workspace_cuda.h"

namespace kiln {
namespace {

using test::scaled_error;

struct Weights {
  HostTensor w, scale;  // host (scale: fp8 only)
  DeviceTensor dw, dscale;
};

Weights make_weights(DType wt, int64_t n, int64_t k, std::mt19937& rng) {
  Weights W;
  if (wt == DType::kBF16) {
    W.w = test::random_tensor(DType::kBF16, {n, k}, rng, 0.05f);
  } else {
    auto q = quantize_fp8_weights_cpu(test::random_tensor(DType::kF32, {n, k}, rng, 0.05f).tensor, false);
    EXPECT_TRUE(q.ok());
    W.w = std::move(q->q);
    W.scale = std::move(q->scale);
    auto ds = to_device(W.scale.tensor);
    EXPECT_TRUE(ds.ok());
    W.dscale = std::move(ds).value();
  }
  auto dw = to_device(W.w.tensor);
  EXPECT_TRUE(dw.ok());
  W.dw = std::move(dw).value();
  return W;
}

// gate_up [m, 2k] bf16, scale 3, with slow-path gate values in row 0: 0, 1e-30, 100, -100.
HostTensor make_gate_up(int64_t m, int64_t k, std::mt19937& rng) {
  HostTensor gu = test::random_tensor(DType::kBF16, {m, 2 * k}, rng, 3.0f);
  std::vector<float> v = test::to_f32(gu.tensor);
  const float special[] = {0.f, 1e-30f, 100.f, -100.f};
  for (int i = 0; i < 4; ++i) v[static_cast<size_t>(17 * i + 3)] = special[i];
  EXPECT_TRUE(convert(v.data(), DType::kF32, gu.tensor.data, DType::kBF16, m * 2 * k).ok());
  return gu;
}

// The row a SwiGLU row is built on: same dtypes, tiles, chunks, ring and widening, no SwiGLU.
int base_row(int vi) {
  const auto variants = skinny_gemm_variants();
  const SkinnyGemmVariant& s = variants[static_cast<size_t>(vi)];
  for (int i = 0; i < static_cast<int>(variants.size()); ++i) {
    const SkinnyGemmVariant& v = variants[static_cast<size_t>(i)];
    if (!v.swiglu && !v.stream && !v.e4m3 && !v.wgmma && v.w == s.w && v.y == s.y && v.max_m == s.max_m &&
        v.row_tiles == s.row_tiles && v.unroll == s.unroll && v.stages == s.stages && v.f16 == s.f16 &&
        v.acc_sets == s.acc_sets && v.x_ahead == s.x_ahead)
      return i;
  }
  return -1;
}

TEST(GemmSwigluCuda, RowsMatchSiluMulThenGemm) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(41);
  test::SkinnyWorkspace sw;
  const auto variants = skinny_gemm_variants();
  const struct { int64_t n, k; } shapes[] = {{1000, 2064}, {4096, 14336}, {24, 48}};
  int tested = 0;
  for (int vi = 0; vi < static_cast<int>(variants.size()); ++vi) {
    const SkinnyGemmVariant& v = variants[static_cast<size_t>(vi)];
    if (!v.swiglu) continue;
    const int bi = base_row(vi);
    ASSERT_GE(bi, 0) << "variant " << vi << " has no plain twin";
    for (const auto& s : shapes) {
      const Weights W = make_weights(v.w, s.n, s.k, rng);
      for (int64_t m : {int64_t{1}, int64_t{3}, static_cast<int64_t>(v.max_m)}) {
        SCOPED_TRACE("variant " + std::to_string(vi) + " n=" + std::to_string(s.n) + " k=" + std::to_string(s.k) +
                     " m=" + std::to_string(m));
        const HostTensor gu = make_gate_up(m, s.k, rng);
        auto dgu = to_device(gu.tensor);
        auto dact = DeviceTensor::empty(DType::kBF16, {m, s.k});
        auto dy1 = DeviceTensor::empty(DType::kBF16, {m, s.n}), dy2 = DeviceTensor::empty(DType::kBF16, {m, s.n});
        ASSERT_TRUE(dgu.ok() && dact.ok() && dy1.ok() && dy2.ok());
        for (int split : {0, 3}) {
          sw.ws.pdl = (m + split) % 2 == 0;
          SkinnyGemmConfig plain{bi, 8, split}, fused{vi, 8, split};
          fused.swiglu = true;
          ASSERT_TRUE(silu_mul_cuda({dgu->tensor, dact->tensor}, nullptr).ok());
          Status st = skinny_gemm_cuda({dact->tensor, W.dw.tensor, {}, dy1->tensor, W.dscale.tensor}, sw.ws, nullptr, plain);
          ASSERT_TRUE(st.ok()) << st.to_string();
          st = skinny_gemm_cuda({dgu->tensor, W.dw.tensor, {}, dy2->tensor, W.dscale.tensor}, sw.ws, nullptr, fused);
          ASSERT_TRUE(st.ok()) << st.to_string();
          auto y1 = to_host(dy1->tensor), y2 = to_host(dy2->tensor);
          ASSERT_TRUE(y1.ok() && y2.ok());
          EXPECT_EQ(0, std::memcmp(y1->tensor.data, y2->tensor.data, static_cast<size_t>(y1->tensor.nbytes()))) << "split " << split;
          ++tested;
        }
        // Against the CPU: SwiGLU in f32, rounded to bf16 as silu_mul_cuda stores it, then linear_cpu.
        if (s.k == 2064) {
          HostTensor gf = HostTensor::zeros(DType::kF32, {m, 2 * s.k}), af = HostTensor::zeros(DType::kF32, {m, s.k});
          const std::vector<float> g = test::to_f32(gu.tensor);
          std::copy(g.begin(), g.end(), gf.tensor.ptr<float>());
          ASSERT_TRUE(silu_mul_cpu({gf.tensor, af.tensor}).ok());
          HostTensor ab = HostTensor::zeros(DType::kBF16, {m, s.k});
          ASSERT_TRUE(convert(af.tensor.data, DType::kF32, ab.tensor.data, DType::kBF16, m * s.k).ok());
          const std::vector<float> a = test::to_f32(ab.tensor);
          HostTensor ref = HostTensor::zeros(DType::kF32, {m, s.n});
          ASSERT_TRUE(linear_cpu({Tensor::view(const_cast<float*>(a.data()), DType::kF32, {m, s.k}), W.w.tensor, {}, ref.tensor,
                                  W.scale.tensor}).ok());
          auto y = to_host(dy2->tensor, DType::kF32);
          ASSERT_TRUE(y.ok());
          EXPECT_LT(scaled_error(test::to_f32(y->tensor), test::to_f32(ref.tensor)), 1e-2);
        }
      }
    }
  }
  EXPECT_GT(tested, 0) << "no SwiGLU rows in the table";
}

TEST(GemmSwigluCuda, RunSwigluFusesDecodeSizes) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(42);
  auto gemm = Gemm::create();
  ASSERT_TRUE(gemm.ok());
  const int64_t n = 512, k = 1024;
  for (DType wt : {DType::kFp8E4M3, DType::kBF16}) {
    EXPECT_TRUE(gemm->fuses_swiglu(1, wt));
    EXPECT_TRUE(gemm->fuses_swiglu(8, wt));
    EXPECT_FALSE(gemm->fuses_swiglu(9, wt));
    const Weights W = make_weights(wt, n, k, rng);
    for (int64_t m : {int64_t{2}, int64_t{9}}) {
      const HostTensor gu = make_gate_up(m, k, rng);
      auto dgu = to_device(gu.tensor);
      auto dact = DeviceTensor::empty(DType::kBF16, {m, k});
      auto dy = DeviceTensor::empty(DType::kBF16, {m, n}), dref = DeviceTensor::empty(DType::kBF16, {m, n});
      ASSERT_TRUE(dgu.ok() && dact.ok() && dy.ok() && dref.ok());
      const Status st = gemm->run_swiglu({dgu->tensor, W.dw.tensor, {}, dy->tensor, W.dscale.tensor}, nullptr);
      if (m > 8) {
        EXPECT_EQ(st.code(), StatusCode::kUnimplemented) << st.to_string();
        continue;
      }
      ASSERT_TRUE(st.ok()) << st.to_string();
      ASSERT_TRUE(silu_mul_cuda({dgu->tensor, dact->tensor}, nullptr).ok());
      ASSERT_TRUE(gemm->run({dact->tensor, W.dw.tensor, {}, dref->tensor, W.dscale.tensor}, nullptr).ok());
      auto y = to_host(dy->tensor, DType::kF32), r = to_host(dref->tensor, DType::kF32);
      ASSERT_TRUE(y.ok() && r.ok());
      EXPECT_LT(scaled_error(test::to_f32(y->tensor), test::to_f32(r->tensor)), 1e-2);
    }
    // gate_up not [m, 2k]: an error, nothing launched
    auto bad = DeviceTensor::empty(DType::kBF16, {2, k});
    auto dy = DeviceTensor::empty(DType::kBF16, {2, n});
    ASSERT_TRUE(bad.ok() && dy.ok());
    EXPECT_EQ(gemm->run_swiglu({bad->tensor, W.dw.tensor, {}, dy->tensor, W.dscale.tensor}, nullptr).code(),
              StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace kiln
