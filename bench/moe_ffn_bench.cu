// The MoE decode FFN of Mixtral-8x7B (8 fp8 experts, top-2; gate_up [28672, 4096], down [4096,
// 14336]) at t tokens, as the model's fused decode path runs it, graph-timed: gate_up (x e4m3 per
// token from the norm, ids_poll), silu_mul_fp8_cuda (trigger_early), down (ids_ready), each alone
// and the three in a row. GB/s of the distinct experts' bytes each call reads (4 id sets rotated,
// so consecutive calls read different experts; the chain: gate_up's and down's). t:
// KILN_MOE_FFN_T (default 1,2,4,8). (Session 30 measured three fusions of the middle kernel with
// it, all slower: docs/perf.md.)
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "bench/gemm_bench_common.h"
#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/cuda/common/gpu_bench.h"
#include "kiln/kernels/moe_cuda.h"
#include "kiln/kernels/silu_mul_fp8.h"

namespace kiln {
namespace {

using bench::check;
using gemm_bench::ExpertSet;
using gemm_bench::graph_ms;
using gemm_bench::make_expert_set;
using gemm_bench::rotated_id_sets;

constexpr int64_t kExperts = 8, kTopK = 2, kHidden = 4096, kInter = 14336;

DeviceTensor empty(DType d, std::initializer_list<int64_t> shape) {
  auto t = DeviceTensor::empty(d, shape);
  check(t.status(), "alloc");
  return std::move(t).value();
}

void bench_t(const bench::Ceilings& c, cudaStream_t s, const ExpertSet& gu, const ExpertSet& dn, int64_t t) {
  const int64_t slots = t * kTopK;
  std::mt19937 rng(static_cast<uint32_t>(11 + t));
  double distinct = 0;
  const std::vector<DeviceTensor> ids = rotated_id_sets(t, kTopK, kExperts, rng, &distinct);
  // x as the norm leaves it (e4m3 per token + scales), the chain's intermediates.
  DeviceTensor xq = empty(DType::kFp8E4M3, {t, kHidden}), xs = empty(DType::kF32, {t});
  check(fill_bytes(xq.tensor, 0x38), "x");  // e4m3 1.0
  std::vector<float> ones(static_cast<size_t>(t), 0.01f);
  check(cudaMemcpy(xs.tensor.data, ones.data(), ones.size() * 4, cudaMemcpyHostToDevice), "x scale");
  DeviceTensor gu_y = empty(DType::kBF16, {slots, 2 * kInter}), aq = empty(DType::kFp8E4M3, {slots, kInter});
  DeviceTensor as = empty(DType::kF32, {slots}), y = empty(DType::kBF16, {slots, kHidden});
  check(fill_bytes(gu_y.tensor, 0x3c), "gate_up out");  // bf16 ~0.011: finite activations for the SwiGLU alone
  auto id = [&](int i) { return ids[static_cast<size_t>(i) % ids.size()].tensor; };
  auto gate_up = [&](int i) {
    MoeDecodeGemmArgs a{xq.tensor, id(i), gu.ptrs.tensor, gu.scale_ptrs.tensor, DType::kFp8E4M3, 2 * kInter, gu_y.tensor};
    a.x_scale = xs.tensor;
    a.ids_poll = true;  // as in the model (the ids are there: the poll finds them at once)
    check(moe_decode_gemm_cuda(a, s), "gate_up");
  };
  auto down = [&](int i) {
    MoeDecodeGemmArgs a{aq.tensor, id(i), dn.ptrs.tensor, dn.scale_ptrs.tensor, DType::kFp8E4M3, kHidden, y.tensor};
    a.x_scale = as.tensor;
    a.ids_ready = true;
    check(moe_decode_gemm_cuda(a, s), "down");
  };
  auto swiglu = [&](int) {
    SiluMulFp8Args a{gu_y.tensor, aq.tensor, as.tensor};
    a.trigger_early = true;  // as in the model: down launches before this kernel's wait
    check(silu_mul_fp8_cuda(a, s), "silu_mul_fp8");
  };
  const double gu_bytes = distinct * 2 * kInter * kHidden, dn_bytes = distinct * kHidden * kInter;
  const std::string shape = "t=" + std::to_string(t) + " (" + std::to_string(distinct).substr(0, 4) + " experts)";
  struct Row {
    const char* name;
    double bytes;
    std::function<void(int)> call;
  };
  const Row rows[] = {
      {"gate_up", gu_bytes, gate_up},
      {"silu_mul_fp8", 0, swiglu},
      {"down", dn_bytes, down},
      {"chain", gu_bytes + dn_bytes, [&](int i) { gate_up(i), swiglu(i), down(i); }},
  };
  for (const Row& r : rows) {
    r.call(0);
    check(cudaStreamSynchronize(s), "warm-up");
    const double ms = graph_ms(r.call, s);
    if (r.bytes > 0) bench::report(std::string("moe_ffn ") + r.name, shape, ms, r.bytes / ms / 1e6, c.copy_gbps, "GB/s");
    else std::printf("moe_ffn %-18s %s %.2f us\n", r.name, shape.c_str(), ms * 1e3);
  }
}

}  // namespace
}  // namespace kiln

int main() {
  using namespace kiln;
  if (!cuda_available()) {
    std::printf("moe_ffn_bench: %s\n", cuda_device_summary().c_str());
    return 0;
  }
  const bench::Ceilings c = bench::read_ceilings();
  std::printf("moe_ffn_bench on %s\nceilings: %s: copy %.0f GB/s\n", cuda_device_summary().c_str(), c.source.c_str(), c.copy_gbps);
  cudaStream_t s;
  check(cudaStreamCreate(&s), "cudaStreamCreate");
  std::printf("experts: 8 x gate_up [28672, 4096] + 8 x down [4096, 14336] fp8 (1.4 GB)\n");
  const ExpertSet gu = make_expert_set(DType::kFp8E4M3, 2 * kInter, kHidden, 500, kExperts),
                  dn = make_expert_set(DType::kFp8E4M3, kHidden, kInter, 600, kExperts);
  for (int64_t t : gemm_bench::env_list("KILN_MOE_FFN_T", {1, 2, 4, 8})) bench_t(c, s, gu, dn, t);
  check(cudaStreamDestroy(s), "cudaStreamDestroy");
  return 0;
}
