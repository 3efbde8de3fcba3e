// GPU GEMM (cuBLASLt) against linear_cpu on the same bf16 inputs, for every row of the variant
// table, over decode and prefill-like shapes, with and without bias, with strided rows; the plan
// cache; and the decode kernel's automatic choice of its persistent warp-stream variants on large
// matrices (fp8 and bf16), bit-identical on replay; the fp8 rows widened to f16 on activations
// past f16's range (clamped, finite); the e4m3 rows (x quantized per token) against the per-token
// reference, and their fallback without workspace room. Skipped when no GPU is present (CI).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

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

struct GemmCase {
  int64_t m, n, k;
  bool bias;
  int64_t pad;  // extra elements per row of x and y (strided rows)
};

void check_case(Gemm& gemm, const GemmCudaVariant& v, const GemmCase& c, std::mt19937& rng) {
  SCOPED_TRACE("m=" + std::to_string(c.m) + " n=" + std::to_string(c.n) + " k=" + std::to_string(c.k) +
               " bias=" + std::to_string(c.bias) + " pad=" + std::to_string(c.pad) + " y=" + std::string(dtype_name(v.y)));
  const int64_t m = c.m, n = c.n, k = c.k;
  HostTensor x = test::random_tensor(v.x, {m, k + c.pad}, rng);
  HostTensor w = test::random_tensor(v.w, {n, k}, rng, 0.05f);
  HostTensor b = test::random_tensor(v.y, {n}, rng);
  auto dx = to_device(x.tensor), dw = to_device(w.tensor), db = to_device(b.tensor);
  auto dy = DeviceTensor::empty(v.y, {m, n + c.pad});
  ASSERT_TRUE(dx.ok() && dw.ok() && db.ok() && dy.ok());
  ASSERT_TRUE(fill_bytes(dy->tensor, 0xff).ok());
  Tensor xv = dx->tensor, yv = dy->tensor;
  xv.shape[1] = k;  // views of the first k (n) columns
  yv.shape[1] = n;
  const Status st = gemm.run({xv, dw->tensor, c.bias ? db->tensor : Tensor{}, yv}, nullptr);
  ASSERT_TRUE(st.ok()) << st.to_string();

  // Reference: f32 x (the same bf16 values), bf16 w, f32 bias.
  const std::vector<float> xf_all = test::to_f32(x.tensor);
  HostTensor xf = HostTensor::zeros(DType::kF32, {m, k});
  for (int64_t i = 0; i < m; ++i) std::copy_n(xf_all.begin() + i * (k + c.pad), k, xf.tensor.ptr<float>() + i * k);
  const std::vector<float> bf = test::to_f32(b.tensor);
  HostTensor ref = HostTensor::zeros(DType::kF32, {m, n});
  ASSERT_TRUE(linear_cpu({xf.tensor, w.tensor, c.bias ? Tensor::view(const_cast<float*>(bf.data()), DType::kF32, {n}) : Tensor{},
                          ref.tensor}).ok());
  auto y_host = to_host(dy->tensor, DType::kF32);
  ASSERT_TRUE(y_host.ok());
  const std::vector<float> y_all = test::to_f32(y_host->tensor);
  std::vector<float> y(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i) std::copy_n(y_all.begin() + i * (n + c.pad), n, y.begin() + i * n);
  // bf16 output: rounding of the result; f32 output: only the summation order differs.
  const double tol = v.y == DType::kF32 ? 1e-4 : 1e-2;
  EXPECT_LT(scaled_error(y, test::to_f32(ref.tensor)), tol);
}

TEST(GemmCuda, MatchesCpuReference) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(21);
  const GemmCase cases[] = {
      {1, 4096, 4096, false, 0}, {1, 6144, 4096, true, 0}, {7, 1000, 72, true, 0},   {16, 512, 1024, false, 8},
      {64, 1536, 2048, true, 0}, {300, 320, 576, false, 24}, {1000, 2048, 256, true, 0},
  };
  for (bool autotune : {false, true}) {  // the heuristic's choice, and the fastest of its candidates
    SCOPED_TRACE(autotune ? "autotuned" : "heuristic");
    auto gemm = Gemm::create({.autotune = autotune});
    ASSERT_TRUE(gemm.ok()) << gemm.status().to_string();
    for (const auto& v : gemm_cuda_variants())  // fp8 weights: gemm_fp8_cuda_test.cu
      if (v.w == DType::kBF16)
        for (const auto& c : cases) check_case(*gemm, v, c, rng);
  }
}

