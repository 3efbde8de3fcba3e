// The grouped MoE expert GEMM at prefill sizes (moe_grouped_gemm_cuda): Mixtral-8x7B's fp8 experts
// (gate_up 28672 x 4096, down 4096 x 14336; 8 experts, top-2), x already in e4m3 with per-row
// scales as the model hands it over, T tokens routed at random (each token two distinct experts),
// each expert's rows aligned to 4 as the model permutes them. One stream (a loop of cuBLASLt calls)
// against lanes: the experts spread over L streams that run at the same time, and against
// MoeBatchedGemm (one batched GEMM, rows padded to the largest expert, scales left to the
// consumers; its first call times its candidates, outside the timing), for uniform and skewed
// routings. Event-timed on the
// caller's stream (the lanes join back into it), median of 11 batches; TFLOP/s counts the slots'
// real rows.
//   moe_grouped_bench [TOKENS,...]   (default 512,1024,2048,4096)
//   KILN_GPU_CEILINGS=ceilings.json  (from gpu_ceilings.py; default: H100 figures)
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench/gemm_bench_common.h"
#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/gemm_cuda.h"
#include "kiln/kernels/moe_cuda.h"

namespace kiln {
namespace {

using bench::check;

constexpr int kExperts = 8, kTopK = 2, kMaxLanes = 8;

// Expert offsets of `tokens` tokens x top-2 distinct experts, each expert's rows aligned to 4.
// Uniform, or skewed: expert e drawn with weight 1 / (e + 1) (the largest gets ~2.9x the mean).
std::vector<int32_t> random_offsets(int64_t tokens, bool skewed, std::mt19937& rng) {
  std::vector<double> weight(kExperts);
  for (int e = 0; e < kExperts; ++e) weight[e] = skewed ? 1.0 / (e + 1) : 1.0;
  std::vector<int64_t> count(kExperts, 0);
  for (int64_t t = 0; t < tokens; ++t) {
    std::discrete_distribution<int> pick(weight.begin(), weight.end());
    const int a = pick(rng);
    std::vector<double> rest = weight;
    rest[a] = 0;
    std::discrete_distribution<int> pick2(rest.begin(), rest.end());
    const int b = pick2(rng);
    ++count[a], ++count[b];
  }
  std::vector<int32_t> offsets = {0};
  for (int64_t c : count) offsets.push_back(offsets.back() + static_cast<int32_t>((c + 3) / 4 * 4));
  return offsets;
}

// kMaxLanes lanes; lane 0 is (gemm0, the bench's stream).
struct Lanes {
  Gemm gemm0;
  MoeLaneSet set;
  explicit Lanes(cudaStream_t main) : gemm0(create_gemm()) {
    auto s = MoeLaneSet::create(kMaxLanes, &gemm0, main);
    check(s.status(), "MoeLaneSet::create");
    set = std::move(s).value();
  }
  static Gemm create_gemm() {
    auto g = Gemm::create();
    check(g.status(), "Gemm::create");
    return std::move(g).value();
  }
  MoeGemmLanes view(int n) const { return set.view(n); }
};

// The experts' weight pointers as the model's tables hold them ([experts] int64 on the device).
DeviceTensor pointer_table(const std::vector<gemm_bench::BenchWeights>& w) {
  std::vector<int64_t> p;
  for (const auto& bw : w) p.push_back(reinterpret_cast<int64_t>(bw.w.tensor.data));
  auto t = to_device(Tensor::view(p.data(), DType::kInt64, {static_cast<int64_t>(p.size())}));
  check(t.status(), "pointer table");
  return std::move(t).value();
}

void bench_tokens(const bench::Ceilings& c, cudaStream_t s, const Lanes& lanes, MoeBatchedGemm& batched, int64_t tokens,
                  bool skewed, const std::vector<gemm_bench::BenchWeights>& gate_up,
                  const std::vector<gemm_bench::BenchWeights>& down) {
  std::mt19937 rng(static_cast<uint32_t>(tokens));
  const std::vector<int32_t> offsets = random_offsets(tokens, skewed, rng);
  const int64_t rows = offsets.back(), slots = tokens * kTopK;
  struct Shape {
    const char* name;
    int64_t n, k;
    const std::vector<gemm_bench::BenchWeights>* w;
  };
  for (const Shape& sh : {Shape{"gate_up", 28672, 4096, &gate_up}, Shape{"down", 4096, 14336, &down}}) {
    const MoeBatchedLayout layout = moe_batched_layout(offsets, 135);  // the model's bound
    const int64_t rpe = layout.rows_per_entry;
    auto x = DeviceTensor::empty(DType::kBF16, {rows, sh.k});
    auto xq = DeviceTensor::empty(DType::kFp8E4M3, {rows + rpe, sh.k});  // an entry reads rpe rows from its first
    auto xs = DeviceTensor::empty(DType::kF32, {rows});
    auto y = DeviceTensor::empty(DType::kBF16, {rows, sh.n});
    check(x.status(), "alloc x");
    check(xq.status(), "alloc xq");
    check(xs.status(), "alloc xs");
    check(y.status(), "alloc y");
    bench::fill_random_bf16(x->tensor.data, rows * sh.k, 7, 1.0f);
    check(quantize_fp8_cuda({x->tensor, xq->tensor.slice0(0, rows), xs->tensor}, s), "quantize_fp8_cuda");
    std::vector<Tensor> w, sc;
    for (const auto& bw : *sh.w) w.push_back(bw.w.tensor), sc.push_back(bw.scale.tensor);
    const MoeGroupedGemmArgs args{xq->tensor.slice0(0, rows), w, offsets, y->tensor, sc, xs->tensor};
    const double flops = 2.0 * static_cast<double>(slots) * sh.n * sh.k;
    std::ostringstream rows_of;
    for (int e = 0; e < kExperts; ++e) rows_of << (e ? "," : "") << offsets[e + 1] - offsets[e];
    for (int l : {1, 2}) {  // 3, 4 and 8 lanes: within a few percent of 2 (perf.md, 2026-11-24)
      const double ms = bench::median_ms([&](int) { check(moe_grouped_gemm_cuda(lanes.view(l), args), "moe_grouped_gemm_cuda"); },
                                         s, 5, 11, 3);
      char shape[160];
      std::snprintf(shape, sizeof shape, "%s T%lld%s (%s) lanes %d", sh.name, static_cast<long long>(tokens), skewed ? " skewed" : "",
                    rows_of.str().c_str(), l);
      bench::report("moe_grouped fp8", shape, ms, flops / ms / 1e9, c.fp8_tflops, "TFLOP/s");
    }
    const DeviceTensor ptrs = pointer_table(*sh.w);
    auto yp = DeviceTensor::empty(DType::kBF16, {layout.padded_rows(), sh.n});
    check(yp.status(), "alloc padded y");
    const MoeBatchedGemmArgs bargs{xq->tensor, &layout, false, ptrs.tensor, sh.n, yp->tensor};
    check(batched.run(bargs, s), "MoeBatchedGemm::run");  // times the candidates
    const double ms = bench::median_ms([&](int) { check(batched.run(bargs, s), "MoeBatchedGemm::run"); }, s, 5, 11, 3);
    char shape[160];
    std::snprintf(shape, sizeof shape, "%s T%lld%s (%s) batched %lld x %lld rows", sh.name, static_cast<long long>(tokens),
                  skewed ? " skewed" : "", rows_of.str().c_str(), static_cast<long long>(layout.entries()),
                  static_cast<long long>(rpe));
    bench::report("moe_grouped fp8", shape, ms, flops / ms / 1e9, c.fp8_tflops, "TFLOP/s");
  }
}

}  // namespace
}  // namespace kiln

