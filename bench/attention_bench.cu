// Paged attention micro-benchmarks, bf16 and fp8 e4m3 caches: decode (achieved K+V cache bytes per
// second, 1 byte per element for fp8, against the copy bandwidth) and causal prefill (FLOP rate, causal FLOPs = 4 * T^2 * d * heads / 2, against cuDNN's
// prefill and the dense bf16 rate). Median of 25 timed runs after >= 30 ms of warm-up runs,
// cudaEvent timing, an L2 flush (a read of 256 MB) before each run. Ceilings come from $KILN_GPU_CEILINGS (the JSON of
// gpu_ceilings.py) when set, else a measured device-to-device copy and the issue's figures
// (591 / 750 TFLOP/s).
//   attention_bench [decode|tune|graph|prefill|all|splits [SHAPE_SUBSTRING]]   (default: all shapes; tune: the fp8
//   decode alternatives only; graph: decode timed the way a decode step runs it, below; splits: the
//   batched decode split sweep, not in all)
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kiln/kernels/attention.h"
#include "kiln/kernels/cuda/attention/attention_params.h"
#include "kiln/kernels/cuda/common/device_buffer.h"

namespace kiln {
namespace {

#define BENCH_CHECK(expr)                                              \
  do {                                                                 \
    const Status s_ = (expr);                                          \
    if (!s_.ok()) {                                                    \
      std::fprintf(stderr, "%s: %s\n", #expr, s_.to_string().c_str()); \
      std::exit(1);                                                    \
    }                                                                  \
  } while (0)
#define BENCH_CUDA(expr)                                               \
  do {                                                                 \
    const cudaError_t e_ = (expr);                                     \
    if (e_ != cudaSuccess) {                                           \
      std::fprintf(stderr, "%s: %s\n", #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                    \
    }                                                                  \
  } while (0)

__global__ void fill_random_bf16(uint16_t* p, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    uint32_t x = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    x ^= x >> 15, x *= 2246822519u, x ^= x >> 13;
    const float f = (x & 0xffff) / 32768.0f - 1.0f;  // [-1, 1)
    p[i] = static_cast<uint16_t>(__float_as_uint(f) >> 16);
  }
}

// The L2 flush before each timed run reads a buffer twice the L2's size: the timed kernel then
// finds no useful line in L2 and no dirty one either (a memset flush would leave ~L2-size dirty
// lines whose write-back lands inside the timed run).
__global__ void l2_flush_read(const uint4* p, int64_t n, int* sink) {
  uint32_t acc = 0;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const uint4 v = __ldcg(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) *sink = static_cast<int>(acc);  // keeps the loads; practically never true
}

// Random fp8 e4m3 codes of values in (-32, 32) (no NaN).
__global__ void fill_random_fp8(uint8_t* p, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    uint32_t x = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    x ^= x >> 15, x *= 2246822519u, x ^= x >> 13;
    uint8_t b = static_cast<uint8_t>(x & 0xff);
    if ((b & 0x78) > 0x50) b &= 0xd7;  // exponent <= 11: |value| < 32, never NaN
    p[i] = b;
  }
}

DeviceTensor random_device(std::initializer_list<int64_t> shape, uint32_t seed, DType dtype = DType::kBF16) {
  Result<DeviceTensor> t = DeviceTensor::empty(dtype, shape);
  BENCH_CHECK(t.status());
  if (dtype == DType::kFp8E4M3)
    fill_random_fp8<<<1024, 256>>>(static_cast<uint8_t*>(t->tensor.data), t->tensor.numel(), seed);
  else
    fill_random_bf16<<<1024, 256>>>(static_cast<uint16_t*>(t->tensor.data), t->tensor.numel(), seed);
  BENCH_CUDA(cudaGetLastError());
  return std::move(*t);
}

DeviceTensor int32_device(const std::vector<int32_t>& v, std::initializer_list<int64_t> shape) {
  Result<DeviceTensor> t = to_device(Tensor::view(const_cast<int32_t*>(v.data()), DType::kInt32, shape));
  BENCH_CHECK(t.status());
  return std::move(*t);
}

struct Ceilings {
  double copy_gbps = 0, cudnn_prefill_tflops = 591, dense_tflops = 750;
  std::string source = "issue figures";
};

double json_number(const std::string& text, const std::string& key, double fallback) {
  const size_t at = text.find("\"" + key + "\"");
  if (at == std::string::npos) return fallback;
  const size_t colon = text.find(':', at);
  return colon == std::string::npos ? fallback : std::strtod(text.c_str() + colon + 1, nullptr);
}

void flush_l2(void* flush, size_t flush_bytes) {
  l2_flush_read<<<1056, 512>>>(static_cast<const uint4*>(flush), static_cast<int64_t>(flush_bytes / 16),
                               static_cast<int*>(flush));
}

// Median milliseconds of `fn` over `reps` runs, each after an L2 flush. Before them, (flush, fn)
// pairs run back to back for at least kWarmupMs of wall time: a case measured right after the
// host prepared it (GPU idle for milliseconds) otherwise met lower clocks in its first runs and
// read several percent slow, more the shorter the kernel (the B1 x 32K rows, 40 us).
template <typename Fn>
double median_ms(Fn&& fn, void* flush, size_t flush_bytes, int reps = 25) {
  constexpr double kWarmupMs = 30;
  cudaEvent_t start, stop;
  BENCH_CUDA(cudaEventCreate(&start));
  BENCH_CUDA(cudaEventCreate(&stop));
  const auto t0 = std::chrono::steady_clock::now();
  for (int round = 0;; ++round) {
    for (int i = 0; i < 8; ++i) {
      flush_l2(flush, flush_bytes);
      fn();
    }
    BENCH_CUDA(cudaDeviceSynchronize());
    const double waited = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (round >= 1 && waited >= kWarmupMs) break;
  }
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    flush_l2(flush, flush_bytes);
    BENCH_CUDA(cudaEventRecord(start));
    fn();
    BENCH_CUDA(cudaEventRecord(stop));
    BENCH_CUDA(cudaEventSynchronize(stop));
    float t = 0;
    BENCH_CUDA(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  BENCH_CUDA(cudaGetLastError());
  std::sort(ms.begin(), ms.end());
  BENCH_CUDA(cudaEventDestroy(start));
  BENCH_CUDA(cudaEventDestroy(stop));
  return ms[ms.size() / 2];
}

Ceilings measure_ceilings(void* flush, size_t flush_bytes) {
  Ceilings c;
  if (const char* path = std::getenv("KILN_GPU_CEILINGS")) {
    std::ifstream f(path);
    std::stringstream ss;
    ss << f.rdbuf();
    const std::string text = ss.str();
    c.copy_gbps = json_number(text, "copy_GBps", 0);
    const size_t prefill = text.find("\"prefill_attention\"");
    if (prefill != std::string::npos) c.cudnn_prefill_tflops = json_number(text.substr(prefill), "TFLOPs", 591);
    if (c.copy_gbps > 0) c.source = path;
  }
  if (c.copy_gbps <= 0) {  // 1 GiB device-to-device copy, bytes read + written
    const size_t n = size_t{1} << 30;
    Result<DeviceBuffer> a = DeviceBuffer::alloc(n), b = DeviceBuffer::alloc(n);
    BENCH_CHECK(a.status());
    BENCH_CHECK(b.status());
    BENCH_CUDA(cudaMemset(a->data(), 1, n));
    const double ms = median_ms([&] { BENCH_CUDA(cudaMemcpyAsync(b->data(), a->data(), n, cudaMemcpyDeviceToDevice)); },
                                flush, flush_bytes, 10);
    c.copy_gbps = 2.0 * n / ms / 1e6;
    c.source = "measured copy + issue figures";
  }
  return c;
}

// A paged batch over a randomly permuted block pool (block size 16).
struct Batch {
  DeviceTensor q, k, v, out, cu, kv_lens, tables;
  int64_t kv_bytes = 0;  // K + V bytes the batch must read
  double causal_flops = 0;
  PagedAttentionArgs args(int64_t d, int64_t window = 0) const {
    return {q.tensor,       k.tensor,      v.tensor,   cu.tensor,
            kv_lens.tensor, tables.tensor, out.tensor, 1.0f / std::sqrt(static_cast<float>(d)),
            window,         0.05f,         0.1f};  // K/V scales: used by fp8 caches only
  }
};

Batch make_batch(const std::vector<std::pair<int32_t, int32_t>>& seqs /* q_len, kv_len */, int64_t hq, int64_t hkv,
                 int64_t d, DType cache = DType::kBF16) {
  const int64_t elem_bytes = cache == DType::kFp8E4M3 ? 1 : 2;
  constexpr int64_t kBs = 16;
  const int64_t batch = static_cast<int64_t>(seqs.size());
  int64_t tokens = 0, blocks = 0, max_blocks = 1;
  Batch b;
  std::vector<int32_t> cu = {0}, kv_lens;
  for (auto [q_len, kv_len] : seqs) {
    tokens += q_len;
    blocks += (kv_len + kBs - 1) / kBs;
    max_blocks = std::max<int64_t>(max_blocks, (kv_len + kBs - 1) / kBs);
    cu.push_back(cu.back() + q_len);
    kv_lens.push_back(kv_len);
    b.kv_bytes += int64_t{kv_len} * hkv * d * elem_bytes * 2;
    for (int64_t i = 0; i < q_len; ++i) b.causal_flops += 4.0 * d * hq * (kv_len - q_len + i + 1);
  }
  std::vector<int32_t> perm(static_cast<size_t>(blocks)), tables(static_cast<size_t>(batch * max_blocks), 0);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(1));
  size_t next = 0;
  for (int64_t i = 0; i < batch; ++i)
    for (int64_t j = 0; j < (seqs[static_cast<size_t>(i)].second + kBs - 1) / kBs; ++j)
      tables[static_cast<size_t>(i * max_blocks + j)] = perm[next++];
  b.q = random_device({tokens, hq, d}, 1);
  b.k = random_device({blocks, kBs, hkv, d}, 2, cache);
  b.v = random_device({blocks, kBs, hkv, d}, 3, cache);
  Result<DeviceTensor> out = DeviceTensor::empty(DType::kBF16, {tokens, hq, d});
  BENCH_CHECK(out.status());
  b.out = std::move(*out);
  b.cu = int32_device(cu, {batch + 1});
  b.kv_lens = int32_device(kv_lens, {batch});
  b.tables = int32_device(tables, {batch, max_blocks});
  return b;
}

struct Row {
  std::string kernel, shape;
  double ms, achieved, ceiling, target;
  const char* unit;
};

void print_rows(const std::vector<Row>& rows) {
  std::printf("\n%-8s %-44s %9s %10s %10s %7s %8s %9s\n", "kernel", "shape", "time(us)", "achieved", "ceiling", "%ceil",
              "target", "%target");
  for (const Row& r : rows)
    std::printf("%-8s %-44s %9.1f %10.1f %10.1f %6.1f%% %8.0f %8.1f%%\n", r.kernel.c_str(), r.shape.c_str(), r.ms * 1e3,
                r.achieved, r.ceiling, 100 * r.achieved / r.ceiling, r.target,
                r.target > 0 ? 100 * r.achieved / r.target : 0.0);
  for (const Row& r : rows)  // machine-readable, for scripts/device_run.sh
    std::printf("@@ %s | %s | %.1f %s | %.1f %s | %.3f\n", r.kernel.c_str(), r.shape.c_str(), r.achieved, r.unit,
                r.ceiling, r.unit, r.achieved / r.ceiling);
}

struct DecodeCase {
  int64_t batch, ctx, hq, hkv, d;
  int splits;
  double target_fraction;
  DType cache = DType::kBF16;
};
struct PrefillCase {
  std::vector<std::pair<int32_t, int32_t>> seqs;
  int64_t hq, hkv, d;
  std::string name;
  double target;
  DType cache = DType::kBF16;
};
constexpr DType kFp8 = DType::kFp8E4M3;

std::string g_filter;  // runs only the shapes whose name contains it

void bench_decode(const Ceilings& c, void* flush, size_t flush_bytes, std::vector<Row>& rows) {
  // The B1 x 32K split sweeps and the same 128 MB read as B8 x 4K (4 splits) and B32 x 1K (no
  // split) separate the split-K costs (combine, ramp, tail) from streaming.
  std::vector<DecodeCase> cases = {
      {64, 4096, 32, 8, 128, 0, 0.9},         {1, 32768, 32, 8, 128, 0, 0.8},
      {64, 4096, 32, 8, 128, 0, 0.85, kFp8},  {1, 32768, 32, 8, 128, 0, 0, kFp8},
      {1, 32768, 32, 8, 128, 1, 0},           {16, 8192, 32, 8, 128, 0, 0},
      {128, 2048, 32, 8, 128, 0, 0},          {8, 4096, 32, 8, 128, 0, 0},
      {32, 1024, 32, 8, 128, 0, 0},           {32, 4096, 32, 32, 128, 0, 0},
      {64, 4096, 9, 3, 64, 0, 0},             {4, 16384, 32, 4, 128, 0, 0},
      {8, 4096, 32, 8, 128, 0, 0, kFp8},      {32, 1024, 32, 8, 128, 0, 0, kFp8},
      {16, 8192, 32, 8, 128, 0, 0, kFp8},     {128, 2048, 32, 8, 128, 0, 0, kFp8},
      {64, 4096, 32, 32, 128, 0, 0, kFp8},    {64, 4096, 32, 2, 128, 0, 0, kFp8},  // group 1, group 16
      {64, 4096, 9, 3, 64, 0, 0, kFp8},       {64, 4096, 32, 8, 64, 0, 0, kFp8},
  };
  for (int splits : {16, 24, 32, 48, 64, 96}) {
    cases.push_back({1, 32768, 32, 8, 128, splits, 0});
    cases.push_back({1, 32768, 32, 8, 128, splits, 0, kFp8});
  }
  for (const DecodeCase& dc : cases) {
    char shape[96];
    std::snprintf(shape, sizeof shape, "B%lld ctx%lld %lld/%lld d%lld%s%s", (long long)dc.batch, (long long)dc.ctx,
                  (long long)dc.hq, (long long)dc.hkv, (long long)dc.d, dc.cache == kFp8 ? " fp8" : "",
                  dc.splits == 1  ? " no-split"
                  : dc.splits > 1 ? (" splits=" + std::to_string(dc.splits)).c_str()
                                  : "");
    if (std::string(shape).find(g_filter) == std::string::npos) continue;
    Batch b = make_batch(
        std::vector<std::pair<int32_t, int32_t>>(static_cast<size_t>(dc.batch), {1, static_cast<int32_t>(dc.ctx)}),
        dc.hq, dc.hkv, dc.d, dc.cache);
    const PagedAttentionArgs a = b.args(dc.d);
    Result<int64_t> ws_bytes = decode_attention_workspace_bytes(a, dc.splits);
    BENCH_CHECK(ws_bytes.status());
    Result<DeviceBuffer> ws = DeviceBuffer::alloc(*ws_bytes);
    BENCH_CHECK(ws.status());
    BENCH_CUDA(cudaMemset(ws->data(), 0, static_cast<size_t>(*ws_bytes)));  // split counters start at zero
    const double ms =
        median_ms([&] { BENCH_CHECK(decode_attention_cuda(a, dc.splits, ws->data(), nullptr)); }, flush, flush_bytes);
    if (*ws_bytes > 0) {  // the split count the plan picked
      Result<cuda::PagedAttentionParams> params = cuda::make_paged_attention_params(a);
      BENCH_CHECK(params.status());
      Result<const cuda::AttentionVariant*> v = cuda::find_attention_variant(
          cuda::decode_attention_variants(), "decode_attention", DType::kBF16, dc.cache, static_cast<int>(dc.d));
      BENCH_CHECK(v.status());
      BENCH_CHECK(cuda::plan_decode_splits(*params, **v, dc.splits));
      std::snprintf(shape + std::strlen(shape), sizeof shape - std::strlen(shape), " split-K %d", params->num_splits);
    }
    rows.push_back({"decode", shape, ms, b.kv_bytes / ms / 1e6, c.copy_gbps, dc.target_fraction * c.copy_gbps, "GB/s"});
  }
}

// The alternative fp8 decode configurations (cuda::decode_fp8_tunings, d128) on the target shapes,
// each checked against the shipped kernel's output (max |diff| / max |out| in the shape name).
void bench_fp8_tunings(const Ceilings& c, void* flush, size_t flush_bytes, std::vector<Row>& rows) {
  const std::pair<int32_t, int32_t> shapes[] = {{64, 4096}, {1, 32768}};  // batch, ctx
  for (auto [batch, ctx] : shapes) {
    Batch b = make_batch(std::vector<std::pair<int32_t, int32_t>>(static_cast<size_t>(batch), {1, ctx}), 32, 8, 128,
                         kFp8);
    const PagedAttentionArgs a = b.args(128);
    BENCH_CHECK(decode_attention_cuda(a, 0, nullptr, nullptr));
    Result<HostTensor> ref = to_host(b.out.tensor, DType::kF32);
    BENCH_CHECK(ref.status());
    for (const cuda::Fp8DecodeTuning& t : cuda::decode_fp8_tunings()) {
      char shape[96];
      std::snprintf(shape, sizeof shape, "B%d ctx%d 32/8 d128 fp8 tune:%s", batch, ctx, t.name);
      if (std::string(shape).find(g_filter) == std::string::npos) continue;
      const cuda::AttentionVariant v{DType::kBF16, 128, t.launch, t.ctas_per_sm, kFp8};
      Result<cuda::PagedAttentionParams> p = cuda::make_paged_attention_params(a);
      BENCH_CHECK(p.status());
      BENCH_CHECK(cuda::plan_decode_splits(*p, v, 0));
      const int64_t ws_bytes = cuda::decode_workspace_bytes(*p);
      Result<DeviceBuffer> ws = DeviceBuffer::alloc(std::max<int64_t>(ws_bytes, 256));
      BENCH_CHECK(ws.status());
      BENCH_CUDA(cudaMemset(ws->data(), 0, static_cast<size_t>(std::max<int64_t>(ws_bytes, 256))));
      if (ws_bytes > 0) cuda::bind_decode_workspace(*p, ws->data());
      BENCH_CUDA(cudaMemset(b.out.tensor.data, 0xff, static_cast<size_t>(b.out.tensor.numel() * 2)));
      BENCH_CHECK(t.launch(*p, nullptr));
      Result<HostTensor> got = to_host(b.out.tensor, DType::kF32);
      BENCH_CHECK(got.status());
      double diff = 0, mag = 0;
      for (int64_t i = 0; i < got->tensor.numel(); ++i) {
        const double r = ref->tensor.ptr<float>()[i], g = got->tensor.ptr<float>()[i];
        diff = std::isfinite(g) ? std::max(diff, std::fabs(g - r)) : INFINITY;
        mag = std::max(mag, std::fabs(r));
      }
      const double ms = median_ms([&] { BENCH_CHECK(t.launch(*p, nullptr)); }, flush, flush_bytes);
      std::snprintf(shape + std::strlen(shape), sizeof shape - std::strlen(shape), " split-K %d diff %.1e",
                    p->num_splits, diff / mag);
      rows.push_back({"decode", shape, ms, b.kv_bytes / ms / 1e6, c.copy_gbps, 0, "GB/s"});
    }
  }
}

// Decode timed as a decode step runs it: kCalls calls captured in one CUDA graph (launched with
// programmatic dependent launch, as in the model), each on the next of kCopies batches of the shape
// (their own random caches, together more than twice the L2, so every call reads its K/V from
// HBM), no flush between them; ms per call = graph time / kCalls (median of 11 replays). The
// per-call launch gap a lone timed launch pays is then shared with the neighbours, as in a step.
// Median ms per call of kCalls calls call(0 .. kCalls - 1) captured in one graph on stream s.
double graph_ms_per_call(cudaStream_t s, int kCalls, const std::function<void(int)>& call) {
  for (int i = 0; i < 4; ++i) call(i);  // the kernels' one-time set-up outside the capture
  BENCH_CUDA(cudaStreamSynchronize(s));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  BENCH_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < kCalls; ++i) call(i);
  BENCH_CUDA(cudaStreamEndCapture(s, &graph));
  BENCH_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  cudaEvent_t start, stop;
  BENCH_CUDA(cudaEventCreate(&start));
  BENCH_CUDA(cudaEventCreate(&stop));
  std::vector<float> ms;
  for (int r = 0; r < 13; ++r) {
    BENCH_CUDA(cudaEventRecord(start, s));
    BENCH_CUDA(cudaGraphLaunch(exec, s));
    BENCH_CUDA(cudaEventRecord(stop, s));
    BENCH_CUDA(cudaEventSynchronize(stop));
    float t = 0;
    BENCH_CUDA(cudaEventElapsedTime(&t, start, stop));
    if (r >= 2) ms.push_back(t / kCalls);  // the first two replays warm up
  }
  std::sort(ms.begin(), ms.end());
  BENCH_CUDA(cudaEventDestroy(start));
  BENCH_CUDA(cudaEventDestroy(stop));
  BENCH_CUDA(cudaGraphExecDestroy(exec));
  BENCH_CUDA(cudaGraphDestroy(graph));
  return static_cast<double>(ms[ms.size() / 2]);
}

// The batch-1 lengths 256 .. 128K separate a call's fixed cost (launch, ramp, split-K merge) from
// its streaming rate: time ~= fixed + bytes / rate.
void bench_decode_graph(const Ceilings& c, std::vector<Row>& rows) {
  constexpr int kCalls = 12;
  const DecodeCase cases[] = {{64, 4096, 32, 8, 128, 0, 0.85, kFp8},
                              {1, 32768, 32, 8, 128, 0, 0.85, kFp8},
                              {16, 8192, 32, 8, 128, 0, 0, kFp8},
                              {64, 4096, 32, 8, 128, 0, 0.9},
                              {1, 32768, 32, 8, 128, 0, 0.8},
                              {1, 8192, 32, 8, 128, 0, 0, kFp8},
                              {1, 1024, 32, 8, 128, 0, 0, kFp8},
                              {1, 256, 32, 8, 128, 0, 0, kFp8},
                              {1, 16384, 32, 8, 128, 0, 0, kFp8},
                              {1, 65536, 32, 8, 128, 0, 0, kFp8},
                              {1, 131072, 32, 8, 128, 0, 0, kFp8},
                              {2, 32768, 32, 8, 128, 0, 0, kFp8},
                              {4, 32768, 32, 8, 128, 0, 0, kFp8},
                              {1, 16384, 32, 8, 128, 0, 0},
                              {1, 65536, 32, 8, 128, 0, 0},
                              {1, 256, 32, 8, 128, 0, 0},
                              {1, 1024, 32, 8, 128, 0, 0},
                              {1, 2048, 32, 8, 128, 0, 0},
                              {1, 4096, 32, 8, 128, 0, 0},
                              {1, 2048, 32, 8, 128, 0, 0, kFp8},
                              {1, 4096, 32, 8, 128, 0, 0, kFp8},
                              {16, 1024, 32, 8, 128, 0, 0},
                              {16, 1024, 32, 8, 128, 0, 0, kFp8},
                              {1, 32768, 32, 8, 64, 0, 0, kFp8},
                              {64, 4096, 32, 8, 64, 0, 0, kFp8}};
  cudaStream_t s;
  BENCH_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  auto time_graph = [&](const std::function<void(int)>& call) { return graph_ms_per_call(s, kCalls, call); };
  for (const DecodeCase& dc : cases) {
    char shape[96];
    std::snprintf(shape, sizeof shape, "B%lld ctx%lld %lld/%lld d%lld%s graph", (long long)dc.batch,
                  (long long)dc.ctx, (long long)dc.hq, (long long)dc.hkv, (long long)dc.d,
                  dc.cache == kFp8 ? " fp8" : "");
    if (std::string(shape).find(g_filter) == std::string::npos) continue;
    std::vector<Batch> copies;
    int64_t total = 0;
    while (copies.size() < 2 || total < (int64_t{160} << 20)) {  // > 2.5x the L2
      copies.push_back(make_batch(std::vector<std::pair<int32_t, int32_t>>(static_cast<size_t>(dc.batch),
                                                                           {1, static_cast<int32_t>(dc.ctx)}),
                                  dc.hq, dc.hkv, dc.d, dc.cache));
      total += copies.back().kv_bytes;
    }
    const PagedAttentionArgs a0 = copies[0].args(dc.d);
    Result<int64_t> ws_bytes = decode_attention_workspace_bytes(a0, 0);
    BENCH_CHECK(ws_bytes.status());
    Result<DeviceBuffer> ws = DeviceBuffer::alloc(std::max<int64_t>(*ws_bytes, 256));
    BENCH_CHECK(ws.status());
    BENCH_CUDA(cudaMemset(ws->data(), 0, static_cast<size_t>(std::max<int64_t>(*ws_bytes, 256))));
    const int64_t bytes = copies[0].kv_bytes;
    const double med = time_graph([&](int i) {
      const PagedAttentionArgs a = copies[static_cast<size_t>(i) % copies.size()].args(dc.d);
      BENCH_CHECK(decode_attention_cuda(a, 0, ws->data(), s));
    });
    rows.push_back({"decode", shape, med, bytes / med / 1e6, c.copy_gbps, dc.target_fraction * c.copy_gbps, "GB/s"});
    // KILN_BENCH_GRAPH_TUNINGS: the fp8 d128 tuning rows too, on the shipped row's split plan.
    if (!std::getenv("KILN_BENCH_GRAPH_TUNINGS") || dc.cache != kFp8 || dc.d != 128) continue;
    Result<const cuda::AttentionVariant*> shipped = cuda::find_attention_variant(
        cuda::decode_attention_variants(), "decode_attention", DType::kBF16, kFp8, 128);
    BENCH_CHECK(shipped.status());
    std::vector<cuda::PagedAttentionParams> params;
    for (const Batch& b : copies) {
      Result<cuda::PagedAttentionParams> p = cuda::make_paged_attention_params(b.args(dc.d));
      BENCH_CHECK(p.status());
      BENCH_CHECK(cuda::plan_decode_splits(*p, **shipped, 0));
      if (cuda::decode_workspace_bytes(*p) > 0) cuda::bind_decode_workspace(*p, ws->data());
      params.push_back(*p);
    }
    for (const cuda::Fp8DecodeTuning& t : cuda::decode_fp8_tunings()) {
      const double ms = time_graph([&](int i) { BENCH_CHECK(t.launch(params[static_cast<size_t>(i) % params.size()], s)); });
      char name[160];
      std::snprintf(name, sizeof name, "%s tune:%s split-K %d", shape, t.name, params[0].num_splits);
      rows.push_back({"decode", name, ms, bytes / ms / 1e6, c.copy_gbps, 0, "GB/s"});
    }
  }
  BENCH_CUDA(cudaStreamDestroy(s));
}

// `attention_bench splits [SHAPE]`: batched decode (32/8 heads, d128, bf16 and fp8 caches) at
// batch 4 .. 64 x 256 .. 4096 cached tokens, graph-timed as bench_decode_graph, with the planner's
// split and with 1 .. 8 splits forced: the data behind plan_decode_splits's cost model (and batch
// 1 to 3 with up to 32, KILN_SPLIT_SWEEP_SMALL=1). One line per shape: us per call (% of copy) by
// split count.
void bench_split_sweep(const Ceilings& c) {
  constexpr int kCalls = 12;
  cudaStream_t s;
  BENCH_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  // KILN_SPLIT_SWEEP_SMALL=1: batch 1 to 3 at 1K .. 32K cached tokens, up to 32 splits, instead.
  const bool small = std::getenv("KILN_SPLIT_SWEEP_SMALL") && std::string(std::getenv("KILN_SPLIT_SWEEP_SMALL")) == "1";
  const std::vector<int64_t> batches = small ? std::vector<int64_t>{1, 2, 3} : std::vector<int64_t>{4, 8, 16, 32, 64};
  const std::vector<int64_t> contexts =
      small ? std::vector<int64_t>{1024, 2048, 4096, 8192, 16384, 32768} : std::vector<int64_t>{256, 512, 1024, 2048, 4096};
  const std::vector<int> split_counts = small ? std::vector<int>{0, 4, 8, 12, 16, 20, 24, 32} : std::vector<int>{0, 1, 2, 3, 4, 5, 6, 8};
  for (DType cache : {kFp8, DType::kBF16})
    for (int64_t batch : batches)
      for (int64_t ctx : contexts) {
        char shape[64];
        std::snprintf(shape, sizeof shape, "B%lld ctx%lld%s", (long long)batch, (long long)ctx, cache == kFp8 ? " fp8" : " bf16");
        if (std::string(shape).find(g_filter) == std::string::npos) continue;
        std::vector<Batch> copies;
        int64_t total = 0;
        while (copies.size() < 2 || total < (int64_t{160} << 20)) {  // > 2.5x the L2
          copies.push_back(make_batch(std::vector<std::pair<int32_t, int32_t>>(static_cast<size_t>(batch), {1, static_cast<int32_t>(ctx)}),
                                      32, 8, 128, cache));
          total += copies.back().kv_bytes;
        }
        const int64_t bytes = copies[0].kv_bytes;
        std::string line = std::string("splits ") + shape + ":";
        for (int splits : split_counts) {
          const PagedAttentionArgs a0 = copies[0].args(128);
          Result<int64_t> ws_bytes = decode_attention_workspace_bytes(a0, splits);
          BENCH_CHECK(ws_bytes.status());
          Result<DeviceBuffer> ws = DeviceBuffer::alloc(std::max<int64_t>(*ws_bytes, 256));
          BENCH_CHECK(ws.status());
          BENCH_CUDA(cudaMemset(ws->data(), 0, static_cast<size_t>(std::max<int64_t>(*ws_bytes, 256))));
          const double ms = graph_ms_per_call(s, kCalls, [&](int i) {
            BENCH_CHECK(decode_attention_cuda(copies[static_cast<size_t>(i) % copies.size()].args(128), splits, ws->data(), s));
          });
          int planned = splits;
          if (splits == 0) {  // the planner's pick, for the line
            Result<const cuda::AttentionVariant*> v = cuda::find_attention_variant(cuda::decode_attention_variants(), "decode_attention",
                                                                                   DType::kBF16, cache, 128);
            Result<cuda::PagedAttentionParams> p = cuda::make_paged_attention_params(a0);
            BENCH_CHECK(v.status());
            BENCH_CHECK(p.status());
            BENCH_CHECK(cuda::plan_decode_splits(*p, **v, 0));
            planned = p->num_splits;
          }
          char cell[80];
          std::snprintf(cell, sizeof cell, " %s%d %.2f us (%.1f%%)", splits == 0 ? "plan=s" : "s", planned, ms * 1e3,
                        100.0 * bytes / ms / 1e6 / c.copy_gbps);
          line += cell;
        }
        std::printf("%s\n", line.c_str());
        std::fflush(stdout);
      }
  BENCH_CUDA(cudaStreamDestroy(s));
}

void bench_prefill(const Ceilings& c, void* flush, size_t flush_bytes, std::vector<Row>& rows) {
  std::vector<PrefillCase> cases;
  for (int32_t t : {1024, 2048, 4096, 8192})
    cases.push_back({{{t, t}}, 32, 8, 128, "causal T" + std::to_string(t) + " 32/8 d128", t == 8192 ? 350.0 : 0.0});
  cases.push_back({{{8192, 8192}}, 32, 8, 64, "causal T8192 32/8 d64", 0});
  cases.push_back({{{8192, 8192}}, 32, 32, 128, "causal T8192 32/32 d128", 0});
  cases.push_back({{{2048, 2048}, {2048, 2048}, {2048, 2048}, {2048, 2048}}, 32, 8, 128, "causal 4x2048 32/8 d128", 0});
  cases.push_back(
      {std::vector<std::pair<int32_t, int32_t>>(8, {512, 4096}), 32, 8, 128, "8x q512 on kv4096 32/8 d128", 0});
  cases.push_back({{{8192, 8192}}, 32, 8, 128, "causal T8192 32/8 d128 fp8", 0, kFp8});
  cases.push_back({{{8192, 8192}}, 32, 8, 64, "causal T8192 32/8 d64 fp8", 0, kFp8});
  cases.push_back({{{2048, 2048}}, 32, 8, 128, "causal T2048 32/8 d128 fp8", 0, kFp8});
  cases.push_back({std::vector<std::pair<int32_t, int32_t>>(8, {512, 4096}), 32, 8, 128,
                   "8x q512 on kv4096 32/8 d128 fp8", 0, kFp8});
  for (const PrefillCase& pc : cases) {
    if (pc.name.find(g_filter) == std::string::npos) continue;
    Batch b = make_batch(pc.seqs, pc.hq, pc.hkv, pc.d, pc.cache);
    const PagedAttentionArgs a = b.args(pc.d);
    const double ms = median_ms([&] { BENCH_CHECK(prefill_attention_cuda(a, nullptr)); }, flush, flush_bytes);
    rows.push_back({"prefill", pc.name, ms, b.causal_flops / ms / 1e9, c.cudnn_prefill_tflops, pc.target, "TFLOP/s"});
  }
}

}  // namespace
}  // namespace kiln