TEST(GemmCuda, CachesPlansPerShape) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(22);
  auto gemm = Gemm::create({.skinny_max_m_bf16 = 0});  // cuBLASLt for every m (the decode kernel has no plans)
  ASSERT_TRUE(gemm.ok());
  HostTensor x = test::random_tensor(DType::kBF16, {8, 256}, rng), w = test::random_tensor(DType::kBF16, {128, 256}, rng);
  auto dx = to_device(x.tensor), dw = to_device(w.tensor);
  auto dy = DeviceTensor::empty(DType::kBF16, {8, 128});
  ASSERT_TRUE(dx.ok() && dw.ok() && dy.ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(gemm->run({dx->tensor, dw->tensor, {}, dy->tensor}, nullptr).ok());
  EXPECT_EQ(gemm->cached_plans(), 1);
  ASSERT_TRUE(gemm->run({dx->tensor.slice0(0, 4), dw->tensor, {}, dy->tensor.slice0(0, 4)}, nullptr).ok());
  EXPECT_EQ(gemm->cached_plans(), 2);
  // Mismatched shapes and dtypes are errors.
  EXPECT_FALSE(gemm->run({dx->tensor, dw->tensor, {}, dx->tensor}, nullptr).ok());
  HostTensor xf = HostTensor::zeros(DType::kF32, {8, 256});
  auto dxf = to_device(xf.tensor);
  ASSERT_TRUE(dxf.ok());
  EXPECT_EQ(gemm->run({dxf->tensor, dw->tensor, {}, dy->tensor}, nullptr).code(), StatusCode::kUnimplemented);
}


// Large weight matrices (>= 96 MiB) with m > 1 take a stream variant (fp8 -> bf16 m <= 8 stays on
// the grid kernel, m = 9..16 takes the wgmma row at n >= 16384): the result matches linear_cpu (x
// per token to e4m3 for the wgmma row) and a second call gives the same bits.
TEST(GemmSkinnyCuda, LargeMatricesTakeTheWarpStream) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(23);
  test::SkinnyWorkspace workspace;
  const SkinnyGemmWorkspace& ws = workspace.ws;
  const int64_t k = 4096;
  for (DType wt : {DType::kFp8E4M3, DType::kBF16}) {
    const int64_t n = wt == DType::kBF16 ? 12288 : 24576;  // 96 MiB either way
    HostTensor w, scale;
    if (wt == DType::kBF16) {
      w = test::random_tensor(DType::kBF16, {n, k}, rng, 0.05f);
    } else {
      auto q = quantize_fp8_weights_cpu(test::random_tensor(DType::kF32, {n, k}, rng, 0.05f).tensor, false);
      ASSERT_TRUE(q.ok());
      w = std::move(q->q);
      scale = std::move(q->scale);
    }
    auto dw = to_device(w.tensor);
    ASSERT_TRUE(dw.ok());
    DeviceTensor ds;
    if (!scale.tensor.empty()) {
      auto d = to_device(scale.tensor);
      ASSERT_TRUE(d.ok());
      ds = std::move(d).value();
    }
    for (int64_t m : {2, 11}) {
      for (DType yt : {DType::kBF16, DType::kF32}) {
        if (wt == DType::kBF16 && m > 8) continue;
        SCOPED_TRACE("w=" + std::string(dtype_name(wt)) + " m=" + std::to_string(m) + " y=" + std::string(dtype_name(yt)));
        HostTensor x = test::random_tensor(DType::kBF16, {m, k}, rng);
        auto dx = to_device(x.tensor);
        auto dy = DeviceTensor::empty(yt, {m, n});
        ASSERT_TRUE(dx.ok() && dy.ok());
        SkinnyGemmLaunch launch;
        const LinearArgs args{dx->tensor, dw->tensor, {}, dy->tensor, ds.tensor};
        const Status st = skinny_gemm_cuda(args, ws, nullptr, {}, &launch);
        ASSERT_TRUE(st.ok()) << st.to_string();
        // fp8 -> bf16: the grid kernel at m <= 8, a wgmma row (x per token to e4m3) where preferred
        const bool e4m3 = wt == DType::kFp8E4M3 && skinny_gemm_quantizes_x(wt, yt, m, n);
        const bool grid = (wt == DType::kFp8E4M3 && yt == DType::kBF16 && m <= 8) || e4m3;
        EXPECT_EQ(skinny_gemm_variants()[static_cast<size_t>(launch.variant)].stream, !grid);
        auto first = to_host(dy->tensor);
        ASSERT_TRUE(first.ok());
        ASSERT_TRUE(skinny_gemm_cuda(args, ws, nullptr, {}, nullptr).ok());
        auto again = to_host(dy->tensor);
        ASSERT_TRUE(again.ok());
        EXPECT_EQ(0, std::memcmp(first->tensor.data, again->tensor.data, static_cast<size_t>(first->tensor.nbytes())));
        HostTensor ref = HostTensor::zeros(DType::kF32, {m, n});
        std::vector<float> xf = test::to_f32(x.tensor);
        if (e4m3) {  // the reference rounds x per token to e4m3 as the kernel does
          const Tensor xv = Tensor::view(xf.data(), DType::kF32, {m, k});
          HostTensor q = HostTensor::zeros(DType::kFp8E4M3, {m, k}), sc = HostTensor::zeros(DType::kF32, {m});
          ASSERT_TRUE(quantize_fp8_cpu({xv, q.tensor, sc.tensor}).ok());
          ASSERT_TRUE(dequantize_fp8_weights_cpu(q.tensor, sc.tensor, xv).ok());
        }
        ASSERT_TRUE(linear_cpu({Tensor::view(const_cast<float*>(xf.data()), DType::kF32, {m, k}), w.tensor, {}, ref.tensor,
                                scale.tensor}).ok());
        auto yh = to_host(dy->tensor, DType::kF32);
        ASSERT_TRUE(yh.ok());
        EXPECT_LT(scaled_error(test::to_f32(yh->tensor), test::to_f32(ref.tensor)), yt == DType::kF32 ? 1e-4 : 1e-2);
      }
    }
  }
}

