// GPU sampling (kiln::CudaSampler) at decode batch sizes over a Llama-3 vocabulary: greedy rows
// (one argmax pass: GB/s of logits against the copy ceiling) and sampled rows (a device-wide
// sort of the logits, then the CPU-exact sequential sums; far from the copy ceiling by design).
//   sampling_bench            (KILN_GPU_CEILINGS=ceilings.json for measured ceilings)
#include <cuda_runtime.h>

#include <cstdio>
#include <string>
#include <vector>

#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/cuda/common/gpu_bench.h"
#include "kiln/kernels/sampling_cuda.h"

namespace kiln {
namespace {

using bench::check;

void bench_batch(CudaSampler& sampler, const bench::Ceilings& c, cudaStream_t s, int64_t batch, int64_t vocab,
                 const SamplingParams& p, const char* kind) {
  auto logits = DeviceTensor::empty(DType::kF32, {batch, vocab});
  auto ids = DeviceTensor::empty(DType::kInt32, {batch});
  check(logits.status(), "alloc");
  check(ids.status(), "alloc");
  bench::fill_random_f32(logits->tensor.data, batch * vocab, 21, 8.0f);
  std::vector<SamplingParams> params(static_cast<size_t>(batch), p);
  std::vector<uint64_t> steps(static_cast<size_t>(batch), 0);
  for (int64_t b = 0; b < batch; ++b) params[static_cast<size_t>(b)].seed = static_cast<uint64_t>(b);
  const double ms = bench::median_ms([&](int i) {
    for (auto& st : steps) st = static_cast<uint64_t>(i);
    check(sampler.sample({logits->tensor, params, steps, ids->tensor}, s), "sample");
  }, s, 5, 7, 2);
  const double bytes = batch * vocab * 4.0;
  bench::report(std::string("sample ") + kind, "batch " + std::to_string(batch) + " vocab " + std::to_string(vocab), ms,
                bytes / ms / 1e6, c.copy_gbps, "GB/s");
}

}  // namespace
}  // namespace kiln

int main() {
  using namespace kiln;
  if (!cuda_available()) {
    std::printf("sampling_bench: %s\n", cuda_device_summary().c_str());
    return 0;
  }
  const bench::Ceilings c = bench::read_ceilings();
  std::printf("sampling_bench on %s\nceilings: %s: copy %.0f GB/s\n", cuda_device_summary().c_str(), c.source.c_str(),
              c.copy_gbps);
  cudaStream_t s;
  check(cudaStreamCreate(&s), "cudaStreamCreate");
  auto sampler = CudaSampler::create();
  check(sampler.status(), "CudaSampler::create");
  SamplingParams greedy, top_p, top_k;
  top_p.temperature = 1.0f;
  top_p.top_p = 0.9f;
  top_k.temperature = 0.8f;
  top_k.top_k = 50;
  for (int64_t batch : {1, 64}) {
    bench_batch(*sampler, c, s, batch, 128256, greedy, "greedy");
    bench_batch(*sampler, c, s, batch, 128256, top_p, "top_p=0.9");
    bench_batch(*sampler, c, s, batch, 128256, top_k, "top_k=50");
  }
  check(cudaStreamDestroy(s), "cudaStreamDestroy");
  return 0;
}
