// Gemm::run_swiglu (the decode kernel's grid rows with SwiGLU in their epilogue) on fresh random
// inputs: bit for bit against Gemm::run + silu_mul_cuda (the path it replaces), and against
// linear_cpu + silu_mul_cpu within bf16 rounding; bf16 and fp8 weights (per channel / per tensor),
// forced split K and warps, a row of two tiles a CTA past the last rows, and the shapes and rows it
// refuses. Skipped without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "kiln/kernels/activation.h"
#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/cuda/gemm/skinny_gemm.h"
#include "kiln/kernels/gemm_cuda.h"
#include "kiln/kernels/linear.h"
#include "kiln/kernels/quantize.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/kernels/skinny_workspace_cuda.h"
#include "tests/kernels/test_weights_cuda.h"

namespace kiln {
namespace {

using SwigluWeights = test::Weights;  // w [2I, k] = [gate; up]

SwigluWeights make(DType wt, int64_t inter, int64_t k, bool per_tensor, std::mt19937& rng) {
  return test::make_weights(wt, 2 * inter, k, per_tensor, false, rng);
}

std::vector<uint16_t> bits(const DeviceTensor& t) {
  auto h = to_host(t.tensor);
  EXPECT_TRUE(h.ok());
  std::vector<uint16_t> r(static_cast<size_t>(t.tensor.numel()));
  if (h.ok()) std::memcpy(r.data(), h->tensor.data, r.size() * 2);
  return r;
}

// The fused result, the unfused GPU one (both through `run`) and the CPU reference for x [m, k].
// run(args, swiglu): the GEMM (swiglu false: y [m, 2I]) or the fused one (y [m, I]).
template <typename Run>
void check(Run&& run, const SwigluWeights& W, int64_t m, int64_t inter, int64_t k, std::mt19937& rng) {
  SCOPED_TRACE("m=" + std::to_string(m) + " I=" + std::to_string(inter) + " k=" + std::to_string(k) + " w=" +
               std::string(dtype_name(W.w.tensor.dtype)) + " scales=" + std::to_string(W.scale.tensor.numel()));
  HostTensor x = test::random_tensor(DType::kBF16, {m, k}, rng);
  auto dx = to_device(x.tensor);
  auto dfused = DeviceTensor::empty(DType::kBF16, {m, inter});
  auto dgu = DeviceTensor::empty(DType::kBF16, {m, 2 * inter});
  auto dact = DeviceTensor::empty(DType::kBF16, {m, inter});
  ASSERT_TRUE(dx.ok() && dfused.ok() && dgu.ok() && dact.ok());
  ASSERT_TRUE(fill_bytes(dfused->tensor, 0xff).ok());  // NaN: a value never written shows
  const Status fs = run(LinearArgs{dx->tensor, W.dw.tensor, {}, dfused->tensor, W.dscale.tensor}, true);
  ASSERT_TRUE(fs.ok()) << fs.to_string();
  const Status us = run(LinearArgs{dx->tensor, W.dw.tensor, {}, dgu->tensor, W.dscale.tensor}, false);
  ASSERT_TRUE(us.ok()) << us.to_string();
  ASSERT_TRUE(silu_mul_cuda({dgu->tensor, dact->tensor}, nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<uint16_t> got = bits(*dfused), want = bits(*dact);
  int64_t differ = 0;
  for (size_t i = 0; i < got.size(); ++i) differ += got[i] != want[i];
  EXPECT_EQ(differ, 0) << "of " << got.size() << " outputs differ from gemm + silu_mul_cuda";

  // CPU: linear_cpu on the same bf16 x and weights, silu_mul_cpu in f32.
  const std::vector<float> xf = test::to_f32(x.tensor);
  HostTensor gu = HostTensor::zeros(DType::kF32, {m, 2 * inter}), act = HostTensor::zeros(DType::kF32, {m, inter});
  ASSERT_TRUE(linear_cpu({Tensor::view(const_cast<float*>(xf.data()), DType::kF32, {m, k}), W.w.tensor, {}, gu.tensor,
                          W.scale.tensor})
                  .ok());
  ASSERT_TRUE(silu_mul_cpu({gu.tensor, act.tensor}).ok());
  auto fused_host = to_host(dfused->tensor, DType::kF32);
  ASSERT_TRUE(fused_host.ok());
  EXPECT_LT(test::scaled_error(test::to_f32(fused_host->tensor), test::to_f32(act.tensor)), 2e-2);
}

TEST(GemmSwigluCuda, MatchesGemmThenSiluMulAndTheCpuReference) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(71);
  auto gemm = Gemm::create();
  ASSERT_TRUE(gemm.ok());
  auto run = [&](const LinearArgs& a, bool swiglu) { return swiglu ? gemm->run_swiglu(a, nullptr) : gemm->run(a, nullptr); };
  const struct { int64_t inter, k; } shapes[] = {{1000, 4096}, {88, 1008}, {4096, 512}, {24, 14336}};
  for (const auto& s : shapes)
    for (DType wt : {DType::kBF16, DType::kFp8E4M3})
      for (bool per_tensor : {false, true}) {
        if (wt == DType::kBF16 && per_tensor) continue;
        const SwigluWeights W = make(wt, s.inter, s.k, per_tensor, rng);
        for (int64_t m : {1, 3, 8}) check(run, W, m, s.inter, s.k, rng);
      }
}

// The first grid row (no stream, wgmma or e4m3) of weights wt with `row_tiles` tiles a CTA and room
// for m rows, or -1.
int grid_row(DType wt, int row_tiles, int m) {
  const auto v = skinny_gemm_variants();
  for (int i = 0; i < static_cast<int>(v.size()); ++i)
    if (v[i].w == wt && v[i].y == DType::kBF16 && v[i].row_tiles == row_tiles && v[i].max_m >= m && !v[i].stream && !v[i].wgmma && !v[i].e4m3)
      return i;
  return -1;
}

// The kernel itself with forced launch shapes (split K reduced by the last CTA, 1..8 warps), with
// and without programmatic dependent launch, and a row of two 16-row tiles a CTA (m = 17: three
// activation tiles; I = 200: the last CTA's second tile lies past the rows); each against the
// same launch unfused.
TEST(GemmSwigluCuda, ForcedSplitKWarpsAndRows) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(72);
  test::SkinnyWorkspace sw;
  const int two_tiles = grid_row(DType::kFp8E4M3, 2, 17);
  ASSERT_GE(two_tiles, 0);
  const SkinnyGemmConfig shapes[] = {{-1, 3, 0}, {-1, 8, 3}, {-1, 1, 1}, {-1, 4, 5}, {two_tiles, 0, 0}, {two_tiles, 4, 3}};
  int i = 0;
  for (DType wt : {DType::kFp8E4M3, DType::kBF16})
    for (const SkinnyGemmConfig& base : shapes) {
      if (base.variant >= 0 && wt != DType::kFp8E4M3) continue;
      SkinnyGemmConfig fused = base;
      fused.swiglu = true;
      sw.ws.pdl = (i++ % 2) == 0;
      const SwigluWeights W = make(wt, 200, 2048, false, rng);
      check([&](const LinearArgs& a, bool swiglu) { return skinny_gemm_cuda(a, sw.ws, nullptr, swiglu ? fused : base); },
            W, base.variant >= 0 ? 17 : 1 + i % 8, 200, 2048, rng);
    }
}

TEST(GemmSwigluCuda, RefusesWhatItDoesNotRun) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(73);
  auto gemm = Gemm::create();
  ASSERT_TRUE(gemm.ok());
  const SwigluWeights W = make(DType::kFp8E4M3, 100, 256, false, rng);  // I = 100: not a multiple of 8
  const SwigluWeights V = make(DType::kFp8E4M3, 96, 256, false, rng);
  auto x = DeviceTensor::empty(DType::kBF16, {4, 256});
  auto xl = DeviceTensor::empty(DType::kBF16, {512, 256});
  auto y = DeviceTensor::empty(DType::kBF16, {512, 200});
  auto b = DeviceTensor::empty(DType::kBF16, {192});
  ASSERT_TRUE(x.ok() && xl.ok() && y.ok() && b.ok());
  Tensor y4 = y->tensor, y96 = y->tensor, y192 = y->tensor;
  y4.shape[0] = y96.shape[0] = y192.shape[0] = 4;
  y4.shape[1] = 100, y96.shape[1] = 96, y192.shape[1] = 192;
  EXPECT_EQ(gemm->run_swiglu({x->tensor, W.dw.tensor, {}, y4, W.dscale.tensor}, nullptr).code(), StatusCode::kUnimplemented);
  EXPECT_EQ(gemm->run_swiglu({x->tensor, V.dw.tensor, {}, y192, V.dscale.tensor}, nullptr).code(),
            StatusCode::kInvalidArgument);  // y [m, 2I]: the plain GEMM's shape
  EXPECT_EQ(gemm->run_swiglu({x->tensor, V.dw.tensor, b->tensor, y96, V.dscale.tensor}, nullptr).code(),
            StatusCode::kUnimplemented);  // bias
  Tensor y512 = y->tensor;
  y512.shape[1] = 96;
  EXPECT_EQ(gemm->run_swiglu({xl->tensor, V.dw.tensor, {}, y512, V.dscale.tensor}, nullptr).code(),
            StatusCode::kUnimplemented);  // m = 512: cuBLASLt's range
  EXPECT_EQ(gemm->run_swiglu({x->tensor, V.dw.tensor, {}, y96, {}}, nullptr).code(), StatusCode::kInvalidArgument);  // no scale
  // The rows without the epilogue: a wgmma row and a stream row chosen explicitly.
  test::SkinnyWorkspace sw;
  const auto v = skinny_gemm_variants();
  for (int i = 0; i < static_cast<int>(v.size()); ++i) {
    if (v[i].w != DType::kFp8E4M3 || v[i].y != DType::kBF16 || !(v[i].wgmma || v[i].stream)) continue;
    SkinnyGemmConfig cfg;
    cfg.variant = i;
    cfg.swiglu = true;
    EXPECT_EQ(skinny_gemm_cuda({x->tensor, V.dw.tensor, {}, y96, V.dscale.tensor}, sw.ws, nullptr, cfg).code(),
              StatusCode::kUnimplemented)
        << "variant " << i;
  }
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

}  // namespace
}  // namespace kiln