// The fp8 variants widened to f16 (x rounded to f16 in the kernel) against linear_cpu on the
// bf16 x and the dequantized weights, with activations of standard deviation 1, 3e4 and 1e5
// (past f16's 65504 the kernel clamps, so the reference takes x clamped to +-65504, and the
// result must stay finite), for m = 1, the tile's half + 1 and its full m.
TEST(GemmSkinnyCuda, F16WideningClampsLargeActivations) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(24);
  test::SkinnyWorkspace workspace;
  const SkinnyGemmWorkspace& ws = workspace.ws;
  const int64_t n = 1000, k = 2064;
  auto q = quantize_fp8_weights_cpu(test::random_tensor(DType::kF32, {n, k}, rng, 0.05f).tensor, false);
  ASSERT_TRUE(q.ok());
  auto dw = to_device(q->q.tensor), ds = to_device(q->scale.tensor);
  ASSERT_TRUE(dw.ok() && ds.ok());
  const auto variants = skinny_gemm_variants();
  int tested = 0;
  for (int vi = 0; vi < static_cast<int>(variants.size()); ++vi) {
    const SkinnyGemmVariant& v = variants[static_cast<size_t>(vi)];
    if (!v.f16) continue;
    ++tested;
    for (int64_t m : {int64_t{1}, static_cast<int64_t>(v.max_m / 2 + 1), static_cast<int64_t>(v.max_m)}) {
      for (float x_scale : {1.f, 3e4f, 1e5f}) {
        SCOPED_TRACE("variant " + std::to_string(vi) + " m=" + std::to_string(m) + " |x|~" + std::to_string(x_scale));
        HostTensor x = test::random_tensor(DType::kBF16, {m, k}, rng, x_scale);
        auto dx = to_device(x.tensor);
        auto dy = DeviceTensor::empty(v.y, {m, n});
        ASSERT_TRUE(dx.ok() && dy.ok());
        const Status st = skinny_gemm_cuda({dx->tensor, dw->tensor, {}, dy->tensor, ds->tensor}, ws, nullptr, {vi, 0, 0}, nullptr);
        ASSERT_TRUE(st.ok()) << st.to_string();
        std::vector<float> xf = test::to_f32(x.tensor);
        int clamped = 0;
        for (float& e : xf)
          if (std::fabs(e) > 65504.f) { e = std::copysign(65504.f, e); ++clamped; }
        if (x_scale > 65504.f) EXPECT_GT(clamped, 0);  // the clamp path ran
        HostTensor ref = HostTensor::zeros(DType::kF32, {m, n});
        ASSERT_TRUE(linear_cpu({Tensor::view(xf.data(), DType::kF32, {m, k}), q->q.tensor, {}, ref.tensor, q->scale.tensor}).ok());
        auto yh = to_host(dy->tensor, DType::kF32);
        ASSERT_TRUE(yh.ok());
        const std::vector<float> y = test::to_f32(yh->tensor);
        EXPECT_TRUE(std::all_of(y.begin(), y.end(), [](float e) { return std::isfinite(e); }));
        EXPECT_LT(scaled_error(y, test::to_f32(ref.tensor)), v.y == DType::kF32 ? 1e-4 : 1e-2);
      }
    }
  }
  EXPECT_GT(tested, 0);
}

