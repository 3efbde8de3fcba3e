// GPU sampling picks exactly the ids sample_cpu picks: random logits (with planted ties) for a
// batch with mixed parameters (greedy, temperature, top-k, top-p, min-p, combinations), several
// steps per request, several vocabulary sizes. Skipped when no GPU is present (CI).
#include <gtest/gtest.h>

#include <algorithm>
#include <tuple>

#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/sampling.h"
#include "kiln/kernels/sampling_cuda.h"
#include "tests/kernels/kernel_test_util.h"

namespace kiln {
namespace {

std::vector<SamplingParams> mixed_params(int64_t batch, std::mt19937& rng) {
  const SamplingParams kinds[] = {
      {0.0f, 0, 1.0f, 0.0f, 0},        // greedy
      {0.7f, 1, 1.0f, 0.0f, 0},        // top_k 1 = greedy
      {0.7f, 50, 1.0f, 0.0f, 0},       // top-k
      {1.0f, 0, 0.9f, 0.0f, 0},        // top-p
      {1.3f, 0, 1.0f, 0.05f, 0},       // min-p
      {0.8f, 40, 0.95f, 0.1f, 0},      // all three
      {1.0f, 0, 1.0f, 0.0f, 0},        // the whole vocabulary
      {2.5f, 0, 0.5f, 0.0f, 0},        // hot and narrow
      {0.3f, 1000, 0.99f, 0.01f, 0},   // cold, wide top-k
      {1.0f, 0, 1.0f, 1.0f, 0},        // min-p 1: only the top token (and its ties)
  };
  std::vector<SamplingParams> params(static_cast<size_t>(batch));
  for (int64_t b = 0; b < batch; ++b) {
    params[static_cast<size_t>(b)] = kinds[b % std::size(kinds)];
    params[static_cast<size_t>(b)].seed = (static_cast<uint64_t>(rng()) << 32) | rng();
  }
  return params;
}

TEST(SampleCuda, PicksTheCpuIds) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(41);
  auto sampler = CudaSampler::create();
  ASSERT_TRUE(sampler.ok());
  for (const auto& v : sample_cuda_variants()) {
    for (auto [batch, vocab, scale] : std::vector<std::tuple<int64_t, int64_t, float>>{
             {1, 50, 1.f}, {23, 1000, 3.f}, {40, 32000, 4.f}, {10, 128256, 2.f}, {12, 50001, 3.f}, {3, 7, 0.f}}) {
      SCOPED_TRACE("batch=" + std::to_string(batch) + " vocab=" + std::to_string(vocab));
      HostTensor logits = test::random_tensor(v.logits, {batch, vocab}, rng, scale > 0 ? scale : 1.f);
      float* l = logits.tensor.ptr<float>();
      if (scale == 0) std::fill(l, l + batch * vocab, 0.5f);  // every token tied
      for (int64_t b = 0; b < batch; ++b) {  // plant ties: the top logit twice, and a tied pair lower down
        float* row = l + b * vocab;
        const int64_t top = std::max_element(row, row + vocab) - row;
        row[(top + vocab / 2) % vocab] = row[top];
        if (vocab > 10) row[3] = row[7];
      }
      std::vector<SamplingParams> params = mixed_params(batch, rng);
      auto dl = to_device(logits.tensor);
      auto dids = DeviceTensor::empty(DType::kInt32, {batch});
      ASSERT_TRUE(dl.ok() && dids.ok());
      int mismatches = 0;
      for (uint64_t step : {0ull, 1ull, 17ull, 123456789ull}) {
        std::vector<uint64_t> steps(static_cast<size_t>(batch), step);
        HostTensor want = HostTensor::zeros(DType::kInt32, {batch});
        ASSERT_TRUE(sample_cpu({logits.tensor, params, steps, want.tensor}).ok());
        ASSERT_TRUE(fill_bytes(dids->tensor, 0xff).ok());
        const Status st = sampler->sample({dl->tensor, params, steps, dids->tensor}, nullptr);
        ASSERT_TRUE(st.ok()) << st.to_string();
        auto got = to_host(dids->tensor);
        ASSERT_TRUE(got.ok());
        for (int64_t b = 0; b < batch; ++b) {
          const int32_t g = got->tensor.ptr<int32_t>()[b], w = want.tensor.ptr<int32_t>()[b];
          if (g != w && ++mismatches <= 10)
            ADD_FAILURE() << "row " << b << " step " << step << " (T " << params[static_cast<size_t>(b)].temperature
                          << " top_k " << params[static_cast<size_t>(b)].top_k << " top_p " << params[static_cast<size_t>(b)].top_p
                          << " min_p " << params[static_cast<size_t>(b)].min_p << "): gpu " << g << ", cpu " << w;
        }
      }
      EXPECT_EQ(mismatches, 0);
    }
  }
  // Bad parameters are an error, as on the CPU.
  HostTensor logits = test::random_tensor(DType::kF32, {1, 16}, rng);
  auto dl = to_device(logits.tensor);
  auto dids = DeviceTensor::empty(DType::kInt32, {1});
  ASSERT_TRUE(dl.ok() && dids.ok());
  SamplingParams bad;
  bad.temperature = 1.f;
  bad.top_p = 0.f;
  EXPECT_EQ(sampler->sample({dl->tensor, {bad}, {0}, dids->tensor}, nullptr).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kiln