int main(int argc, char** argv) {
  using namespace kiln;
  if (!cuda_available()) {
    std::printf("moe_grouped_bench: %s\n", cuda_device_summary().c_str());
    return 0;
  }
  std::vector<int64_t> tokens = {512, 1024, 2048, 4096};
  if (argc > 1) {
    tokens.clear();
    std::stringstream ss(argv[1]);
    for (std::string t; std::getline(ss, t, ',');) tokens.push_back(std::atoll(t.c_str()));
  }
  const bench::Ceilings c = bench::read_ceilings();
  std::printf("moe_grouped_bench on %s\nceilings: %s: fp8 GEMM %.0f TFLOP/s\n", cuda_device_summary().c_str(),
              c.source.c_str(), c.fp8_tflops);
  cudaStream_t s;
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "stream");
  const Lanes lanes(s);
  std::printf("making %d experts' fp8 weights...\n", kExperts);
  std::fflush(stdout);
  std::vector<gemm_bench::BenchWeights> gate_up, down;
  for (int e = 0; e < kExperts; ++e) {
    gate_up.push_back(gemm_bench::make_weights(DType::kFp8E4M3, 28672, 4096, 300 + e));
    down.push_back(gemm_bench::make_weights(DType::kFp8E4M3, 4096, 14336, 400 + e));
  }
  auto batched = MoeBatchedGemm::create();
  check(batched.status(), "MoeBatchedGemm::create");
  for (const bool skewed : {false, true})
    for (int64_t t : tokens) bench_tokens(c, s, lanes, *batched, t, skewed, gate_up, down);
  return 0;
}