// The e4m3 rows (x quantized per token to e4m3 by the pre-pass, the e4m3 mma on the raw weight
// bytes) against linear_cpu on x rounded per row by quantize_fp8_cpu (the prefill path's
// arithmetic) and the dequantized weights: only the f32 summation order and y's bf16 rounding
// differ. m at 1, the tile switch (8 / 9) and the tile's end; n not a multiple of the 16-row
// tiles; k not a multiple of the 64-wide k step; a zero row of x and a row with one huge value
// (3e4); automatic and forced launch shapes (split K), with and without PDL.
TEST(GemmSkinnyCuda, E4m3RowsMatchPerTokenReference) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(25);
  test::SkinnyWorkspace workspace;
  SkinnyGemmWorkspace& ws = workspace.ws;
  const struct { int64_t n, k; } shapes[] = {{1000, 2064}, {4096, 4096}, {520, 14336}, {24, 48}};
  const auto variants = skinny_gemm_variants();
  int tested = 0;
  for (const auto& s : shapes) {
    auto q = quantize_fp8_weights_cpu(test::random_tensor(DType::kF32, {s.n, s.k}, rng, 0.05f).tensor, false);
    ASSERT_TRUE(q.ok());
    auto dw = to_device(q->q.tensor), ds = to_device(q->scale.tensor);
    ASSERT_TRUE(dw.ok() && ds.ok());
    for (int vi = 0; vi < static_cast<int>(variants.size()); ++vi) {
      const SkinnyGemmVariant& v = variants[static_cast<size_t>(vi)];
      if (!v.e4m3 || v.y != DType::kBF16) continue;  // y f32: WgmmaRowsMatchPerTokenReference
      ++tested;
      for (int64_t m : {int64_t{1}, int64_t{8}, int64_t{9}, static_cast<int64_t>(v.max_m / 2 + 1), static_cast<int64_t>(v.max_m)}) {
        if (m > v.max_m || (m == v.max_m / 2 + 1 && m <= 9)) continue;
        const SkinnyGemmConfig cfgs[] = {{vi, 0, 0}, {vi, 3, 0}, {vi, 8, 3}, {vi, 1, 1}};
        const int which = static_cast<int>((m + s.n + vi) % 4);
        ws.pdl = (m + s.k + vi) % 2 == 0;
        SCOPED_TRACE("variant " + std::to_string(vi) + " m=" + std::to_string(m) + " n=" + std::to_string(s.n) +
                     " k=" + std::to_string(s.k) + " cfg " + std::to_string(which) + " pdl=" + std::to_string(ws.pdl));
        HostTensor x = test::random_tensor(DType::kBF16, {m, s.k}, rng);
        uint16_t* xb = x.tensor.ptr<uint16_t>();
        if (m >= 3) std::fill_n(xb + s.k, s.k, uint16_t{0});  // row 1: all zeros (scale 1, y = 0)
        if (m >= 2) xb[(m - 1) * s.k + s.k / 3] = 0x46EA;      // last row: one value 29952 (~3e4)
        auto dx = to_device(x.tensor);
        auto dy = DeviceTensor::empty(DType::kBF16, {m, s.n});
        ASSERT_TRUE(dx.ok() && dy.ok());
        ASSERT_TRUE(fill_bytes(dy->tensor, 0xff).ok());
        const Status st = skinny_gemm_cuda({dx->tensor, dw->tensor, {}, dy->tensor, ds->tensor}, ws, nullptr, cfgs[which], nullptr);
        ASSERT_TRUE(st.ok()) << st.to_string();
        HostTensor xf = HostTensor::zeros(DType::kF32, {m, s.k});
        const std::vector<float> xv = test::to_f32(x.tensor);
        std::copy(xv.begin(), xv.end(), xf.tensor.ptr<float>());
        HostTensor xq = HostTensor::zeros(DType::kFp8E4M3, {m, s.k}), xs = HostTensor::zeros(DType::kF32, {m});
        ASSERT_TRUE(quantize_fp8_cpu({xf.tensor, xq.tensor, xs.tensor}).ok());
        ASSERT_TRUE(dequantize_fp8_weights_cpu(xq.tensor, xs.tensor, xf.tensor).ok());
        HostTensor ref = HostTensor::zeros(DType::kF32, {m, s.n});
        ASSERT_TRUE(linear_cpu({xf.tensor, q->q.tensor, {}, ref.tensor, q->scale.tensor}).ok());
        auto yh = to_host(dy->tensor, DType::kF32);
        ASSERT_TRUE(yh.ok());
        const std::vector<float> y = test::to_f32(yh->tensor), r = test::to_f32(ref.tensor);
        EXPECT_TRUE(std::all_of(y.begin(), y.end(), [](float e) { return std::isfinite(e); }));
        // Per row, relative to the row's max |y| (the huge row would hide the others' errors);
        // bf16 y rounds to 2^-9 relative, so 4e-3 bounds it with room for the summation order.
        for (int64_t i = 0; i < m; ++i) {
          const std::vector<float> yi(y.begin() + i * s.n, y.begin() + (i + 1) * s.n), ri(r.begin() + i * s.n, r.begin() + (i + 1) * s.n);
          if (m >= 3 && i == 1) {
            EXPECT_TRUE(std::all_of(yi.begin(), yi.end(), [](float e) { return e == 0.f; })) << "the zero row";
            continue;
          }
          EXPECT_LT(scaled_error(yi, ri), 4e-3) << "row " << i;
        }
      }
    }
  }
  EXPECT_GT(tested, 0);
  ws.pdl = true;
}

