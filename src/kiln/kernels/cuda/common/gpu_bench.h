// Helpers for the GPU micro-benchmarks (bench/*_bench.cu): the measured ceilings (copy
// bandwidth, bf16 GEMM rate) read from gpu_ceilings.py's JSON (env KILN_GPU_CEILINGS) or H100
// defaults, event timing (median over batches of launches), random device inputs (never zeros),
// and result rows: a human line plus "@@ kernel | shape | achieved | ceiling | ratio", which
// scripts/device_run.sh gathers into its final table. Include from .cu files only.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "kiln/core/status.h"

namespace kiln::bench {

struct Ceilings {
  double copy_gbps = 3000.0;   // device-to-device copy, bytes read + written (H100 SXM, measured here)
  double bf16_tflops = 750.0;  // dense bf16 GEMM
  double fp8_tflops = 1300.0;  // dense fp8 GEMM (cuBLASLt)
  std::string source = "defaults (H100: 3000 GB/s copy, 750 TFLOP/s bf16)";
};

// The number after "key": in a flat JSON text, or `fallback`.
inline double json_number(const std::string& text, const std::string& key, double fallback) {
  const size_t k = text.find("\"" + key + "\"");
  if (k == std::string::npos) return fallback;
  const size_t colon = text.find(':', k);
  if (colon == std::string::npos) return fallback;
  char* end = nullptr;
  const double v = std::strtod(text.c_str() + colon + 1, &end);
  return end == text.c_str() + colon + 1 || v <= 0 ? fallback : v;
}

inline Ceilings read_ceilings() {
  Ceilings c;
  const char* path = std::getenv("KILN_GPU_CEILINGS");
  if (!path || !*path) return c;
  std::ifstream f(path);
  if (!f) return c;
  std::stringstream ss;
  ss << f.rdbuf();
  c.copy_gbps = json_number(ss.str(), "copy_GBps", c.copy_gbps);
  c.bf16_tflops = json_number(ss.str(), "bf16_gemm_TFLOPs", c.bf16_tflops);
  c.fp8_tflops = json_number(ss.str(), "fp8_gemm_TFLOPs", c.fp8_tflops);
  c.source = std::string("measured (") + path + ")";
  return c;
}

// Abort the benchmark on an error: a benchmark has no caller to return to.
inline void check(const Status& s, const char* what) {
  if (s.ok()) return;
  std::fprintf(stderr, "%s: %s\n", what, s.to_string().c_str());
  std::exit(1);
}
inline void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
  std::exit(1);
}

// Median milliseconds per call of `enqueue(i)` (i counts calls, so callers can rotate buffers),
// timed with events around batches of `inner` calls after `warmup` untimed calls.
template <typename F>
double median_ms(F&& enqueue, cudaStream_t stream, int inner = 20, int reps = 11, int warmup = 5) {
  int call = 0;
  for (int i = 0; i < warmup; ++i) enqueue(call++);
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  std::vector<double> times;
  for (int r = 0; r < reps; ++r) {
    check(cudaEventRecord(start, stream), "cudaEventRecord");
    for (int i = 0; i < inner; ++i) enqueue(call++);
    check(cudaEventRecord(stop, stream), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
    times.push_back(static_cast<double>(ms) / inner);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  check(cudaGetLastError(), "benchmark launch");
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// One result row. `achieved` and `ceiling` in the same unit ("GB/s", "TFLOP/s").
inline void report(const std::string& kernel, const std::string& shape, double ms, double achieved, double ceiling,
                   const char* unit) {
  const double ratio = ceiling > 0 ? 100.0 * achieved / ceiling : 0.0;
  std::printf("  %-22s %-40s %9.1f us %9.1f %-7s of %7.0f  %5.1f%%\n", kernel.c_str(), shape.c_str(), ms * 1e3,
              achieved, unit, ceiling, ratio);
  std::printf("@@ %s | %s | %.1f %s | %.0f %s | %.1f%%\n", kernel.c_str(), shape.c_str(), achieved, unit, ceiling, unit,
              ratio);
  std::fflush(stdout);
}

// Pseudo-random bf16 in [-scale, scale) (a hash of the index: fast, reproducible, never zeros).
__global__ void fill_random_bf16_kernel(__nv_bfloat16* p, int64_t n, uint32_t seed, float scale) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 0x9E3779B1u ^ seed ^ static_cast<uint32_t>(i >> 32) * 0x85EBCA77u;
    h ^= h >> 15; h *= 0x2C1B3C6Du; h ^= h >> 12; h *= 0x297A2D39u; h ^= h >> 15;
    p[i] = __float2bfloat16((static_cast<float>(h >> 8) * (1.0f / 8388608.0f) - 1.0f) * scale);
  }
}
inline void fill_random_bf16(void* p, int64_t n, uint32_t seed, float scale = 1.0f) {
  fill_random_bf16_kernel<<<1024, 256>>>(static_cast<__nv_bfloat16*>(p), n, seed, scale);
  check(cudaGetLastError(), "fill_random_bf16");
}

__global__ void fill_random_f32_kernel(float* p, int64_t n, uint32_t seed, float scale) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 0x9E3779B1u ^ seed ^ static_cast<uint32_t>(i >> 32) * 0x85EBCA77u;
    h ^= h >> 15; h *= 0x2C1B3C6Du; h ^= h >> 12; h *= 0x297A2D39u; h ^= h >> 15;
    p[i] = (static_cast<float>(h >> 8) * (1.0f / 8388608.0f) - 1.0f) * scale;
  }
}
inline void fill_random_f32(void* p, int64_t n, uint32_t seed, float scale = 1.0f) {
  fill_random_f32_kernel<<<1024, 256>>>(static_cast<float*>(p), n, seed, scale);
  check(cudaGetLastError(), "fill_random_f32");
}

inline std::string shape_str(std::initializer_list<int64_t> dims) {
  std::string s;
  for (int64_t d : dims) s += (s.empty() ? "" : "x") + std::to_string(d);
  return s;
}

}  // namespace kiln::bench
