// Shared pieces of the GEMM benchmarks (bench/gemm_bench.cu, bench/moe_ffn_bench.cu): the layer
// shapes, section selection, weight copies that never sit in L2 together, expert sets and their
// rotated routing ids, decode activations and graph timing.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <numeric>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/cuda/common/gpu_bench.h"
#include "kiln/kernels/quantize.h"

namespace kiln::gemm_bench {

using bench::check;

struct Layer {
  const char* name;
  int64_t n, k;
  DType y;
};

inline bool section(const char* name) {
  const char* s = std::getenv("KILN_GEMM_BENCH");
  const std::string list = s && *s ? s : "decode,moe,prefill";
  return ("," + list + ",").find("," + std::string(name) + ",") != std::string::npos;
}

// One weight copy: bf16, or fp8 e4m3 quantized per channel on the GPU.
struct BenchWeights {
  DeviceTensor w, scale;
};
inline BenchWeights make_weights(DType wt, int64_t n, int64_t k, uint32_t seed) {
  BenchWeights r;
  auto bf = DeviceTensor::empty(DType::kBF16, {n, k});
  check(bf.status(), "alloc w");
  bench::fill_random_bf16(bf->tensor.data, n * k, seed, 0.05f);
  if (wt == DType::kBF16) {
    r.w = std::move(bf).value();
    return r;
  }
  auto q = DeviceTensor::empty(DType::kFp8E4M3, {n, k});
  auto s = DeviceTensor::empty(DType::kF32, {n});
  check(q.status(), "alloc q");
  check(s.status(), "alloc scale");
  check(quantize_fp8_cuda({bf->tensor, q->tensor, s->tensor}, nullptr), "quantize_fp8_cuda");
  check(cudaDeviceSynchronize(), "quantize");
  r.w = std::move(q).value();
  r.scale = std::move(s).value();
  return r;
}

// Enough copies that consecutive calls never find their weights in L2.
inline std::vector<BenchWeights> weight_copies(DType wt, int64_t n, int64_t k, bool single = false) {
  const double bytes = static_cast<double>(n) * k * static_cast<double>(dtype_bytes(wt, 1));
  const int copies = single ? 1 : static_cast<int>(std::clamp(256e6 / bytes + 1, 2.0, 8.0));
  std::vector<BenchWeights> ws;
  for (int i = 0; i < copies; ++i) ws.push_back(make_weights(wt, n, k, 100 + i));
  return ws;
}

// `experts` expert weight copies (seeds seed, seed + 1, ..) and their device pointer tables, as
// the MoE decode GEMM takes them (int64 [experts] of weight and scale pointers).
struct ExpertSet {
  std::vector<BenchWeights> w;
  DeviceTensor ptrs, scale_ptrs;
};
inline ExpertSet make_expert_set(DType wt, int64_t n, int64_t k, uint32_t seed, int64_t experts = 8) {
  ExpertSet r;
  std::vector<int64_t> wp, sp;
  for (int64_t e = 0; e < experts; ++e) {
    r.w.push_back(make_weights(wt, n, k, seed + static_cast<uint32_t>(e)));
    wp.push_back(reinterpret_cast<int64_t>(r.w.back().w.tensor.data));
    sp.push_back(reinterpret_cast<int64_t>(r.w.back().scale.tensor.data));
  }
  auto p = to_device(Tensor::view(wp.data(), DType::kInt64, {experts}));
  auto s = to_device(Tensor::view(sp.data(), DType::kInt64, {experts}));
  check(p.status(), "expert ptrs");
  check(s.status(), "expert scale ptrs");
  r.ptrs = std::move(p).value();
  r.scale_ptrs = std::move(s).value();
  return r;
}

// Four routing id sets [t, top_k] (each token's top_k experts distinct, drawn by rng), which the
// callers rotate so consecutive calls read different experts; *distinct: the mean number of
// distinct experts a set uses (the bytes a call reads).
inline std::vector<DeviceTensor> rotated_id_sets(int64_t t, int64_t top_k, int64_t experts, std::mt19937& rng,
                                                 double* distinct) {
  std::vector<DeviceTensor> ids;
  *distinct = 0;
  for (int set = 0; set < 4; ++set) {
    std::vector<int32_t> h(static_cast<size_t>(t * top_k));
    std::set<int32_t> used;
    for (int64_t i = 0; i < t; ++i) {
      std::vector<int32_t> perm(static_cast<size_t>(experts));
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), rng);
      for (int64_t j = 0; j < top_k; ++j) used.insert(h[static_cast<size_t>(i * top_k + j)] = perm[static_cast<size_t>(j)]);
    }
    *distinct += static_cast<double>(used.size()) / 4;
    auto d = to_device(Tensor::view(h.data(), DType::kInt32, {t, top_k}));
    check(d.status(), "ids");
    ids.push_back(std::move(d).value());
  }
  return ids;
}

// A decode call's activations on layer l: x [m, k] random bf16 (seed 7), y [m, n] in l.y.
struct DecodeXY {
  DeviceTensor x, y;
};
inline DecodeXY decode_xy(const Layer& l, int64_t m) {
  auto x = DeviceTensor::empty(DType::kBF16, {m, l.k});
  auto y = DeviceTensor::empty(l.y, {m, l.n});
  check(x.status(), "alloc x");
  check(y.status(), "alloc y");
  bench::fill_random_bf16(x->tensor.data, m * l.k, 7);
  return {std::move(x).value(), std::move(y).value()};
}

// Median ms per call of enqueue(i), i = 0..inner-1 captured into one graph and replayed.
template <typename F>
double graph_ms(F&& enqueue, cudaStream_t s, int inner = 20, int reps = 11) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  check(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "begin capture");
  for (int i = 0; i < inner; ++i) enqueue(i);
  check(cudaStreamEndCapture(s, &graph), "end capture");
  check(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  // One graph launch per timed batch (after 2 untimed ones): the graph holds `inner` calls.
  const double ms = bench::median_ms([&](int) { check(cudaGraphLaunch(exec, s), "graph launch"); }, s, 1, reps, 2) / inner;
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  return ms;
}

// The comma-separated integers of environment variable name (e.g. "16,32"), else def.
inline std::vector<int64_t> env_list(const char* name, std::vector<int64_t> def) {
  const char* list = std::getenv(name);
  if (!list || !*list) return def;
  std::vector<int64_t> r;
  std::stringstream ss(list);
  for (std::string t; std::getline(ss, t, ',');) r.push_back(std::atoll(t.c_str()));
  return r;
}

inline std::string shape_of(const Layer& l, int64_t m) {
  return "m=" + std::to_string(m) + " n=" + std::to_string(l.n) + " k=" + std::to_string(l.k) +
         (l.y == DType::kF32 ? " ->f32" : "");
}

}  // namespace kiln::gemm_bench