// A workspace too small for x: an e4m3 row asked for explicitly is refused; the automatic choice
// takes a row that keeps x bf16.
TEST(GemmSkinnyCuda, E4m3NeedsRoomForX) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(26);
  test::SkinnyWorkspace workspace;
  SkinnyGemmWorkspace ws = workspace.ws;
  ws.partial_floats = 1024;  // 4 KB: no room for 16 x 4096 bytes of x
  const int64_t m = 16, n = 256, k = 4096;
  auto q = quantize_fp8_weights_cpu(test::random_tensor(DType::kF32, {n, k}, rng, 0.05f).tensor, false);
  ASSERT_TRUE(q.ok());
  auto dw = to_device(q->q.tensor), ds = to_device(q->scale.tensor);
  HostTensor x = test::random_tensor(DType::kBF16, {m, k}, rng);
  auto dx = to_device(x.tensor);
  auto dy = DeviceTensor::empty(DType::kBF16, {m, n});
  ASSERT_TRUE(dw.ok() && ds.ok() && dx.ok() && dy.ok());
  const LinearArgs args{dx->tensor, dw->tensor, {}, dy->tensor, ds->tensor};
  const auto variants = skinny_gemm_variants();
  for (int vi = 0; vi < static_cast<int>(variants.size()); ++vi)
    if (variants[static_cast<size_t>(vi)].e4m3 && variants[static_cast<size_t>(vi)].max_m >= m &&
        variants[static_cast<size_t>(vi)].y == DType::kBF16)
      EXPECT_EQ(skinny_gemm_cuda(args, ws, nullptr, {vi, 0, 0}, nullptr).code(), StatusCode::kUnimplemented);
  SkinnyGemmLaunch launch;
  ASSERT_TRUE(skinny_gemm_cuda(args, ws, nullptr, {}, &launch).ok());
  EXPECT_FALSE(variants[static_cast<size_t>(launch.variant)].e4m3);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

}  // namespace
}  // namespace kiln
