// GEMM through kiln::Gemm at the linear layers of Llama-3-8B and Mistral-7B (the same per-layer
// shapes: hidden 4096, 32 / 8 heads of 128, intermediate 14336; Mixtral's experts have the
// gate_up and down shapes): decode (m = 1..64, weight-bandwidth bound: GB/s of weight bytes
// against the copy ceiling) for the decode kernel with bf16 and fp8 weights next to cuBLASLt
// bf16, the MoE decode GEMM (Mixtral experts, GB/s of distinct expert bytes), and prefill
// (m = 4096, compute bound: TFLOP/s against the bf16 or fp8 GEMM ceiling), plus the LM head.
// Decode rows are timed the way a decode step runs them: 20 calls captured in one CUDA graph,
// each call on a different weight copy (copies rotated through more than 250 MB, so the 50 MB
// L2 never holds them); "stream" rows time the same calls launched one by one.
//   gemm_bench   env: KILN_GPU_CEILINGS=ceilings.json (measured ceilings),
//                KILN_GEMM_BENCH=decode,moe,prefill,sweep (sections; default all but sweep)
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/cuda/common/gpu_bench.h"
#include "kiln/kernels/cuda/gemm/skinny_gemm.h"
#include "kiln/kernels/gemm_cuda.h"
#include "kiln/kernels/moe_cuda.h"
#include "kiln/kernels/quantize.h"

