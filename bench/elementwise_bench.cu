// Memory-bound GPU kernels against the copy-bandwidth ceiling: RMSNorm + residual, SiLU-mul,
// RoPE + paged KV write, embedding gather, MoE permute / un-permute. Bytes counted: each input
// read once, each output written once. Large rows (16K tokens) are the targets (>= 80% of copy);
// decode-sized rows (64 tokens) run from L2 and show the launch-bound latency.
//   elementwise_bench            (KILN_GPU_CEILINGS=ceilings.json for measured ceilings)
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "kiln/kernels/activation.h"
#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/cuda/common/gpu_bench.h"
#include "kiln/kernels/embedding.h"
#include "kiln/kernels/moe.h"
#include "kiln/kernels/moe_cuda.h"
#include "kiln/kernels/rmsnorm.h"
#include "kiln/kernels/rope.h"

namespace kiln {
namespace {

using bench::check;

DeviceTensor random_bf16(std::initializer_list<int64_t> shape, uint32_t seed, float scale = 1.0f) {
  auto t = DeviceTensor::empty(DType::kBF16, shape);
  check(t.status(), "alloc");
  bench::fill_random_bf16(t->tensor.data, t->tensor.numel(), seed, scale);
  return std::move(t).value();
}
DeviceTensor upload_i32(const std::vector<int32_t>& v) {
  auto t = to_device(Tensor::view(const_cast<int32_t*>(v.data()), DType::kInt32, {static_cast<int64_t>(v.size())}));
  check(t.status(), "upload");
  return std::move(t).value();
}

void bench_rmsnorm(const bench::Ceilings& c, cudaStream_t s, int64_t n, int64_t h) {
  DeviceTensor x = random_bf16({n, h}, 1), r = random_bf16({n, h}, 2), w = random_bf16({h}, 3), out = random_bf16({n, h}, 4);
  const double ms = bench::median_ms([&](int) { check(rmsnorm_cuda({x.tensor, r.tensor, w.tensor, out.tensor, 1e-5f}, s), "rmsnorm"); }, s);
  const double bytes = 4.0 * n * h * 2 + h * 2;
  bench::report("rmsnorm+residual", bench::shape_str({n, h}) + " bf16", ms, bytes / ms / 1e6, c.copy_gbps, "GB/s");
}

void bench_silu_mul(const bench::Ceilings& c, cudaStream_t s, int64_t n, int64_t inter) {
  DeviceTensor gu = random_bf16({n, 2 * inter}, 5, 3.0f), out = random_bf16({n, inter}, 6);
  const double ms = bench::median_ms([&](int) { check(silu_mul_cuda({gu.tensor, out.tensor}, s), "silu_mul"); }, s);
  const double bytes = 3.0 * n * inter * 2;
  bench::report("silu_mul", bench::shape_str({n, inter}) + " bf16", ms, bytes / ms / 1e6, c.copy_gbps, "GB/s");
}

// fp8: an fp8 e4m3 cache with the q / k Hadamard rotation (the model's default for fp8 caches),
// q written to a dense q_out as the model does; else a bf16 cache, q in place.
void bench_rope(const bench::Ceilings& c, cudaStream_t s, int64_t n, int64_t hq, int64_t hkv, int64_t d, bool fp8 = false) {
  const int64_t block_size = 16, num_blocks = (n + block_size - 1) / block_size + 1;
  DeviceTensor q = random_bf16({n, hq, d}, 7), k = random_bf16({n, hkv, d}, 8), v = random_bf16({n, hkv, d}, 9);
  DeviceTensor kc = random_bf16({num_blocks, block_size, hkv, d}, 10), vc = random_bf16({num_blocks, block_size, hkv, d}, 11);
  DeviceTensor q_out = random_bf16({n, hq, d}, 13);
  if (fp8) {  // the first half of the bf16 caches' bytes, viewed as fp8 caches of the same shape
    kc.tensor = Tensor::view(kc.tensor.data, DType::kFp8E4M3, {num_blocks, block_size, hkv, d}, Device::kCuda);
    vc.tensor = Tensor::view(vc.tensor.data, DType::kFp8E4M3, {num_blocks, block_size, hkv, d}, Device::kCuda);
  }
  std::mt19937 rng(12);
  std::vector<int32_t> pos(static_cast<size_t>(n)), slots(static_cast<size_t>(num_blocks * block_size));
  for (auto& p : pos) p = static_cast<int32_t>(rng() % 8192);
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng);
  slots.resize(static_cast<size_t>(n));
  RopeScaling scaling;
  scaling.type = RopeScaling::Type::kLlama3;
  scaling.factor = 8.f;
  const std::vector<float> inv = rope_inv_freq(d, 500000.f, scaling);
  DeviceTensor dpos = upload_i32(pos), dslots = upload_i32(slots);
  auto dinv = to_device(Tensor::view(const_cast<float*>(inv.data()), DType::kF32, {d / 2}));
  check(dinv.status(), "upload");
  RopeKvWriteArgs args{q.tensor, k.tensor, v.tensor, dpos.tensor, dinv->tensor, dslots.tensor, kc.tensor, vc.tensor};
  if (fp8) args.q_out = q_out.tensor, args.hadamard_qk = true, args.k_scale = args.v_scale = 0.05f;
  const double ms = bench::median_ms([&](int) { check(rope_kv_write_cuda(args, s), "rope_kv_write"); }, s);
  // q, k in + out; v in; k, v cache out (2 or 1 bytes a value)
  const double bytes = static_cast<double>(n) * d * (2 * (2 * hq + 3 * hkv) + (fp8 ? 2 : 4) * hkv) + n * 8.0;
  bench::report("rope+kv_write", bench::shape_str({n, hq, hkv, d}) + (fp8 ? " fp8 cache, hadamard" : " bf16"), ms,
                bytes / ms / 1e6, c.copy_gbps, "GB/s");
}

void bench_embedding(const bench::Ceilings& c, cudaStream_t s, int64_t n, int64_t vocab, int64_t h) {
  DeviceTensor table = random_bf16({vocab, h}, 13), out = random_bf16({n, h}, 14);
  std::mt19937 rng(15);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& id : ids) id = static_cast<int32_t>(rng() % vocab);
  DeviceTensor dids = upload_i32(ids);
  const double ms = bench::median_ms([&](int) { check(embedding_cuda({dids.tensor, table.tensor, out.tensor}, s), "embedding"); }, s);
  const double bytes = 2.0 * n * h * 2 + n * 4.0;
  bench::report("embedding", bench::shape_str({n, h}) + " bf16 vocab " + std::to_string(vocab), ms, bytes / ms / 1e6,
                c.copy_gbps, "GB/s");
}

