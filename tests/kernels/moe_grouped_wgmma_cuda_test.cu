// The one-launch grouped MoE GEMM (moe_grouped_wgmma_cuda, Hopper) on fresh random inputs against a
// plain CPU dot product per expert row with the scales applied: uneven experts (empty, one row,
// more than one 128-row block), n past a 256-column block, k past a 128-byte step and longer than
// the stage ring, more tiles than CTAs; rows past the last offset untouched; clamped and unsorted
// offsets; bad arguments refused. Skips without an sm_90 GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/moe_cuda.h"
#include "tests/kernels/kernel_test_util.h"

namespace kiln {
namespace {

struct Case {
  int64_t n = 6208, k = 528;  // 25 column blocks (the last of 64), 5 k steps (the last of 16 bytes)
  std::vector<int32_t> counts = {37, 0, 200, 5, 130, 1};
  std::vector<int32_t> off;      // aligned to 4, as the fp8 grouped path permutes
  int64_t rows = 0;              // off.back() + 7 rows past the experts
  std::vector<HostTensor> hw, hs;
  std::vector<DeviceTensor> dw, ds;
  HostTensor x, xs;
  explicit Case(std::mt19937& rng) {
    off.assign(counts.size() + 1, 0);
    for (size_t e = 0; e < counts.size(); ++e) off[e + 1] = off[e] + (counts[e] + 3) / 4 * 4;
    rows = off.back() + 7;
    std::uniform_real_distribution<float> sd(0.5f, 2.0f);
    for (size_t e = 0; e < counts.size(); ++e) {
      hw.push_back(test::random_tensor(DType::kFp8E4M3, {n, k}, rng, 2.0f));
      hs.push_back(HostTensor::zeros(DType::kF32, {n}));
      for (int64_t j = 0; j < n; ++j) hs.back().tensor.ptr<float>()[j] = sd(rng) * 1e-2f;
      dw.push_back(std::move(to_device(hw.back().tensor)).value());
      ds.push_back(std::move(to_device(hs.back().tensor)).value());
    }
    x = test::random_tensor(DType::kFp8E4M3, {rows, k}, rng, 3.0f);
    xs = HostTensor::zeros(DType::kF32, {rows});
    for (int64_t r = 0; r < rows; ++r) xs.tensor.ptr<float>()[r] = sd(rng);
  }
  std::vector<Tensor> views(const std::vector<DeviceTensor>& d) const {
    std::vector<Tensor> v;
    for (const DeviceTensor& t : d) v.push_back(t.tensor);
    return v;
  }
};

TEST(MoeGroupedWgmmaCuda, MatchesCpuPerExpert) {
  if (!cuda_available() || !moe_grouped_wgmma_available()) GTEST_SKIP() << "no sm_90 GPU";
  std::mt19937 rng(2025);
  const Case c(rng);
  const std::vector<Tensor> w = c.views(c.dw), s = c.views(c.ds);
  auto dx = to_device(c.x.tensor);
  auto dxs = to_device(c.xs.tensor);
  auto dy = DeviceTensor::empty(DType::kBF16, {c.rows, c.n});
  ASSERT_TRUE(dx.ok() && dxs.ok() && dy.ok());
  const std::vector<float> xf = test::to_f32(c.x.tensor);
  // offsets: as permuted, and with the last one past the rows (clamped to them)
  std::vector<int32_t> clamped = c.off;
  clamped.back() = static_cast<int32_t>(c.rows + 1000);
  for (const bool edge : {false, true}) {
    SCOPED_TRACE(edge ? "clamped offsets" : "offsets as permuted");
    const std::vector<int32_t>& off = edge ? clamped : c.off;
    HostTensor ho = HostTensor::zeros(DType::kInt32, {static_cast<int64_t>(off.size())});
    std::memcpy(ho.tensor.data, off.data(), off.size() * 4);
    auto doff = to_device(ho.tensor);
    ASSERT_TRUE(doff.ok());
    ASSERT_EQ(cudaMemset(dy->tensor.data, 0xff, static_cast<size_t>(c.rows * c.n * 2)), cudaSuccess);  // NaN
    ASSERT_TRUE(moe_grouped_wgmma_cuda({dx->tensor, dxs->tensor, w, s, doff->tensor, dy->tensor}, nullptr).ok());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    auto hy = to_host(dy->tensor);
    ASSERT_TRUE(hy.ok());
    const std::vector<float> y = test::to_f32(hy->tensor);
    std::vector<float> got, want;
    const int64_t end_all = edge ? c.rows : c.off.back();
    for (size_t e = 0; e < c.counts.size(); ++e) {
      const std::vector<float> wf = test::to_f32(c.hw[e].tensor);
      const float* ws = c.hs[e].tensor.ptr<float>();
      const int64_t end = e + 1 == c.counts.size() ? end_all : off[e + 1];
      for (int64_t r = off[e]; r < end; ++r)
        for (int64_t j = 0; j < c.n; ++j) {
          double acc = 0;
          for (int64_t q = 0; q < c.k; ++q) acc += double(xf[static_cast<size_t>(r * c.k + q)]) * wf[static_cast<size_t>(j * c.k + q)];
          want.push_back(static_cast<float>(acc * c.xs.tensor.ptr<float>()[r] * ws[j]));
          got.push_back(y[static_cast<size_t>(r * c.n + j)]);
        }
    }
    EXPECT_EQ(static_cast<int64_t>(want.size()), (end_all - c.off[0]) * c.n);
    EXPECT_LE(test::scaled_error(got, want), 8e-3);  // bf16 output, fp8 products summed in f32
    int64_t untouched = 0;
    for (int64_t r = end_all; r < c.rows; ++r)
      for (int64_t j = 0; j < c.n; ++j) untouched += std::isnan(y[static_cast<size_t>(r * c.n + j)]) ? 1 : 0;
    EXPECT_EQ(untouched, (c.rows - end_all) * c.n) << "rows past the last offset were written";
  }
  // unsorted (experts 2 and 3's starts swapped): runs, and writes no row past the last offset
  std::vector<int32_t> unsorted = c.off;
  std::swap(unsorted[2], unsorted[3]);
  HostTensor ho = HostTensor::zeros(DType::kInt32, {static_cast<int64_t>(unsorted.size())});
  std::memcpy(ho.tensor.data, unsorted.data(), unsorted.size() * 4);
  auto doff = to_device(ho.tensor);
  ASSERT_TRUE(doff.ok());
  ASSERT_EQ(cudaMemset(dy->tensor.data, 0xff, static_cast<size_t>(c.rows * c.n * 2)), cudaSuccess);
  ASSERT_TRUE(moe_grouped_wgmma_cuda({dx->tensor, dxs->tensor, w, s, doff->tensor, dy->tensor}, nullptr).ok());
  auto hy = to_host(dy->tensor);
  ASSERT_TRUE(hy.ok());
  const std::vector<float> y = test::to_f32(hy->tensor);
  int64_t written = 0;
  for (int64_t r = c.off.back(); r < c.rows; ++r)
    for (int64_t j = 0; j < c.n; ++j) written += std::isnan(y[static_cast<size_t>(r * c.n + j)]) ? 0 : 1;
  EXPECT_EQ(written, 0) << "unsorted offsets wrote rows past the last offset";

  // Bad arguments: refused, nothing launched.
  auto doff0 = to_device(ho.tensor);
  ASSERT_TRUE(doff0.ok());
  const Tensor off_t = doff0->tensor;
  std::vector<Tensor> per_tensor = s;
  auto one = DeviceTensor::empty(DType::kF32, {1});
  ASSERT_TRUE(one.ok());
  per_tensor[1] = one->tensor;
  EXPECT_EQ(moe_grouped_wgmma_cuda({dx->tensor, dxs->tensor, w, per_tensor, off_t, dy->tensor}, nullptr).code(),
            StatusCode::kInvalidArgument) << "per-tensor scales";
  EXPECT_EQ(moe_grouped_wgmma_cuda({dx->tensor, dxs->tensor, w, s, off_t, dy->tensor.slice0(0, c.rows - 1)}, nullptr).code(),
            StatusCode::kInvalidArgument) << "y of other rows";
  EXPECT_EQ(moe_grouped_wgmma_cuda({dx->tensor, dxs->tensor, std::span<const Tensor>(w.data(), 5), s, off_t, dy->tensor}, nullptr).code(),
            StatusCode::kInvalidArgument) << "fewer weights than scales";
  EXPECT_EQ(moe_grouped_wgmma_cuda({dx->tensor, dxs->tensor, w, s, dx->tensor, dy->tensor}, nullptr).code(),
            StatusCode::kInvalidArgument) << "offsets not int32";
  auto dxb = DeviceTensor::empty(DType::kBF16, {c.rows, c.k});
  ASSERT_TRUE(dxb.ok());
  EXPECT_EQ(moe_grouped_wgmma_cuda({dxb->tensor, dxs->tensor, w, s, off_t, dy->tensor}, nullptr).code(),
            StatusCode::kInvalidArgument) << "bf16 x";
}

}  // namespace
}  // namespace kiln