int main(int argc, char** argv) {
  using namespace kiln;
  const std::string which = argc > 1 ? argv[1] : "all";
  if (argc > 2) g_filter = argv[2];
  if (!cuda_available()) {
    std::printf("attention_bench: %s\n", cuda_device_summary().c_str());
    return 0;
  }
  std::printf("attention_bench on %s\n", cuda_device_summary().c_str());
  const size_t flush_bytes = size_t{256} << 20;  // > 2x the 50-60 MB L2
  Result<DeviceBuffer> flush = DeviceBuffer::alloc(static_cast<int64_t>(flush_bytes));
  BENCH_CHECK(flush.status());
  BENCH_CUDA(cudaMemset(flush->data(), 1, flush_bytes));
  const Ceilings c = measure_ceilings(flush->data(), flush_bytes);
  std::printf("ceilings (%s): copy %.0f GB/s, cuDNN prefill %.0f TFLOP/s, dense bf16 %.0f TFLOP/s\n", c.source.c_str(),
              c.copy_gbps, c.cudnn_prefill_tflops, c.dense_tflops);
  std::vector<Row> rows;
  if (which == "all" || which == "decode") bench_decode(c, flush->data(), flush_bytes, rows);
  if (which == "all" || which == "decode" || which == "tune") bench_fp8_tunings(c, flush->data(), flush_bytes, rows);
  if (which == "all" || which == "graph") bench_decode_graph(c, rows);
  if (which == "splits") bench_split_sweep(c);
  if (which == "all" || which == "prefill") bench_prefill(c, flush->data(), flush_bytes, rows);
  print_rows(rows);
  return 0;
}