void bench_moe(const bench::Ceilings& c, cudaStream_t s, int64_t n, int64_t experts, int64_t k, int64_t h) {
  auto logits = DeviceTensor::empty(DType::kF32, {n, experts});
  check(logits.status(), "alloc");
  bench::fill_random_f32(logits->tensor.data, n * experts, 16, 3.0f);
  auto ids = DeviceTensor::empty(DType::kInt32, {n, k}), w = DeviceTensor::empty(DType::kF32, {n, k});
  auto off = DeviceTensor::empty(DType::kInt32, {experts + 1}), src = DeviceTensor::empty(DType::kInt32, {n * k});
  auto inv = DeviceTensor::empty(DType::kInt32, {n * k});
  check(ids.status(), "alloc"); check(w.status(), "alloc"); check(off.status(), "alloc");
  check(src.status(), "alloc"); check(inv.status(), "alloc");
  DeviceTensor x = random_bf16({n, h}, 17), xp = random_bf16({n * k, h}, 18), out = random_bf16({n, h}, 19);
  const double route_ms = bench::median_ms(
      [&](int) { check(moe_route_cuda({logits->tensor, ids->tensor, w->tensor, true}, s), "moe_route"); }, s);
  bench::report("moe_route", bench::shape_str({n, experts}) + " top" + std::to_string(k), route_ms,
                (n * experts * 4.0 + n * k * 8.0) / route_ms / 1e6, c.copy_gbps, "GB/s");
  const MoePermuteArgs pa{ids->tensor, x.tensor, experts, off->tensor, src->tensor, inv->tensor, xp.tensor};
  const double perm_ms = bench::median_ms([&](int) { check(moe_permute_cuda(pa, s), "moe_permute"); }, s);
  bench::report("moe_permute", bench::shape_str({n, h}) + " top" + std::to_string(k) + " of " + std::to_string(experts),
                perm_ms, (n * h * 2.0 + n * k * h * 2.0) / perm_ms / 1e6, c.copy_gbps, "GB/s");
  const MoeUnpermuteArgs ua{xp.tensor, w->tensor, inv->tensor, out.tensor};
  const double unperm_ms = bench::median_ms([&](int) { check(moe_unpermute_cuda(ua, s), "moe_unpermute"); }, s);
  bench::report("moe_unpermute", bench::shape_str({n, h}) + " top" + std::to_string(k), unperm_ms,
                (n * k * h * 2.0 + n * h * 2.0) / unperm_ms / 1e6, c.copy_gbps, "GB/s");
}

