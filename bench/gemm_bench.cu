// GEMM through kiln::Gemm at the linear layers of Llama-3-8B and Mistral-7B (the same per-layer
// shapes: hidden 4096, 32 / 8 heads of 128, intermediate 14336; Mixtral's experts have the
// gate_up and down shapes): decode (m = 1..64, weight-bandwidth bound: GB/s of weight bytes
// against the copy ceiling, weights rotated through more than the L2 size) for the decode
// kernel with bf16 and fp8 weights next to cuBLASLt bf16, and prefill (m = 4096, compute bound:
// TFLOP/s against the bf16 or fp8 GEMM ceiling), plus the LM heads (f32 logits).
//   gemm_bench            (KILN_GPU_CEILINGS=ceilings.json for measured ceilings)
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/cuda/common/gpu_bench.h"
#include "kiln/kernels/gemm_cuda.h"
#include "kiln/kernels/quantize.h"

namespace kiln {
namespace {

using bench::check;

struct Layer {
  const char* name;
  int64_t n, k;
  DType y;
};

// The fp8 GEMM ceiling: gpu_ceilings.py's fp8_gemm_TFLOPs, else the H100 figure.
double fp8_ceiling() {
  const char* path = std::getenv("KILN_GPU_CEILINGS");
  if (!path || !*path) return 1300.0;
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return bench::json_number(ss.str(), "fp8_gemm_TFLOPs", 1300.0);
}

// One weight copy: bf16, or fp8 e4m3 quantized per channel (or per tensor) on the GPU.
struct BenchWeights {
  DeviceTensor w, scale;
};
BenchWeights make_weights(DType wt, int64_t n, int64_t k, uint32_t seed, bool per_tensor = false) {
  BenchWeights r;
  auto bf = DeviceTensor::empty(DType::kBF16, {n, k});
  check(bf.status(), "alloc w");
  bench::fill_random_bf16(bf->tensor.data, n * k, seed, 0.05f);
  if (wt == DType::kBF16) {
    r.w = std::move(bf).value();
    return r;
  }
  auto q = DeviceTensor::empty(DType::kFp8E4M3, {n, k});
  auto s = DeviceTensor::empty(DType::kF32, {per_tensor ? 1 : n});
  check(q.status(), "alloc q");
  check(s.status(), "alloc scale");
  check(quantize_fp8_cuda({bf->tensor, q->tensor, s->tensor}, nullptr), "quantize_fp8_cuda");
  check(cudaDeviceSynchronize(), "quantize");
  r.w = std::move(q).value();
  r.scale = std::move(s).value();
  return r;
}

void bench_shape(Gemm& gemm, const bench::Ceilings& c, cudaStream_t s, const Layer& l, int64_t m, const char* tag = "",
                 DType wt = DType::kBF16) {
  const double w_bytes = static_cast<double>(l.n) * l.k * static_cast<double>(dtype_bytes(wt, 1));
  // Decode reads the weights once per call: rotate copies so they do not sit in the 50 MB L2.
  const int copies = m >= 1024 ? 1 : static_cast<int>(std::clamp(256e6 / w_bytes + 1, 1.0, 8.0));
  std::vector<BenchWeights> ws;
  for (int i = 0; i < copies; ++i) ws.push_back(make_weights(wt, l.n, l.k, 100 + i));
  auto x = DeviceTensor::empty(DType::kBF16, {m, l.k});
  auto y = DeviceTensor::empty(l.y, {m, l.n});
  check(x.status(), "alloc x");
  check(y.status(), "alloc y");
  bench::fill_random_bf16(x->tensor.data, m * l.k, 7);
  const double ms = bench::median_ms(
      [&](int i) {
        const BenchWeights& w = ws[static_cast<size_t>(i % copies)];
        check(gemm.run({x->tensor, w.w.tensor, {}, y->tensor, w.scale.tensor}, s), "gemm");
      },
      s);
  const double flops = 2.0 * m * l.n * l.k;
  const double tflops = flops / ms / 1e9, gbps = w_bytes / ms / 1e6;
  const std::string shape = "m=" + std::to_string(m) + " n=" + std::to_string(l.n) + " k=" + std::to_string(l.k) +
                            (l.y == DType::kF32 ? " ->f32" : "");
  const std::string name = std::string("gemm ") + l.name + tag;
  if (m >= 1024) {
    bench::report(name, shape, ms, tflops, wt == DType::kFp8E4M3 ? fp8_ceiling() : c.bf16_tflops, "TFLOP/s");
  } else {
    bench::report(name, shape, ms, gbps, c.copy_gbps, "GB/s");  // weight bytes only
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
  auto cublas = Gemm::create({.skinny_max_m_bf16 = 0, .skinny_max_m_fp8 = 0});  // cuBLASLt for every m
  check(cublas.status(), "Gemm::create");
  auto skinny = Gemm::create({.skinny_max_m_bf16 = 64, .skinny_max_m_fp8 = 64});  // the decode kernel up to m = 64
  check(skinny.status(), "Gemm::create");
  auto fast = Gemm::create({.skinny_max_m_fp8 = 0, .fp8_fast_accum = true});
  check(fast.status(), "Gemm::create");
  // Llama-3-8B and Mistral-7B share these (hidden 4096, 32 q / 8 kv heads of 128, inter 14336);
  // Mixtral-8x7B's experts are gate_up and down.
  const Layer layers[] = {
      {"qkv", 6144, 4096, DType::kBF16},
      {"o_proj", 4096, 4096, DType::kBF16},
      {"gate_up", 28672, 4096, DType::kBF16},
      {"down", 4096, 14336, DType::kBF16},
      {"lm_head_llama3", 128256, 4096, DType::kF32},
  };
  const bool quick = std::getenv("KILN_GEMM_BENCH_QUICK") != nullptr;
  for (const Layer& l : layers) {
    for (int64_t m : {1, 8, 16, 32, 64}) {
      if (quick && m != 1 && m != 16 && m != 64) continue;
      bench_shape(*skinny, c, s, l, m, " skinny bf16");
      bench_shape(*skinny, c, s, l, m, " skinny fp8", DType::kFp8E4M3);
      bench_shape(*cublas, c, s, l, m, " cublas bf16");
      if (m == 64 || m == 16) bench_shape(*cublas, c, s, l, m, " cublas fp8", DType::kFp8E4M3);
    }
  }
  for (const Layer& l : layers) {
    if (l.y == DType::kF32) continue;
    bench_shape(*cublas, c, s, l, 4096, " cublas bf16");
    bench_shape(*cublas, c, s, l, 4096, " fp8", DType::kFp8E4M3);
    bench_shape(*fast, c, s, l, 4096, " fp8 fastacc", DType::kFp8E4M3);
    if (!quick) bench_shape(*cublas, c, s, l, 8192, " fp8", DType::kFp8E4M3);
  }
  std::printf("fp8 prefill scales: %s\n", cublas->fp8_prefill_scales().c_str());
  std::printf("plans cached: %lld\n", static_cast<long long>(cublas->cached_plans()));
  check(cudaStreamDestroy(s), "cudaStreamDestroy");
  return 0;
}