namespace kiln {
namespace {

using bench::check;

struct Layer {
  const char* name;
  int64_t n, k;
  DType y;
};

bool section(const char* name) {
  const char* s = std::getenv("KILN_GEMM_BENCH");
  const std::string list = s && *s ? s : "decode,moe,prefill";
  return ("," + list + ",").find("," + std::string(name) + ",") != std::string::npos;
}

// One weight copy: bf16, or fp8 e4m3 quantized per channel on the GPU.
struct BenchWeights {
  DeviceTensor w, scale;
};
BenchWeights make_weights(DType wt, int64_t n, int64_t k, uint32_t seed) {
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
std::vector<BenchWeights> weight_copies(DType wt, int64_t n, int64_t k, bool single = false) {
  const double bytes = static_cast<double>(n) * k * static_cast<double>(dtype_bytes(wt, 1));
  const int copies = single ? 1 : static_cast<int>(std::clamp(256e6 / bytes + 1, 2.0, 8.0));
  std::vector<BenchWeights> ws;
  for (int i = 0; i < copies; ++i) ws.push_back(make_weights(wt, n, k, 100 + i));
  return ws;
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
  for (int i = 0; i < 2; ++i) check(cudaGraphLaunch(exec, s), "graph launch");
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "event");
  check(cudaEventCreate(&stop), "event");
  std::vector<double> times;
  for (int r = 0; r < reps; ++r) {
    check(cudaEventRecord(start, s), "record");
    check(cudaGraphLaunch(exec, s), "graph launch");
    check(cudaEventRecord(stop, s), "record");
    check(cudaEventSynchronize(stop), "sync");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start, stop), "elapsed");
    times.push_back(static_cast<double>(ms) / inner);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

std::string shape_of(const Layer& l, int64_t m) {
  return "m=" + std::to_string(m) + " n=" + std::to_string(l.n) + " k=" + std::to_string(l.k) +
         (l.y == DType::kF32 ? " ->f32" : "");
}

// Decode: GB/s of weight bytes; graph-timed, and (stream_too) launched one by one.
void bench_decode(Gemm& gemm, const bench::Ceilings& c, cudaStream_t s, const Layer& l, int64_t m, const char* tag,
                  DType wt, bool stream_too) {
  const std::vector<BenchWeights> ws = weight_copies(wt, l.n, l.k);
  auto x = DeviceTensor::empty(DType::kBF16, {m, l.k});
  auto y = DeviceTensor::empty(l.y, {m, l.n});
  check(x.status(), "alloc x");
  check(y.status(), "alloc y");
  bench::fill_random_bf16(x->tensor.data, m * l.k, 7);
  auto call = [&](int i) {
    const BenchWeights& w = ws[static_cast<size_t>(i) % ws.size()];
    check(gemm.run({x->tensor, w.w.tensor, {}, y->tensor, w.scale.tensor}, s), "gemm");
  };
  const double w_bytes = static_cast<double>(l.n) * l.k * static_cast<double>(dtype_bytes(wt, 1));
  call(0);  // plans, occupancy queries: outside the capture
  check(cudaStreamSynchronize(s), "sync");
  const double ms = graph_ms(call, s);
  bench::report(std::string("gemm ") + l.name + tag, shape_of(l, m), ms, w_bytes / ms / 1e6, c.copy_gbps, "GB/s");
  if (stream_too) {
    const double ms2 = bench::median_ms(call, s);
    bench::report(std::string("gemm ") + l.name + tag + " stream", shape_of(l, m), ms2, w_bytes / ms2 / 1e6, c.copy_gbps, "GB/s");
  }
}

void bench_prefill(Gemm& gemm, const bench::Ceilings& c, cudaStream_t s, const Layer& l, int64_t m, const char* tag, DType wt) {
  const std::vector<BenchWeights> ws = weight_copies(wt, l.n, l.k, true);
  auto x = DeviceTensor::empty(DType::kBF16, {m, l.k});
  auto y = DeviceTensor::empty(l.y, {m, l.n});
  check(x.status(), "alloc x");
  check(y.status(), "alloc y");
  bench::fill_random_bf16(x->tensor.data, m * l.k, 7);
  const double ms = bench::median_ms(
      [&](int) { check(gemm.run({x->tensor, ws[0].w.tensor, {}, y->tensor, ws[0].scale.tensor}, s), "gemm"); }, s);
  bench::report(std::string("gemm ") + l.name + tag, shape_of(l, m), ms, 2.0 * m * l.n * l.k / ms / 1e9,
                wt == DType::kFp8E4M3 ? c.fp8_tflops : c.bf16_tflops, "TFLOP/s");
}

// The decode kernel's launch choices on one shape: every variant that fits, warps per CTA
// automatic / 4 / 8, with programmatic dependent launch (graph-timed).
void sweep(const bench::Ceilings& c, cudaStream_t s, const Layer& l, int64_t m, DType wt) {
  const std::vector<BenchWeights> ws = weight_copies(wt, l.n, l.k);
  auto x = DeviceTensor::empty(DType::kBF16, {m, l.k});
  auto y = DeviceTensor::empty(l.y, {m, l.n});
  auto partials = DeviceBuffer::alloc(16 << 20);
  auto counters = DeviceBuffer::alloc(8192 * 4);
  check(x.status(), "alloc x");
  check(y.status(), "alloc y");
  check(partials.status(), "alloc");
  check(counters.status(), "alloc");
  check(cudaMemset(counters->data(), 0, 8192 * 4), "memset");
  bench::fill_random_bf16(x->tensor.data, m * l.k, 7);
  SkinnyGemmWorkspace wsp{static_cast<float*>(partials->data()), (16 << 20) / 4, static_cast<int*>(counters->data()), 8192};
  int dev = 0;
  check(cudaGetDevice(&dev), "dev");
  check(cudaDeviceGetAttribute(&wsp.num_sms, cudaDevAttrMultiProcessorCount, dev), "sms");
  const double w_bytes = static_cast<double>(l.n) * l.k * static_cast<double>(dtype_bytes(wt, 1));
  const auto variants = skinny_gemm_variants();
  for (int vi = 0; vi < static_cast<int>(variants.size()); ++vi) {
    const SkinnyGemmVariant& v = variants[static_cast<size_t>(vi)];
    if (v.w != wt || v.y != l.y || m > v.max_m || (m <= v.max_m / 2 && v.max_m > 8)) continue;
    for (int warps : {0, 4, 8}) {
      for (bool pdl : {true}) {
        wsp.pdl = pdl;
        SkinnyGemmLaunch launch;
        auto call = [&](int i) {
          const BenchWeights& w = ws[static_cast<size_t>(i) % ws.size()];
          check(skinny_gemm_cuda({x->tensor, w.w.tensor, {}, y->tensor, w.scale.tensor}, wsp, s, {vi, warps, 0}, &launch),
                "skinny_gemm_cuda");
        };
        call(0);
        check(cudaStreamSynchronize(s), "sync");
        const double ms = graph_ms(call, s);
        std::printf("sweep %-8s %-5s m=%-2lld v%-2d(rt%d u%d s%d%s) warps=%d(%d) split=%d ctas=%lld occ=%d pdl=%d  %7.2f us  %6.1f%%\n",
                    l.name, std::string(dtype_name(wt)).c_str(), static_cast<long long>(m), vi, v.row_tiles, v.unroll,
                    v.stages, v.preferred ? "*" : "", launch.warps, warps, launch.split_k,
                    static_cast<long long>(launch.ctas), launch.ctas_per_sm, pdl ? 1 : 0, ms * 1e3,
                    100.0 * w_bytes / ms / 1e6 / c.copy_gbps);
      }
    }
  }
  std::fflush(stdout);
}

// Mixtral experts: 8 experts of [n, k]; t tokens x top_k = 2 slots with random distinct experts
// per token (4 id sets rotated, so consecutive calls read different experts). GB/s of the
// distinct expert bytes of each call.
void bench_moe(const bench::Ceilings& c, cudaStream_t s, const char* name, int64_t n, int64_t k, int64_t t, DType wt) {
  const int64_t num_experts = 8, top_k = 2;
  std::vector<BenchWeights> experts;
  for (int e = 0; e < num_experts; ++e) experts.push_back(make_weights(wt, n, k, 300 + e));
  std::vector<int64_t> wp, sp;
  for (auto& e : experts) {
    wp.push_back(reinterpret_cast<int64_t>(e.w.tensor.data));
    sp.push_back(reinterpret_cast<int64_t>(e.scale.tensor.data));
  }
  auto dwp = to_device(Tensor::view(wp.data(), DType::kInt64, {num_experts}));
  auto dsp = to_device(Tensor::view(sp.data(), DType::kInt64, {num_experts}));
  check(dwp.status(), "ptrs");
  check(dsp.status(), "ptrs");
  std::mt19937 rng(5);
  std::vector<DeviceTensor> ids;
  double distinct_total = 0;
  for (int set = 0; set < 4; ++set) {
    std::vector<int32_t> h(static_cast<size_t>(t * top_k));
    std::set<int32_t> distinct;
    for (int64_t i = 0; i < t; ++i) {
      std::vector<int32_t> perm(num_experts);
      for (int e = 0; e < num_experts; ++e) perm[static_cast<size_t>(e)] = e;
      std::shuffle(perm.begin(), perm.end(), rng);
      for (int64_t j = 0; j < top_k; ++j) {
        h[static_cast<size_t>(i * top_k + j)] = perm[static_cast<size_t>(j)];
        distinct.insert(perm[static_cast<size_t>(j)]);
      }
    }
    distinct_total += static_cast<double>(distinct.size());
    auto d = to_device(Tensor::view(h.data(), DType::kInt32, {t, top_k}));
    check(d.status(), "ids");
    ids.push_back(std::move(d).value());
  }
  auto x = DeviceTensor::empty(DType::kBF16, {t, k});
  auto y = DeviceTensor::empty(DType::kBF16, {t * top_k, n});
  check(x.status(), "x");
  check(y.status(), "y");
  bench::fill_random_bf16(x->tensor.data, t * k, 9);
  auto call = [&](int i) {
    check(moe_decode_gemm_cuda({x->tensor, ids[static_cast<size_t>(i) % ids.size()].tensor, dwp->tensor,
                                wt == DType::kFp8E4M3 ? dsp->tensor : Tensor{}, wt, n, y->tensor}, s),
          "moe_decode_gemm_cuda");
  };
  call(0);
  check(cudaStreamSynchronize(s), "sync");
  const double ms = graph_ms(call, s);
  const double bytes = distinct_total / 4 * static_cast<double>(n) * k * static_cast<double>(dtype_bytes(wt, 1));
  bench::report(std::string("moe_decode ") + name + " " + std::string(dtype_name(wt)),
                "t=" + std::to_string(t) + " top_k=2 E=8 n=" + std::to_string(n) + " k=" + std::to_string(k) + " (" +
                    std::to_string(distinct_total / 4).substr(0, 4) + " experts)",
                ms, bytes / ms / 1e6, c.copy_gbps, "GB/s");
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
  if (section("sweep")) {
    for (const Layer& l : layers)
      for (DType wt : {DType::kBF16, DType::kFp8E4M3})
        for (int64_t m : {1, 8, 32, 64})
          if (m <= 8 || (wt == DType::kFp8E4M3 && l.y == DType::kBF16)) sweep(c, s, l, m, wt);
  }
  if (section("decode")) {
    for (const Layer& l : layers) {
      for (int64_t m : {1, 2, 4, 8, 16, 32, 64}) {
        const bool stream_too = m == 1 || m == 8;
        bench_decode(*skinny, c, s, l, m, " skinny bf16", DType::kBF16, stream_too);
        bench_decode(*skinny, c, s, l, m, " skinny fp8", DType::kFp8E4M3, stream_too);
        if (m == 1 || m == 8 || m == 64) bench_decode(*cublas, c, s, l, m, " cublas bf16", DType::kBF16, false);
        if (m == 16 || m == 32 || m == 64) bench_decode(*cublas, c, s, l, m, " cublas fp8", DType::kFp8E4M3, false);
      }
    }
  }
  if (section("moe")) {
    for (DType wt : {DType::kBF16, DType::kFp8E4M3})
      for (int64_t t : {1, 8}) {
        bench_moe(c, s, "gate_up", 28672, 4096, t, wt);
        bench_moe(c, s, "down", 4096, 14336, t, wt);
      }
  }
  if (section("prefill")) {
    for (const Layer& l : layers) {
      if (l.y == DType::kF32) continue;
      bench_prefill(*cublas, c, s, l, 4096, " cublas bf16", DType::kBF16);
      bench_prefill(*cublas, c, s, l, 4096, " fp8", DType::kFp8E4M3);
      bench_prefill(*fast, c, s, l, 4096, " fp8 fastacc", DType::kFp8E4M3);
    }
    std::printf("fp8 prefill scales: %s\n", cublas->fp8_prefill_scales().c_str());
  }
  check(cudaStreamDestroy(s), "cudaStreamDestroy");
  return 0;
}
