// Random GEMM weights on the host and the device, for the CUDA GEMM tests: bf16, or fp8 e4m3 with
// per-channel / per-tensor scales (quantize_fp8_weights_cpu of random f32), or raw fp8 codes (every
// finite e4m3 value, subnormals included) with random positive scales. CUDA test translation units
// only.
#pragma once
#include <gtest/gtest.h>

#include <random>
#include <utility>

#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/quantize.h"
#include "tests/kernels/kernel_test_util.h"

namespace kiln::test {

struct Weights {  // host copies and the device tensors Gemm::run reads
  HostTensor w, scale;  // scale empty for bf16
  DeviceTensor dw, dscale;
};

// bf16: random; fp8: random f32 quantized on the host (per channel or per tensor), or raw random
// codes (every finite e4m3 value, subnormals included) with a random positive scale.
inline Weights make_weights(DType wt, int64_t n, int64_t k, bool per_tensor, bool raw_codes, std::mt19937& rng) {
  Weights r;
  if (wt == DType::kBF16) {
    r.w = test::random_tensor(DType::kBF16, {n, k}, rng, 0.05f);
  } else if (raw_codes) {
    r.w = HostTensor::zeros(DType::kFp8E4M3, {n, k});
    std::uniform_int_distribution<int> code(0, 255);
    for (int64_t i = 0; i < n * k; ++i) {
      const int c = code(rng);
      r.w.tensor.ptr<uint8_t>()[i] = static_cast<uint8_t>((c & 0x7f) == 0x7f ? 0 : c);
    }
    r.scale = HostTensor::zeros(DType::kF32, {per_tensor ? 1 : n});
    std::uniform_real_distribution<float> u(1e-4f, 2e-3f);
    for (int64_t i = 0; i < r.scale.tensor.numel(); ++i) r.scale.tensor.ptr<float>()[i] = u(rng);
  } else {
    HostTensor f = test::random_tensor(DType::kF32, {n, k}, rng, 0.05f);
    auto q = quantize_fp8_weights_cpu(f.tensor, per_tensor);
    EXPECT_TRUE(q.ok());
    r.w = std::move(q->q);
    r.scale = std::move(q->scale);
  }
  auto dw = to_device(r.w.tensor);
  EXPECT_TRUE(dw.ok());
  r.dw = std::move(dw).value();
  if (!r.scale.tensor.empty()) {
    auto ds = to_device(r.scale.tensor);
    EXPECT_TRUE(ds.ok());
    r.dscale = std::move(ds).value();
  }
  return r;
}

}  // namespace kiln::test
