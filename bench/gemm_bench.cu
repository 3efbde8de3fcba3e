// GEMM (cuBLASLt through kiln::Gemm) at the linear layers of Llama-3-8B and Mistral-7B (the
// same per-layer shapes: hidden 4096, 32 / 8 heads of 128, intermediate 14336): decode
// (m = 1..64, weight-bandwidth bound: GB/s against the copy ceiling, weights rotated through
// more than the L2 size) and prefill (m = 4096, compute bound: TFLOP/s against the bf16 GEMM
// ceiling), plus the LM heads (f32 logits).
//   gemm_bench            (KILN_GPU_CEILINGS=ceilings.json for measured ceilings)
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/cuda/common/gpu_bench.h"
#include "kiln/kernels/gemm_cuda.h"

namespace kiln {
namespace {

using bench::check;

struct Layer {
  const char* name;
  int64_t n, k;
  DType y;
};

void bench_shape(Gemm& gemm, const bench::Ceilings& c, cudaStream_t s, const Layer& l, int64_t m, const char* tag = "") {
  const double w_bytes = static_cast<double>(l.n) * l.k * 2;
  // Decode reads the weights once per call: rotate copies so they do not sit in the 50 MB L2.
  const int copies = m >= 1024 ? 1 : static_cast<int>(std::clamp(256e6 / w_bytes + 1, 1.0, 8.0));
  std::vector<DeviceTensor> ws;
  for (int i = 0; i < copies; ++i) {
    auto w = DeviceTensor::empty(DType::kBF16, {l.n, l.k});
    check(w.status(), "alloc w");
    bench::fill_random_bf16(w->tensor.data, l.n * l.k, 100 + i, 0.05f);
    ws.push_back(std::move(w).value());
  }
  auto x = DeviceTensor::empty(DType::kBF16, {m, l.k});
  auto y = DeviceTensor::empty(l.y, {m, l.n});
  check(x.status(), "alloc x");
  check(y.status(), "alloc y");
  bench::fill_random_bf16(x->tensor.data, m * l.k, 7);
  const double ms = bench::median_ms(
      [&](int i) { check(gemm.run({x->tensor, ws[static_cast<size_t>(i % copies)].tensor, {}, y->tensor}, s), "gemm"); }, s);
  const double flops = 2.0 * m * l.n * l.k;
  const double bytes = w_bytes + m * l.k * 2.0 + m * l.n * static_cast<double>(dtype_bytes(l.y, 1));
  const double tflops = flops / ms / 1e9, gbps = bytes / ms / 1e6;
  const std::string shape = "m=" + std::to_string(m) + " n=" + std::to_string(l.n) + " k=" + std::to_string(l.k) +
                            (l.y == DType::kF32 ? " ->f32" : "");
  if (m >= 1024) {
    bench::report(std::string("gemm ") + l.name + tag, shape, ms, tflops, c.bf16_tflops, "TFLOP/s");
    std::printf("  %-22s %-40s    (%.0f GB/s)\n", "", "", gbps);
  } else {
    bench::report(std::string("gemm ") + l.name + tag, shape, ms, gbps, c.copy_gbps, "GB/s");
    std::printf("  %-22s %-40s    (%.2f TFLOP/s)\n", "", "", tflops);
  }
}

}  // namespace
}  // namespace kiln

int main() {
  using namespace kiln;
  if (!cuda_available()) {
    std::printf("gemm_bench: %s\n", cuda_device_summary().c_str());
    return 0;
  }
  const bench::Ceilings c = bench::read_ceilings();
  std::printf("gemm_bench on %s\nceilings: %s: copy %.0f GB/s, bf16 %.0f TFLOP/s\n", cuda_device_summary().c_str(),
              c.source.c_str(), c.copy_gbps, c.bf16_tflops);
  cudaStream_t s;
  check(cudaStreamCreate(&s), "cudaStreamCreate");
  auto gemm = Gemm::create();
  check(gemm.status(), "Gemm::create");
  auto tuned = Gemm::create({.autotune = true});  // decode shapes: the fastest of the heuristic's top 8
  check(tuned.status(), "Gemm::create");
  // Llama-3-8B and Mistral-7B share these (hidden 4096, 32 q / 8 kv heads of 128, inter 14336).
  const Layer layers[] = {
      {"qkv", 6144, 4096, DType::kBF16},
      {"o_proj", 4096, 4096, DType::kBF16},
      {"gate_up", 28672, 4096, DType::kBF16},
      {"down", 4096, 14336, DType::kBF16},
  };
  for (const Layer& l : layers) {
    for (int64_t m : {1, 16, 64}) {
      bench_shape(*gemm, c, s, l, m);
      bench_shape(*tuned, c, s, l, m, " tuned");
    }
    bench_shape(*gemm, c, s, l, 4096);
  }
  for (int64_t m : {1, 64}) {
    bench_shape(*gemm, c, s, {"lm_head_llama3", 128256, 4096, DType::kF32}, m);
    bench_shape(*tuned, c, s, {"lm_head_llama3", 128256, 4096, DType::kF32}, m, " tuned");
  }
  bench_shape(*gemm, c, s, {"lm_head_mistral", 32000, 4096, DType::kF32}, 1);
  bench_shape(*tuned, c, s, {"lm_head_mistral", 32000, 4096, DType::kF32}, 1, " tuned");
  std::printf("plans cached: %lld\n", static_cast<long long>(gemm->cached_plans()));
  check(cudaStreamDestroy(s), "cudaStreamDestroy");
  return 0;
}