// The fused router (router GEMM + routing) per variant row, router weights rotated over 64 MB so
// L2 does not hold them (in a decode step the expert weights stream through L2 between layers).
void bench_router(const bench::Ceilings& c, cudaStream_t s, int64_t n, int64_t experts, int64_t k, int64_t h) {
  constexpr int64_t kCopies = 1024;
  DeviceTensor x = random_bf16({n, h}, 21), w = random_bf16({kCopies, experts, h}, 22, 0.05f);
  auto logits = DeviceTensor::empty(DType::kF32, {n, experts});
  auto ids = DeviceTensor::empty(DType::kInt32, {n, k}), tw = DeviceTensor::empty(DType::kF32, {n, k});
  check(logits.status(), "alloc"); check(ids.status(), "alloc"); check(tw.status(), "alloc");
  int row = 0;
  for (const auto& v : moe_route_cuda_variants()) {
    ++row;
    if (v.x != DType::kBF16 || (v.needs_clusters && n > v.max_tokens)) continue;
    const std::string name = std::string("moe_router_fused(") + v.name + ")";
    const double ms = bench::median_ms(
        [&](int i) {
          const Tensor wi = Tensor::view(static_cast<uint8_t*>(w.tensor.data) + (i % kCopies) * experts * h * 2,
                                         DType::kBF16, {experts, h}, Device::kCuda);
          check(v.launch({logits->tensor, ids->tensor, tw->tensor, true, x.tensor, wi}, s), name.c_str());
        },
        s);
    bench::report(name, bench::shape_str({n, h}) + " x " + std::to_string(experts) + " experts top" + std::to_string(k),
                  ms, (experts * h * 2.0 + n * h * 2.0) / ms / 1e6, c.copy_gbps, "GB/s");
  }
}

}  // namespace
}  // namespace kiln

int main() {
  using namespace kiln;
  if (!cuda_available()) {
    std::printf("elementwise_bench: %s\n", cuda_device_summary().c_str());
    return 0;
  }
  const bench::Ceilings c = bench::read_ceilings();
  std::printf("elementwise_bench on %s\nceilings: %s: copy %.0f GB/s\n", cuda_device_summary().c_str(),
              c.source.c_str(), c.copy_gbps);
  cudaStream_t s;
  check(cudaStreamCreate(&s), "cudaStreamCreate");
  bench_rmsnorm(c, s, 16384, 4096);
  bench_rmsnorm(c, s, 4096, 8192);
  bench_rmsnorm(c, s, 64, 4096);
  bench_silu_mul(c, s, 16384, 14336);
  bench_silu_mul(c, s, 64, 14336);
  bench_rope(c, s, 16384, 32, 8, 128);
  bench_rope(c, s, 64, 32, 8, 128);
  bench_rope(c, s, 2048, 32, 8, 128, true);
  bench_rope(c, s, 1064, 32, 8, 128, true);
  bench_rope(c, s, 64, 32, 8, 128, true);
  bench_embedding(c, s, 16384, 128256, 4096);
  bench_moe(c, s, 16384, 8, 2, 4096);
  bench_moe(c, s, 64, 8, 2, 4096);
  bench_router(c, s, 1, 8, 2, 4096);
  bench_router(c, s, 16, 8, 2, 4096);
  bench_router(c, s, 64, 8, 2, 4096);
  bench_router(c, s, 256, 8, 2, 4096);
  bench_router(c, s, 1064, 8, 2, 4096);
  bench_router(c, s, 2048, 8, 2, 4096);
  check(cudaStreamDestroy(s), "cudaStreamDestroy");
  return 0;
}
