// The grouped MoE expert GEMM at prefill sizes (moe_grouped_gemm_cuda): Mixtral-8x7B's fp8 experts
// (gate_up 28672 x 4096, down 4096 x 14336; 8 experts, top-2), x already in e4m3 with per-row
// scales as the model hands it over, T tokens routed at random (each token two distinct experts),
// each expert's rows aligned to 4 as the model permutes them. One stream (a loop of cuBLASLt calls)
// against lanes: the experts spread over L streams that run at the same time, and against
// MoeBatchedGemm (one batched GEMM, rows padded to the largest expert, scales left to the
// consumers; its first call times its candidates, outside the timing), and against kiln's
// one-launch kernel (moe_grouped_wgmma_cuda, sm_90), for uniform and skewed routings. Event-timed on the
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
#include "kiln/kernels/quantize.h"
#include "kiln/kernels/silu_mul_fp8.h"

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
    if (moe_grouped_wgmma_available()) {  // kiln's one-launch kernel, offsets on the device
      auto doff = DeviceTensor::empty(DType::kInt32, {kExperts + 1});
      check(doff.status(), "alloc offsets");
      check(cudaMemcpy(doff->tensor.data, offsets.data(), offsets.size() * 4, cudaMemcpyHostToDevice), "offsets");
      const MoeGroupedWgmmaArgs wargs{xq->tensor.slice0(0, rows), xs->tensor, w, sc, doff->tensor, y->tensor};
      const double wms = bench::median_ms([&](int) { check(moe_grouped_wgmma_cuda(wargs, s), "moe_grouped_wgmma_cuda"); }, s, 5, 11, 3);
      std::snprintf(shape, sizeof shape, "%s T%lld%s (%s) one-launch wgmma", sh.name, static_cast<long long>(tokens),
                    skewed ? " skewed" : "", rows_of.str().c_str());
      bench::report("moe_grouped fp8", shape, wms, flops / wms / 1e9, c.fp8_tflops, "TFLOP/s");
    }
  }
}

