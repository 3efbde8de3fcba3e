// moe_grouped_gemm_cuda over lanes (streams that run at the same time) against the one-stream loop
// (the same bits) and the CPU reference (linear_cpu per expert), bf16 and fp8 experts, fresh random
// inputs; work queued on the caller's stream after the call sees every lane's rows. GPU suites skip
// without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/gemm_cuda.h"
#include "kiln/kernels/linear.h"
#include "kiln/kernels/moe_cuda.h"
#include "kiln/kernels/quantize.h"
#include "tests/kernels/kernel_test_util.h"

namespace kiln {
namespace {

constexpr int kLanes = 3;

// Lane 0's Gemm and stream, and a set of kLanes lanes over them.
struct Lanes {
  Gemm gemm0 = std::move(Gemm::create()).value();
  cudaStream_t stream0 = nullptr;
  MoeLaneSet set;
  Lanes() {
    EXPECT_EQ(cudaStreamCreateWithFlags(&stream0, cudaStreamNonBlocking), cudaSuccess);
    auto s = MoeLaneSet::create(kLanes, &gemm0, stream0);
    EXPECT_TRUE(s.ok());
    set = std::move(s).value();
  }
  ~Lanes() {
    set = MoeLaneSet();  // its streams first
    cudaStreamDestroy(stream0);
  }
  MoeGemmLanes view(int n = kLanes) const { return set.view(n); }
  std::span<CUstream_st* const> streams() const { return set.view().streams; }
};

// y on the host, copied on stream s after what is queued there (not a device-wide synchronize).
std::vector<uint8_t> bytes_on(const Tensor& y, cudaStream_t s) {
  std::vector<uint8_t> h(static_cast<size_t>(y.numel() * dtype_bytes(y.dtype, 1)));
  EXPECT_EQ(cudaMemcpyAsync(h.data(), y.data, h.size(), cudaMemcpyDeviceToHost, s), cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  return h;
}

std::vector<float> bf16_bytes_to_f32(const std::vector<uint8_t>& b) {
  std::vector<float> v(b.size() / 2);
  (void)convert(b.data(), DType::kBF16, v.data(), DType::kF32, static_cast<int64_t>(v.size()));
  return v;
}

TEST(MoeGroupedGemmLanesCuda, MatchOneLaneAndTheCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  const int64_t n = 384, k = 512;
  // an empty expert, one of 4 rows (the decode kernel's range), the rest cuBLASLt's
  const std::vector<int32_t> offsets = {0, 72, 72, 204, 208, 408, 424, 520};
  const int64_t experts = static_cast<int64_t>(offsets.size()) - 1, rows = offsets.back();
  for (const bool fp8 : {false, true}) {
    SCOPED_TRACE(fp8 ? "fp8" : "bf16");
    std::mt19937 rng(fp8 ? 21 : 22);
    Lanes lanes;
    // x: bf16, or per-row e4m3 (quantize_fp8_cpu) and its scales; the CPU reference takes x as f32.
    HostTensor x = test::random_tensor(DType::kBF16, {rows, k}, rng);
    HostTensor xq = HostTensor::zeros(DType::kFp8E4M3, {rows, k}), xs = HostTensor::zeros(DType::kF32, {rows});
    ASSERT_TRUE(quantize_fp8_cpu({x.tensor, xq.tensor, xs.tensor}).ok());
    std::vector<float> xf = test::to_f32(fp8 ? xq.tensor : x.tensor);
    if (fp8)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = 0; i < k; ++i) xf[static_cast<size_t>(r * k + i)] *= xs.tensor.ptr<float>()[r];
    auto dx = to_device(fp8 ? xq.tensor : x.tensor);
    auto dxs = to_device(xs.tensor);
    ASSERT_TRUE(dx.ok() && dxs.ok());
    std::vector<HostTensor> hw, hs;
    std::vector<DeviceTensor> dw, ds;
    std::vector<Tensor> w, s;
    for (int64_t e = 0; e < experts; ++e) {
      HostTensor f = test::random_tensor(DType::kF32, {n, k}, rng, 0.05f);
      if (fp8) {
        auto q = quantize_fp8_weights_cpu(f.tensor, false);
        ASSERT_TRUE(q.ok());
        hw.push_back(std::move(q->q));
        hs.push_back(std::move(q->scale));
      } else {
        HostTensor b = HostTensor::zeros(DType::kBF16, {n, k});
        ASSERT_TRUE(convert(f.tensor.data, DType::kF32, b.tensor.data, DType::kBF16, n * k).ok());
        hw.push_back(std::move(b));
      }
      auto d = to_device(hw.back().tensor);
      ASSERT_TRUE(d.ok());
      dw.push_back(std::move(d).value());
      w.push_back(dw.back().tensor);
      if (fp8) {
        auto d2 = to_device(hs.back().tensor);
        ASSERT_TRUE(d2.ok());
        ds.push_back(std::move(d2).value());
        s.push_back(ds.back().tensor);
      }
    }
    auto y1 = DeviceTensor::empty(DType::kBF16, {rows, n});
    auto y2 = DeviceTensor::empty(DType::kBF16, {rows, n});
    ASSERT_TRUE(y1.ok() && y2.ok());
    ASSERT_EQ(cudaMemset(y2->tensor.data, 0xff, static_cast<size_t>(rows * n * 2)), cudaSuccess);  // NaN until written
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const MoeGroupedGemmArgs args{dx->tensor, w, offsets, y1->tensor, s, fp8 ? dxs->tensor : Tensor{}};
    MoeGroupedGemmArgs args2 = args;
    args2.y = y2->tensor;
    ASSERT_TRUE(moe_grouped_gemm_cuda(lanes.gemm0, args, lanes.stream0).ok());
    ASSERT_TRUE(moe_grouped_gemm_cuda(lanes.view(), args2).ok());
    const std::vector<uint8_t> one = bytes_on(y1->tensor, lanes.stream0), many = bytes_on(y2->tensor, lanes.stream0);
    EXPECT_EQ(one, many) << "lanes and one lane differ";
    // The CPU reference, expert by expert.
    const std::vector<float> got = bf16_bytes_to_f32(many);
    std::vector<float> ref(static_cast<size_t>(rows * n));
    for (int64_t e = 0; e < experts; ++e) {
      const int64_t m = offsets[e + 1] - offsets[e];
      if (m == 0) continue;
      Tensor xe = Tensor::view(xf.data() + offsets[e] * k, DType::kF32, {m, k}, Device::kCpu);
      Tensor ye = Tensor::view(ref.data() + offsets[e] * n, DType::kF32, {m, n}, Device::kCpu);
      ASSERT_TRUE(linear_cpu({xe, hw[e].tensor, {}, ye, fp8 ? hs[e].tensor : Tensor{}}).ok());
    }
    EXPECT_LE(test::scaled_error(got, ref), 1e-2);
    // Fewer lanes than experts with rows, and one lane, give the same bits too.
    for (int l : {1, 2}) {
      ASSERT_EQ(cudaMemsetAsync(y2->tensor.data, 0xff, static_cast<size_t>(rows * n * 2), lanes.stream0), cudaSuccess);
      ASSERT_TRUE(moe_grouped_gemm_cuda(lanes.view(l), args2).ok());
      EXPECT_EQ(one, bytes_on(y2->tensor, lanes.stream0)) << l << " lanes";
    }
    // Mismatched lanes are refused.
    MoeGemmLanes bad = lanes.view();
    bad.events = bad.events.first(2);
    EXPECT_FALSE(moe_grouped_gemm_cuda(bad, args2).ok());
    const std::vector<cudaStream_t> no_stream = {lanes.stream0, nullptr, lanes.streams()[2]};
    bad = lanes.view();
    bad.streams = no_stream;
    EXPECT_FALSE(moe_grouped_gemm_cuda(bad, args2).ok());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  }
}

}  // namespace
}  // namespace kiln
