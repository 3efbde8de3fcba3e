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
//                KILN_GEMM_BENCH=decode,moe,prefill,sweep,ab,e4m3 (sections; default decode,moe,prefill)
//                KILN_GEMM_AB=fp8 (the ab section on fp8 weights with bf16 y only)
//                KILN_GEMM_SWEEP=f16 (the sweep section on the fp8 f16-widening rows at m = 1, 8, 16 only)
//                KILN_GEMM_MOE_T_MAX=N (the moe section up to N tokens)
//                KILN_GEMM_SWEEP=wgmma (the sweep section on the fp8 wgmma rows at m = 16, 32, 64 only;
//                KILN_GEMM_SWEEP_M=16,32 other m)
//                KILN_GEMM_BENCH=decode_fp8 (fp8 decode, m = 1..64, Gemm::run vs cuBLASLt fp8; past m = 8
//                also run_quantized on x given in e4m3, as the model runs qkv / gate_up / down; KILN_GEMM_DECODE_M=128,256: other m)
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "bench/gemm_bench_common.h"
#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/cuda/common/gpu_bench.h"
#include "kiln/kernels/cuda/gemm/gemm_fp8_activations.h"
#include "kiln/kernels/cuda/gemm/skinny_gemm.h"
#include "kiln/kernels/cuda/moe/moe_decode_gemm_variants.h"
#include "kiln/kernels/gemm_cuda.h"
#include "kiln/kernels/moe_cuda.h"
#include "kiln/kernels/quantize.h"