// The whole expert block after the permute, as the model runs it: the lanes (2) with scales in
// the GEMMs, silu_mul_fp8 and moe_unpermute, against the batched path (layout tables, batched
// gate_up, the SwiGLU's dequant, batched down, the un-permute's dequant). Uniform routing of
// `tokens` tokens, whole experts as entries.
void bench_chain(const bench::Ceilings& c, cudaStream_t s, const Lanes& lanes, MoeBatchedGemm& batched, int64_t tokens,
                 const std::vector<gemm_bench::BenchWeights>& gate_up, const std::vector<gemm_bench::BenchWeights>& down) {
  constexpr int64_t kHidden = 4096, kInter = 14336;
  std::mt19937 rng(static_cast<uint32_t>(tokens) + 17);
  // routing: ids [tokens, 2]; the permuted row of each assignment (inverse), experts' rows aligned to 4
  std::vector<int32_t> ids(static_cast<size_t>(tokens * kTopK)), count(kExperts, 0);
  for (int64_t t = 0; t < tokens; ++t) {
    const int a = static_cast<int>(rng() % kExperts);
    int b = static_cast<int>(rng() % (kExperts - 1));
    b += b >= a;
    ids[static_cast<size_t>(2 * t)] = a, ids[static_cast<size_t>(2 * t + 1)] = b;
  }
  std::vector<int32_t> inverse(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) inverse[i] = count[static_cast<size_t>(ids[i])]++;
  std::vector<int32_t> offsets = {0};
  for (int32_t n : count) offsets.push_back(offsets.back() + (n + 3) / 4 * 4);
  for (size_t i = 0; i < ids.size(); ++i) inverse[i] += offsets[static_cast<size_t>(ids[i])];
  const int64_t rows = offsets.back();
  const MoeBatchedLayout layout = moe_batched_layout(offsets, 1 << 30);  // whole experts
  const int64_t prow = layout.padded_rows();
  auto up = [&](const std::vector<int32_t>& v) {
    auto t = to_device(Tensor::view(const_cast<int32_t*>(v.data()), DType::kInt32, {static_cast<int64_t>(v.size())}));
    check(t.status(), "upload");
    return std::move(t).value();
  };
  const DeviceTensor d_ids = up(ids), d_inv = up(inverse);
  auto alloc = [&](DType d, std::initializer_list<int64_t> shape) {
    auto t = DeviceTensor::empty(d, shape);
    check(t.status(), "alloc");
    return std::move(t).value();
  };
  DeviceTensor xb = alloc(DType::kBF16, {rows, kHidden}), xq = alloc(DType::kFp8E4M3, {rows + 512, kHidden});
  DeviceTensor xs = alloc(DType::kF32, {rows}), wts = alloc(DType::kF32, {tokens, kTopK}), out = alloc(DType::kBF16, {tokens, kHidden});
  DeviceTensor gu = alloc(DType::kBF16, {prow, 2 * kInter}), aq = alloc(DType::kFp8E4M3, {prow, kInter});
  DeviceTensor as = alloc(DType::kF32, {prow}), yp = alloc(DType::kBF16, {prow, kHidden});
  bench::fill_random_bf16(xb.tensor.data, rows * kHidden, 9, 1.0f);
  check(quantize_fp8_cuda({xb.tensor, xq.tensor.slice0(0, rows), xs.tensor}, s), "quantize_fp8_cuda");
  check(cudaMemsetAsync(wts.tensor.data, 0, static_cast<size_t>(tokens * kTopK * 4), s), "weights");
  std::vector<Tensor> wg, sg, wd, sd;
  for (const auto& bw : gate_up) wg.push_back(bw.w.tensor), sg.push_back(bw.scale.tensor);
  for (const auto& bw : down) wd.push_back(bw.w.tensor), sd.push_back(bw.scale.tensor);
  auto scale_table = [&](const std::vector<Tensor>& sc) {
    std::vector<int64_t> p;
    for (const Tensor& t : sc) p.push_back(reinterpret_cast<int64_t>(t.data));
    auto t = to_device(Tensor::view(p.data(), DType::kInt64, {static_cast<int64_t>(p.size())}));
    check(t.status(), "scale table");
    return std::move(t).value();
  };
  const DeviceTensor pg = pointer_table(gate_up), pd = pointer_table(down), spg = scale_table(sg), spd = scale_table(sd);
  const Tensor gu_rows = gu.tensor.slice0(0, rows), aq_rows = aq.tensor.slice0(0, rows);
  const Tensor yp_rows = yp.tensor.slice0(0, rows);
  auto lanes_chain = [&] {
    check(moe_grouped_gemm_cuda(lanes.view(2), {xq.tensor.slice0(0, rows), wg, offsets, gu_rows, sg, xs.tensor}), "gate_up");
    check(silu_mul_fp8_cuda({gu_rows, aq_rows, as.tensor.slice0(0, rows)}, s), "silu_mul_fp8");
    check(moe_grouped_gemm_cuda(lanes.view(2), {aq_rows, wd, offsets, yp_rows, sd, as.tensor.slice0(0, rows)}), "down");
    check(moe_unpermute_cuda({yp_rows, wts.tensor, d_inv.tensor, out.tensor}, s), "unpermute");
  };
  auto batched_chain = [&] {
    auto tables = batched.upload_layout(layout, rows, s);
    check(tables.status(), "upload_layout");
    check(batched.run({xq.tensor, &layout, false, pg.tensor, 2 * kInter, gu.tensor}, s), "batched gate_up");
    check(silu_mul_fp8_cuda({gu.tensor, aq.tensor, as.tensor, {layout.rows_per_entry, tables->entries, xs.tensor, spg.tensor}}, s),
          "silu_mul_fp8 dequant");
    check(batched.run({aq.tensor, &layout, true, pd.tensor, kHidden, yp.tensor}, s), "batched down");
    MoeUnpermuteArgs ua{yp.tensor, wts.tensor, d_inv.tensor, out.tensor};
    ua.padded_rows = tables->padded_rows;
    ua.topk_ids = d_ids.tensor;
    ua.row_scale = as.tensor;
    ua.col_scale_ptrs = spd.tensor;
    check(moe_unpermute_cuda(ua, s), "unpermute dequant");
  };
  batched_chain();  // tunes
  const double flops = 2.0 * tokens * kTopK * 3.0 * kHidden * kInter;
  for (int which = 0; which < 2; ++which) {
    const double ms = bench::median_ms([&](int) { which ? batched_chain() : lanes_chain(); }, s, 5, 11, 3);
    char shape[160];
    std::snprintf(shape, sizeof shape, "T%lld %s", static_cast<long long>(tokens),
                  which ? "batched (entries of whole experts)" : "2 lanes");
    bench::report("moe experts block", shape, ms, flops / ms / 1e9, c.fp8_tflops, "TFLOP/s");
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
  for (int64_t t : tokens) bench_chain(c, s, lanes, *batched, t, gate_up, down);
  return 0;
}