namespace kiln {
namespace {

using bench::check;

using namespace gemm_bench;

// Decode: GB/s of weight bytes; graph-timed, and (stream_too) launched one by one.
void bench_decode(Gemm& gemm, const bench::Ceilings& c, cudaStream_t s, const Layer& l, int64_t m, const char* tag,
                  DType wt, bool stream_too) {
  const std::vector<BenchWeights> ws = weight_copies(wt, l.n, l.k);
  const DecodeXY xy = decode_xy(l, m);
  const DeviceTensor *x = &xy.x, *y = &xy.y;
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
  const DecodeXY xy = decode_xy(l, m);
  const DeviceTensor *x = &xy.x, *y = &xy.y;
  const double ms = bench::median_ms(
      [&](int) { check(gemm.run({x->tensor, ws[0].w.tensor, {}, y->tensor, ws[0].scale.tensor}, s), "gemm"); }, s);
  bench::report(std::string("gemm ") + l.name + tag, shape_of(l, m), ms, 2.0 * m * l.n * l.k / ms / 1e9,
                wt == DType::kFp8E4M3 ? c.fp8_tflops : c.bf16_tflops, "TFLOP/s");
}

// fp8 prefill (issue 7): one Gemm configuration per row (x per token / per tensor, cuBLASLt or
// epilogue scales, plain or fast accumulation); TFLOP/s of the whole call, x quantization included.
struct Fp8PrefillVariant {
  const char* tag;
  GemmOptions options;
};

// The fp8 prefill GEMM's activation quantizer alone (GB/s: bf16 read + fp8 written), next to the
// general quantize_fp8_cuda.
void bench_fp8_quantizer(const bench::Ceilings& c, cudaStream_t s, int64_t m, int64_t k) {
  auto x = DeviceTensor::empty(DType::kBF16, {m, k});
  auto q = DeviceTensor::empty(DType::kFp8E4M3, {m, k});
  auto sc = DeviceTensor::empty(DType::kF32, {m});
  auto amax = DeviceBuffer::alloc(256);
  check(x.status(), "alloc x");
  check(q.status(), "alloc q");
  check(sc.status(), "alloc scale");
  check(amax.status(), "alloc amax");
  bench::fill_random_bf16(x->tensor.data, m * k, 11);
  const Tensor s1 = Tensor::view(sc->tensor.data, DType::kF32, {1}, Device::kCuda);
  const double bytes = 3.0 * static_cast<double>(m) * k;
  const std::string shape = "m=" + std::to_string(m) + " k=" + std::to_string(k);
  auto* word = static_cast<uint32_t*>(amax->data());
  struct Row { const char* name; Tensor scale; bool gemm_quantizer; } rows[] = {
      {"quantize_fp8 token", sc->tensor, false}, {"quantize_fp8 tensor", s1, false},
      {"gemm_act_q token", sc->tensor, true}, {"gemm_act_q tensor", s1, true}};
  for (const Row& r : rows) {
    const double ms = bench::median_ms(
        [&](int) {
          check(r.gemm_quantizer ? quantize_fp8_activations_cuda({x->tensor, q->tensor, r.scale}, word, s)
                                 : quantize_fp8_cuda({x->tensor, q->tensor, r.scale}, s),
                "quantize");
        },
        s);
    bench::report(r.name, shape, ms, bytes / ms / 1e6, c.copy_gbps, "GB/s");
  }
}

// The decode GEMM's workspace for the sections that call skinny_gemm_cuda directly: 16 MiB of
// split-K partials (the e4m3 rows keep their x in its tail), 8192 zeroed counters, the SM count.
struct BenchWorkspace {
  DeviceBuffer partials, counters;
  SkinnyGemmWorkspace ws;
  BenchWorkspace() {
    auto p = DeviceBuffer::alloc(16 << 20);
    auto c = DeviceBuffer::alloc(8192 * 4);
    check(p.status(), "alloc");
    check(c.status(), "alloc");
    partials = std::move(p).value();
    counters = std::move(c).value();
    check(cudaMemset(counters.data(), 0, 8192 * 4), "memset");
    ws = {static_cast<float*>(partials.data()), (16 << 20) / 4, static_cast<int*>(counters.data()), 8192};
    int dev = 0;
    check(cudaGetDevice(&dev), "dev");
    check(cudaDeviceGetAttribute(&ws.num_sms, cudaDevAttrMultiProcessorCount, dev), "sms");
  }
};

// The decode kernel's launch choices on one shape: every variant that fits, warps per CTA
// automatic / 4 / 8, with programmatic dependent launch (graph-timed).
void sweep(const bench::Ceilings& c, cudaStream_t s, const Layer& l, int64_t m, DType wt, bool f16_only = false) {
  const std::vector<BenchWeights> ws = weight_copies(wt, l.n, l.k);
  const DecodeXY xy = decode_xy(l, m);
  const DeviceTensor *x = &xy.x, *y = &xy.y;
  BenchWorkspace bw;
  SkinnyGemmWorkspace& wsp = bw.ws;
  const double w_bytes = static_cast<double>(l.n) * l.k * static_cast<double>(dtype_bytes(wt, 1));
  const auto variants = skinny_gemm_variants();
  for (int vi = 0; vi < static_cast<int>(variants.size()); ++vi) {
    const SkinnyGemmVariant& v = variants[static_cast<size_t>(vi)];
    if (v.w != wt || v.y != l.y || m > v.max_m || (m <= v.max_m / 2 && v.max_m > 8)) continue;
    if (f16_only && (!v.f16 || v.stream || !(v.x_ahead || v.preferred))) continue;
    for (int warps : {0, 4, 6, 8}) {
      if (f16_only && warps == 4) continue;
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
        std::printf("sweep %-8s %-5s m=%-2lld v%-2d(rt%d u%d s%d a%d%s%s) warps=%d(%d) split=%d ctas=%lld occ=%d pdl=%d  %7.2f us  %6.1f%%\n",
                    l.name, std::string(dtype_name(wt)).c_str(), static_cast<long long>(m), vi, v.row_tiles, v.unroll,
                    v.stages, v.acc_sets, v.x_ahead ? " xa" : "", v.preferred ? "*" : "", launch.warps, warps, launch.split_k,
                    static_cast<long long>(launch.ctas), launch.ctas_per_sm, pdl ? 1 : 0, ms * 1e3,
                    100.0 * w_bytes / ms / 1e6 / c.copy_gbps);
      }
    }
  }
  std::fflush(stdout);
}

// The wgmma rows at one m (KILN_GEMM_SWEEP=wgmma): every wgmma row whose N serves m (N / 2 < m <=
// N, or N = 16 at m <= 16) at split K automatic / 2 / 3 / 4 / 6 , and the preferred grid row
// of Gemm::run's choice for comparison (graph-timed, with programmatic dependent launch).
void sweep_wgmma(const bench::Ceilings& c, cudaStream_t s, const Layer& l, int64_t m) {
  const std::vector<BenchWeights> ws = weight_copies(DType::kFp8E4M3, l.n, l.k);
  const DecodeXY xy = decode_xy(l, m);
  const DeviceTensor *x = &xy.x, *y = &xy.y;
  BenchWorkspace bw;
  const double w_bytes = static_cast<double>(l.n) * l.k;
  const auto variants = skinny_gemm_variants();
  auto run = [&](SkinnyGemmConfig cfg, const char* what) {
    SkinnyGemmLaunch launch;
    auto call = [&](int i) {
      const BenchWeights& w = ws[static_cast<size_t>(i) % ws.size()];
      check(skinny_gemm_cuda({x->tensor, w.w.tensor, {}, y->tensor, w.scale.tensor}, bw.ws, s, cfg, &launch), "skinny_gemm_cuda");
    };
    call(0);
    check(cudaStreamSynchronize(s), "sync");
    const double ms = graph_ms(call, s);
    const SkinnyGemmVariant& v = variants[static_cast<size_t>(launch.variant)];
    std::printf("wgsweep %-8s m=%-2lld v%-2d(%s N%d rt%d s%d) split=%d(%d)%s ctas=%lld occ=%d  %7.2f us  %6.1f%%\n", l.name,
                static_cast<long long>(m), launch.variant, what, v.max_m, v.row_tiles, v.stages, launch.split_k, cfg.split_k,
                launch.cluster_split ? "c" : "",
                static_cast<long long>(launch.ctas), launch.ctas_per_sm, ms * 1e3, 100.0 * w_bytes / ms / 1e6 / c.copy_gbps);
  };
  run({}, "auto");
  run({.workspace_split = true}, "auto-ws");
  run({.x_bf16 = true}, "x-bf16");
  for (int vi = 0; vi < static_cast<int>(variants.size()); ++vi) {
    const SkinnyGemmVariant& v = variants[static_cast<size_t>(vi)];
    if (!v.wgmma || v.y != l.y || m > v.max_m || (v.max_m > 16 && 2 * m <= v.max_m)) continue;
    for (int split : {0, 2, 3, 4, 6}) run({vi, 0, split}, "wgmma");
  }
  std::fflush(stdout);
}

// fp8 decode on the four dense shapes at m = 1, 8, 16, 32, 64 (section "decode_fp8"): what
// Gemm::run does now (default options), the decode kernel past kGemmSkinnyMaxMFp8, cuBLASLt fp8, and
// the grid row that served m <= 16 before the wgmma rows (x kept bf16).
// Gemm::run_quantized on x quantized per token once, outside the timed graph: the decode GEMM as
// the model runs qkv, gate_up and down past m = 8, their x written in e4m3 by the norm or the
// SwiGLU (no pre-pass kernel; o_proj's x comes from attention in bf16 and goes through run()).
void bench_decode_xq(Gemm& gemm, const bench::Ceilings& c, cudaStream_t s, const Layer& l, int64_t m) {
  const std::vector<BenchWeights> ws = weight_copies(DType::kFp8E4M3, l.n, l.k);
  const DecodeXY xy = decode_xy(l, m);
  auto xq = DeviceTensor::empty(DType::kFp8E4M3, {m, l.k});
  auto xs = DeviceTensor::empty(DType::kF32, {m});
  check(xq.status(), "alloc xq");
  check(xs.status(), "alloc x scales");
  check(quantize_fp8_cuda({xy.x.tensor, xq->tensor, xs->tensor}, s), "quantize x");
  auto call = [&](int i) {
    const BenchWeights& w = ws[static_cast<size_t>(i) % ws.size()];
    check(gemm.run_quantized({xq->tensor, xs->tensor, w.w.tensor, {}, xy.y.tensor, w.scale.tensor}, s), "run_quantized");
  };
  call(0);
  check(cudaStreamSynchronize(s), "sync");
  const double ms = graph_ms(call, s);
  bench::report(std::string("gemm ") + l.name + " default fp8 x-e4m3 given", shape_of(l, m), ms,
                static_cast<double>(l.n) * l.k / ms / 1e6, c.copy_gbps, "GB/s");
}

void bench_decode_fp8(const bench::Ceilings& c, cudaStream_t s, const Layer& l, int64_t m, Gemm& def, Gemm& cublas,
                      Gemm& skinny) {
  bench_decode(def, c, s, l, m, " default fp8", DType::kFp8E4M3, false);
  if (m > 8 && l.y == DType::kBF16) bench_decode_xq(def, c, s, l, m);
  if (m > kGemmSkinnyMaxMFp8) bench_decode(skinny, c, s, l, m, " skinny fp8", DType::kFp8E4M3, false);
  if (m >= 16) bench_decode(cublas, c, s, l, m, " cublas fp8", DType::kFp8E4M3, false);
  if (m == 16) {
    const std::vector<BenchWeights> ws = weight_copies(DType::kFp8E4M3, l.n, l.k);
    const DecodeXY xy = decode_xy(l, m);
    const DeviceTensor *x = &xy.x, *y = &xy.y;
    BenchWorkspace bw;
    auto call = [&](int i) {
      const BenchWeights& w = ws[static_cast<size_t>(i) % ws.size()];
      check(skinny_gemm_cuda({x->tensor, w.w.tensor, {}, y->tensor, w.scale.tensor}, bw.ws, s, {.x_bf16 = true}), "skinny");
    };
    call(0);
    check(cudaStreamSynchronize(s), "sync");
    const double ms = graph_ms(call, s);
    const double w_bytes = static_cast<double>(l.n) * l.k;
    bench::report(std::string("gemm ") + l.name + " skinny fp8 x-bf16", shape_of(l, m), ms, w_bytes / ms / 1e6, c.copy_gbps, "GB/s");
  }
}

// Decode A/B on one shape (section "ab"): the grid kernel Gemm::run used before (the preferred
// non-stream variant) against the persistent warp-stream variants at several launch shapes, and
// the stream's diagnostics: loads only (no math) and math only (no loads), all graph-timed.
void bench_ab(const bench::Ceilings& c, cudaStream_t s, const Layer& l, DType wt) {
  const std::vector<BenchWeights> ws = weight_copies(wt, l.n, l.k);
  BenchWorkspace bw;
  SkinnyGemmWorkspace& wsp = bw.ws;
  const double w_bytes = static_cast<double>(l.n) * l.k * static_cast<double>(dtype_bytes(wt, 1));
  const auto variants = skinny_gemm_variants();
  for (int64_t m : {1, 8, 16}) {
    if (wt == DType::kBF16 && m > 8) continue;
    const DecodeXY xy = decode_xy(l, m);
    const DeviceTensor *x = &xy.x, *y = &xy.y;
    auto time = [&](const SkinnyGemmConfig& cfg, SkinnyGemmLaunch* launch) {
      auto call = [&](int i) {
        const BenchWeights& w = ws[static_cast<size_t>(i) % ws.size()];
        check(skinny_gemm_cuda({x->tensor, w.w.tensor, {}, y->tensor, w.scale.tensor}, wsp, s, cfg, launch), "skinny_gemm_cuda");
      };
      call(0);
      check(cudaStreamSynchronize(s), "sync");
      return graph_ms(call, s);
    };
    const std::string tag = std::string(l.name) + " " + std::string(dtype_name(wt)) + " m=" + std::to_string(m);
    SkinnyGemmLaunch launch;
    const double old_ms = time({}, &launch);
    auto ref = to_host(y->tensor, DType::kF32);
    check(ref.status(), "to_host");
    const std::vector<float> yref(ref->tensor.ptr<float>(), ref->tensor.ptr<float>() + m * l.n);
    auto diff = [&]() {  // max |y - y_grid| / max |y_grid| of the last call (the same weight copy)
      auto h = to_host(y->tensor, DType::kF32);
      check(h.status(), "to_host");
      double md = 0, mr = 0;
      for (int64_t i = 0; i < m * l.n; ++i) {
        md = std::max(md, static_cast<double>(std::fabs(h->tensor.ptr<float>()[i] - yref[static_cast<size_t>(i)])));
        mr = std::max(mr, static_cast<double>(std::fabs(yref[static_cast<size_t>(i)])));
      }
      return md / std::max(mr, 1e-30);
    };
    std::printf("ab %-24s grid  v%-2d warps=%d split=%d ctas=%lld  %8.2f us %6.1f%%\n", tag.c_str(), launch.variant, launch.warps,
                launch.split_k, static_cast<long long>(launch.ctas), old_ms * 1e3, 100.0 * w_bytes / old_ms / 1e6 / c.copy_gbps);
    for (int vi = 0; vi < static_cast<int>(variants.size()); ++vi) {  // the grid variants not preferred
      const SkinnyGemmVariant& v = variants[static_cast<size_t>(vi)];
      if (v.stream || v.preferred || v.w != wt || v.y != l.y || m > v.max_m || (m <= v.max_m / 2 && v.max_m > 8)) continue;
      const double ms = time({vi, 0, 0}, &launch);
      std::printf("ab %-24s grid  v%-2d(rt%d u%d s%d%s) warps=%d split=%d ctas=%lld occ=%d  %8.2f us %6.1f%%  diff %.1e\n",
                  tag.c_str(), vi, v.row_tiles, v.unroll, v.stages, v.f16 ? " f16" : "", launch.warps, launch.split_k,
                  static_cast<long long>(launch.ctas), launch.ctas_per_sm, ms * 1e3, 100.0 * w_bytes / ms / 1e6 / c.copy_gbps,
                  diff());
    }
    double best_ms = 1e30;
    int best_v = -1, best_w = 0, best_c = 0;
    for (int vi = 0; vi < static_cast<int>(variants.size()); ++vi) {
      const SkinnyGemmVariant& v = variants[static_cast<size_t>(vi)];
      if (!v.stream || v.w != wt || v.y != l.y || m > v.max_m || (m <= v.max_m / 2 && v.max_m > 8)) continue;
      for (int warps : {8})
        for (int per_sm : {2, 3, 4}) {
          const double ms = time({vi, warps, per_sm}, &launch);
          std::printf("ab %-24s strm  v%-2d(rt%d u%d s%d%s) warps=%d ctas/sm=%d ctas=%lld  %8.2f us %6.1f%%  diff %.1e\n",
                      tag.c_str(), vi, v.row_tiles, v.unroll, v.stages, v.f16 ? " f16" : "", warps, launch.split_k,
                      static_cast<long long>(launch.ctas),
                      ms * 1e3, 100.0 * w_bytes / ms / 1e6 / c.copy_gbps, diff());
          if (ms < best_ms) { best_ms = ms; best_v = vi; best_w = warps; best_c = per_sm; }
        }
    }
    if (best_v < 0) continue;
    for (int diag : {1, 2}) {
      const double ms = time({best_v, best_w, best_c, diag}, &launch);
      std::printf("ab %-24s %s v%-2d  %8.2f us %6.1f%%\n", tag.c_str(), diag == 1 ? "loads-only" : "math-only ", best_v,
                  ms * 1e3, 100.0 * w_bytes / ms / 1e6 / c.copy_gbps);
    }
    std::printf("@@ ab %s | grid %.1f%% -> stream v%d w%d c%d | %.1f%% | | %.3f\n", tag.c_str(),
                100.0 * w_bytes / old_ms / 1e6 / c.copy_gbps, best_v, best_w, best_c, 100.0 * w_bytes / best_ms / 1e6 / c.copy_gbps,
                old_ms / best_ms);
    std::fflush(stdout);
  }
}

// Section "e4m3": fp8 decode A/B on one shape, graph-timed: the grid row skinny_gemm_cuda picks
// with x bf16 (SkinnyGemmConfig::x_bf16: the f16 widening or a stream row) against every e4m3 row (x
// quantized per token by the pre-pass, the e4m3 mma), automatic launch shape each.
void bench_e4m3_ab(const bench::Ceilings& c, cudaStream_t s, const Layer& l) {
  const DType wt = DType::kFp8E4M3;
  const std::vector<BenchWeights> ws = weight_copies(wt, l.n, l.k);
  BenchWorkspace bw;
  SkinnyGemmWorkspace& wsp = bw.ws;
  const double w_bytes = static_cast<double>(l.n) * l.k;
  const auto variants = skinny_gemm_variants();
  for (int64_t m : {1, 8, 16}) {
    const DecodeXY xy = decode_xy(l, m);
    const DeviceTensor *x = &xy.x, *y = &xy.y;
    auto time = [&](const SkinnyGemmWorkspace& w_s, const SkinnyGemmConfig& cfg, SkinnyGemmLaunch* launch) {
      auto call = [&](int i) {
        const BenchWeights& w = ws[static_cast<size_t>(i) % ws.size()];
        check(skinny_gemm_cuda({x->tensor, w.w.tensor, {}, y->tensor, w.scale.tensor}, w_s, s, cfg, launch), "skinny_gemm_cuda");
      };
      call(0);
      check(cudaStreamSynchronize(s), "sync");
      return graph_ms(call, s);
    };
    SkinnyGemmLaunch launch;
    SkinnyGemmConfig old_cfg;
    old_cfg.x_bf16 = true;  // the automatic choice among the rows that keep x bf16 (before the e4m3 rows)
    const double old_ms = time(wsp, old_cfg, &launch);
    const int old_v = launch.variant;
    const std::string tag = std::string(l.name) + " m=" + std::to_string(m);
    std::printf("e4m3ab %-16s old v%-2d%s warps=%d split=%d ctas=%lld  %8.2f us %6.1f%%\n", tag.c_str(), old_v,
                variants[static_cast<size_t>(old_v)].e4m3 ? " (e4m3!)" : "", launch.warps, launch.split_k,
                static_cast<long long>(launch.ctas), old_ms * 1e3, 100.0 * w_bytes / old_ms / 1e6 / c.copy_gbps);
    double best_ms = 1e30;
    int best_v = -1;
    for (int vi = 0; vi < static_cast<int>(variants.size()); ++vi) {
      const SkinnyGemmVariant& v = variants[static_cast<size_t>(vi)];
      if (!v.e4m3 || v.y != l.y || m > v.max_m || (m <= v.max_m / 2 && v.max_m > 8)) continue;
      for (int warps : {0, 4, 8}) {
        const double ms = time(wsp, {vi, warps, 0}, &launch);
        std::printf("e4m3ab %-16s e4m3 v%-2d(rt%d u%d s%d) warps=%d(%d) split=%d ctas=%lld occ=%d  %8.2f us %6.1f%%\n", tag.c_str(),
                    vi, v.row_tiles, v.unroll, v.stages, launch.warps, warps, launch.split_k, static_cast<long long>(launch.ctas),
                    launch.ctas_per_sm, ms * 1e3, 100.0 * w_bytes / ms / 1e6 / c.copy_gbps);
        if (warps == 0 && ms < best_ms) { best_ms = ms; best_v = vi; }
      }
    }
    // The wgmma rows at forced K splits (the automatic split is a wave-efficiency guess).
    if (m <= 8)
      for (int vi = 0; vi < static_cast<int>(variants.size()); ++vi) {
        const SkinnyGemmVariant& v = variants[static_cast<size_t>(vi)];
        if (!v.wgmma || v.y != l.y || m > v.max_m) continue;
        std::printf("@@ wgsplit %s v%d(s%d) |", tag.c_str(), vi, v.stages);
        for (int split : {1, 2, 3, 4, 6, 8}) {
          const double ms = time(wsp, {vi, 4, split}, &launch);
          std::printf(" s%d=%.1f%%(%lld)", launch.split_k, 100.0 * w_bytes / ms / 1e6 / c.copy_gbps, static_cast<long long>(launch.ctas));
        }
        std::printf("\n");
      }
    const double auto_ms = time(wsp, {}, &launch);  // what Gemm::run would take now
    std::printf("@@ e4m3ab %s | v%d %.1f%% -> best e4m3 v%d %.1f%% (auto v%d %.1f%%) | %.1f%% | | %.3f\n", tag.c_str(), old_v,
                100.0 * w_bytes / old_ms / 1e6 / c.copy_gbps, best_v, 100.0 * w_bytes / best_ms / 1e6 / c.copy_gbps, launch.variant,
                100.0 * w_bytes / auto_ms / 1e6 / c.copy_gbps, 100.0 * w_bytes / best_ms / 1e6 / c.copy_gbps, old_ms / best_ms);
    std::fflush(stdout);
  }
}

// Mixtral experts: 8 experts of [n, k]; t tokens x top_k = 2 slots with random distinct experts
// per token (4 id sets rotated, so consecutive calls read different experts). GB/s of the
// distinct expert bytes of each call.
// variant: an index into moe_decode_gemm_variants() (-1: moe_decode_gemm_cuda's choice);
// workspace: pass MoeDecodeGemmArgs::workspace (fp8: lets the e4m3 rows run).
void bench_moe(const bench::Ceilings& c, cudaStream_t s, const char* name, int64_t n, int64_t k, int64_t t, DType wt,
               int variant = -1, bool workspace = true) {
  const int64_t num_experts = 8, top_k = 2;
  const ExpertSet experts = make_expert_set(wt, n, k, 300, num_experts);
  std::mt19937 rng(5);
  double distinct = 0;
  const std::vector<DeviceTensor> ids = rotated_id_sets(t, top_k, num_experts, rng, &distinct);
  auto x = DeviceTensor::empty(DType::kBF16, {t, k});
  auto y = DeviceTensor::empty(DType::kBF16, {t * top_k, n});
  check(x.status(), "x");
  check(y.status(), "y");
  bench::fill_random_bf16(x->tensor.data, t * k, 9);
  auto xws = DeviceTensor::empty(DType::kInt8, {moe_decode_gemm_workspace_bytes(t, k)});
  check(xws.status(), "workspace");
  auto call = [&](int i) {
    MoeDecodeGemmArgs a{x->tensor, ids[static_cast<size_t>(i) % ids.size()].tensor, experts.ptrs.tensor,
                        wt == DType::kFp8E4M3 ? experts.scale_ptrs.tensor : Tensor{}, wt, n, y->tensor, workspace ? xws->tensor : Tensor{}};
    a.ids_ready = std::string(name) == "down";  // as in the model: down's ids come from an earlier kernel
    check(variant < 0 ? moe_decode_gemm_cuda(a, s) : moe_decode_gemm_cuda_variant(a, variant, s), "moe_decode_gemm_cuda");
  };
  call(0);
  check(cudaStreamSynchronize(s), "sync");
  const double ms = graph_ms(call, s);
  const double bytes = distinct * static_cast<double>(n) * k * static_cast<double>(dtype_bytes(wt, 1));
  const auto mv = moe_decode_gemm_variants();
  const bool f16 = variant >= 0 && mv[static_cast<size_t>(variant)].f16, e4m3 = variant >= 0 && mv[static_cast<size_t>(variant)].e4m3;
  std::string ring;  // the wgmma rows' ring depth and slot-tile width
  if (variant >= 0 && mv[static_cast<size_t>(variant)].wgmma) {
    const MoeDecodeGemmVariant& v = mv[static_cast<size_t>(variant)];
    ring = " ring " + std::to_string(v.stages) + " n" + std::to_string(v.max_n);
  }
  bench::report(std::string("moe_decode ") + name + " " + std::string(dtype_name(wt)) + (f16 ? " f16" : "") + (e4m3 ? " e4m3" : "") + ring +
                    (variant < 0 && wt == DType::kFp8E4M3 ? (workspace ? " auto+ws" : " auto") : ""),
                "t=" + std::to_string(t) + " top_k=2 E=8 n=" + std::to_string(n) + " k=" + std::to_string(k) + " (" +
                    std::to_string(distinct).substr(0, 4) + " experts)",
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
  // Llama-3-8B and Mistral-7B share these (hidden 4096, 32 q / 8 kv heads of 128, inter 14336);
  // Mixtral-8x7B's experts are gate_up and down.
  const Layer layers[] = {
      {"qkv", 6144, 4096, DType::kBF16},
      {"o_proj", 4096, 4096, DType::kBF16},
      {"gate_up", 28672, 4096, DType::kBF16},
      {"down", 4096, 14336, DType::kBF16},
      {"lm_head_llama3", 128256, 4096, DType::kF32},
  };
  if (section("ab")) {
    const char* ab = std::getenv("KILN_GEMM_AB");  // "fp8": fp8 weights with bf16 y only
    const bool fp8_only = ab && std::string(ab) == "fp8";
    for (const Layer& l : layers)
      for (DType wt : {DType::kFp8E4M3, DType::kBF16})
        if (!fp8_only || (wt == DType::kFp8E4M3 && l.y == DType::kBF16)) bench_ab(c, s, l, wt);
  }
  const char* sweep_only = std::getenv("KILN_GEMM_SWEEP");
  if (section("sweep") && sweep_only && std::string(sweep_only) == "wgmma") {
    const std::vector<int64_t> ms = env_list("KILN_GEMM_SWEEP_M", {16, 32, 64});
    for (const Layer& l : layers)
      for (int64_t m : ms)
        if (l.y == DType::kBF16) sweep_wgmma(c, s, l, m);
  } else if (section("sweep") && sweep_only && std::string(sweep_only) == "f16") {
    for (const Layer& l : layers)
      for (int64_t m : {1, 8, 16})
        if (l.y == DType::kBF16) sweep(c, s, l, m, DType::kFp8E4M3, true);
  } else if (section("sweep")) {
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
  if (section("decode_fp8")) {
    auto def = Gemm::create();  // Gemm::run's dispatch as shipped
    check(def.status(), "Gemm::create");
    for (const Layer& l : layers)
      for (int64_t m : env_list("KILN_GEMM_DECODE_M", {1, 8, 16, 32, 64}))
        if (l.y == DType::kBF16 || m >= 32) bench_decode_fp8(c, s, l, m, *def, *cublas, *skinny);
  }
  if (section("e4m3"))
    for (const Layer& l : layers)
      if (l.y == DType::kBF16) bench_e4m3_ab(c, s, l);
  if (section("moe")) {
    // bf16 at t = 1, 8; fp8 also at the serving batches up to kMoeDecodeMaxSlots (256 x top-2):
    // the automatic choice with and without a workspace (e4m3 or not), and every fp8 row.
    for (DType wt : {DType::kBF16, DType::kFp8E4M3})
      for (int64_t t : {1, 8, 32, 64, 128, 256}) {
        if (t * 2 > kMoeDecodeMaxSlots || (wt == DType::kBF16 && t > 8)) continue;
        if (const char* tmax = std::getenv("KILN_GEMM_MOE_T_MAX"); tmax && t > std::atoi(tmax)) continue;
        bench_moe(c, s, "gate_up", 28672, 4096, t, wt);
        bench_moe(c, s, "down", 4096, 14336, t, wt);
        if (wt == DType::kBF16) continue;
        bench_moe(c, s, "gate_up", 28672, 4096, t, wt, -1, false);
        bench_moe(c, s, "down", 4096, 14336, t, wt, -1, false);
        const auto mv = moe_decode_gemm_variants();
        for (int vi = 0; vi < static_cast<int>(mv.size()); ++vi)
          if (mv[static_cast<size_t>(vi)].w == wt && (mv[static_cast<size_t>(vi)].e4m3 || t <= 8) && t * 2 <= mv[static_cast<size_t>(vi)].max_slots) {
            bench_moe(c, s, "gate_up", 28672, 4096, t, wt, vi);
            bench_moe(c, s, "down", 4096, 14336, t, wt, vi);
          }
      }
  }
  if (section("prefill")) {
    const Fp8PrefillVariant fp8_variants[] = {
        // the first version: unscaled GEMM + epilogue kernel, plain accumulation
        {" fp8 epilogue plain", {.skinny_max_m_fp8 = 0, .fp8_fast_accum = false, .fp8_native_scales = false}},
        {" fp8 token plain", {.skinny_max_m_fp8 = 0, .fp8_fast_accum = false}},
        {" fp8 tensor", {.skinny_max_m_fp8 = 0, .fp8_activations = Fp8Activations::kPerTensor}},
        {" fp8 default", {}},  // what the model gets (Gemm::create()): x per token, fast accumulation
    };
    std::vector<Gemm> fp8_gemms;
    for (const auto& v : fp8_variants) {
      auto g = Gemm::create(v.options);
      check(g.status(), "Gemm::create");
      fp8_gemms.push_back(std::move(g).value());
    }
    for (int64_t m : {512, 1024, 4096}) {
      for (const Layer& l : layers) {
        if (l.y == DType::kF32) continue;
        bench_prefill(*cublas, c, s, l, m, " cublas bf16", DType::kBF16);
        for (size_t i = 0; i < fp8_gemms.size(); ++i)
          bench_prefill(fp8_gemms[i], c, s, l, m, fp8_variants[i].tag, DType::kFp8E4M3);
      }
    }
    for (size_t i = 0; i < fp8_gemms.size(); ++i)
      std::printf("fp8 prefill scales,%s: %s\n", fp8_variants[i].tag, fp8_gemms[i].fp8_prefill_scales().c_str());
    for (int64_t k : {4096, 14336}) bench_fp8_quantizer(c, s, 4096, k);
  }
  check(cudaStreamDestroy(s), "cudaStreamDestroy");
  return 0;
}
