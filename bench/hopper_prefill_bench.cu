// Hopper prefill attention micro-benchmark: batch x length = 16K tokens (lengths 1K .. 32K), 32 q /
// 8 kv heads, head_dim 64 / 128, causal and not, bf16 and fp8 e4m3 caches over a paged cache of
// 16-token blocks in shuffled order; the portable mma.sync kernel (prefill_attention_cuda, bf16,
// causal) beside it. FLOPs = 4 * q_len * kv_len * d * hq per sequence, halved when causal.
// Ceilings: the dense bf16 GEMM rate (gpu_ceilings.py's JSON via KILN_GPU_CEILINGS, else 750) and
// fp8 ("fp8_gemm_TFLOPs" there, else 1300).
// At 8K every tuning row of the variant (causal), two passes over the table, the better median of
// each reported as "kernel[index: name]"; HOPPER_BENCH_ALSO_BF16 / HOPPER_BENCH_ALSO_FP8 = "T1 T2 ..."
// also time those tuning rows at every other length. Every run gets the V pre-pass workspace (the
// "vtpre" rows run hopper_vt_prepass into it, timed with the kernel; "hopper_vt_prepass" times it
// alone). fp8 runs also get Q quantized per row beforehand (quantize_fp8_cuda, untimed: the
// "qtma" rows TMA-load it; "quantize_fp8 q" times that quantization alone).
//   hopper_prefill_bench [SHAPE_SUBSTRING [TUNING]]
// With TUNING: profile mode, two causal launches of that tuning per matching shape and nothing else
// (for ncu: --kernel-name regex:hopper_prefill_kernel --launch-skip 1 --launch-count 1).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kiln/kernels/attention.h"
#include "kiln/kernels/attention_hopper.h"
#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/cuda/common/gpu_bench.h"
#include "kiln/kernels/quantize.h"

namespace kiln {
namespace {

// e4m3 bytes of magnitude < 1 and random sign (never NaN).
__global__ void fill_random_fp8(uint8_t* p, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 0x9E3779B1u ^ seed;
    h ^= h >> 15, h *= 0x2C1B3C6Du, h ^= h >> 12;
    p[i] = static_cast<uint8_t>((h % 0x38) | ((h >> 8) & 0x80));
  }
}

struct Batch {
  DeviceTensor q, k, v, out, cu, kv_lens, tables, workspace;
  DeviceTensor q8, q_scales;  // fp8: q quantized per row (the "qtma" rows' input)
  Fp8QuantizeArgs q_quantize() const {  // q as [tokens * hq, d] rows
    const int64_t rows = q.tensor.shape[0] * q.tensor.shape[1], d = q.tensor.shape[2];
    return {Tensor::view(q.tensor.data, DType::kBF16, {rows, d}, Device::kCuda),
            Tensor::view(q8.tensor.data, DType::kFp8E4M3, {rows, d}, Device::kCuda), q_scales.tensor};
  }
  PagedAttentionArgs args(int64_t d) const {
    PagedAttentionArgs a{q.tensor,       k.tensor,      v.tensor,   cu.tensor, kv_lens.tensor,
                         tables.tensor, out.tensor, 1.0f / std::sqrt(static_cast<float>(d))};
    a.k_scale = a.v_scale = 0.5f;
    return a;
  }
};

DeviceTensor device_i32(std::vector<int32_t>& v, std::initializer_list<int64_t> shape) {
  Result<DeviceTensor> t = to_device(Tensor::view(v.data(), DType::kInt32, shape));
  bench::check(t.status(), "to_device");
  return std::move(*t);
}

Batch make_batch(int64_t batch, int64_t len, int64_t hq, int64_t hkv, int64_t d, DType cache) {
  constexpr int64_t kBlock = 16;
  const int64_t tokens = batch * len, blocks_per_seq = len / kBlock, blocks = batch * blocks_per_seq;
  Batch b;
  auto alloc = [](DType t, std::initializer_list<int64_t> s) {
    Result<DeviceTensor> r = DeviceTensor::empty(t, s);
    bench::check(r.status(), "DeviceTensor::empty");
    return std::move(*r);
  };
  b.q = alloc(DType::kBF16, {tokens, hq, d});
  b.out = alloc(DType::kBF16, {tokens, hq, d});
  b.k = alloc(cache, {blocks, kBlock, hkv, d});
  b.v = alloc(cache, {blocks, kBlock, hkv, d});
  bench::fill_random_bf16(b.q.tensor.data, b.q.tensor.numel(), 1);
  if (cache == DType::kBF16) {
    bench::fill_random_bf16(b.k.tensor.data, b.k.tensor.numel(), 2);
    bench::fill_random_bf16(b.v.tensor.data, b.v.tensor.numel(), 3);
  } else {
    fill_random_fp8<<<1024, 256>>>(static_cast<uint8_t*>(b.k.tensor.data), b.k.tensor.numel(), 2);
    fill_random_fp8<<<1024, 256>>>(static_cast<uint8_t*>(b.v.tensor.data), b.v.tensor.numel(), 3);
  }
  std::vector<int32_t> perm(static_cast<size_t>(blocks)), cu(static_cast<size_t>(batch + 1)),
      kv(static_cast<size_t>(batch), static_cast<int32_t>(len));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(5));
  for (int64_t i = 0; i <= batch; ++i) cu[static_cast<size_t>(i)] = static_cast<int32_t>(i * len);
  b.cu = device_i32(cu, {batch + 1});
  b.kv_lens = device_i32(kv, {batch});
  b.tables = device_i32(perm, {batch, blocks_per_seq});
  if (const int64_t bytes = hopper_prefill_workspace_bytes(b.args(d), tokens); bytes > 0) b.workspace = alloc(DType::kInt8, {bytes});
  if (cache == DType::kFp8E4M3) {
    b.q8 = alloc(DType::kFp8E4M3, {tokens, hq, d});
    b.q_scales = alloc(DType::kF32, {tokens * hq});
    bench::check(quantize_fp8_cuda(b.q_quantize(), nullptr), "quantize q");
  }
  return b;
}

}  // namespace
}  // namespace kiln

int main(int argc, char** argv) {
  using namespace kiln;
  const std::string filter = argc > 1 ? argv[1] : "";
  const int profile_tuning = argc > 2 ? std::atoi(argv[2]) : -1;
  if (!cuda_available()) {
    std::printf("hopper_prefill_bench: no CUDA device\n");
    return 0;
  }
  const bench::Ceilings c = bench::read_ceilings();
  const double fp8_tflops = c.fp8_tflops;
  std::printf("hopper_prefill_bench on %s; ceilings: bf16 %.0f, fp8 %.0f TFLOP/s (%s)\n",
              cuda_device_summary().c_str(), c.bf16_tflops, fp8_tflops, c.source.c_str());
  constexpr int64_t kTokens = 16384, kHq = 32, kHkv = 8;
  for (int64_t d : {128, 64}) {
    for (DType cache : {DType::kBF16, DType::kFp8E4M3}) {
      for (int64_t len : {1024, 2048, 4096, 8192, 16384, 32768}) {
        const int64_t batch = std::max<int64_t>(1, kTokens / len);
        const std::string base = "B" + std::to_string(batch) + " L" + std::to_string(len) + " h32/8 d" +
                                 std::to_string(d);
        if (!filter.empty() && (base + (cache == DType::kBF16 ? " bf16" : " fp8")).find(filter) == std::string::npos)
          continue;
        Batch b = make_batch(batch, len, kHq, kHkv, d, cache);
        const PagedAttentionArgs a = b.args(d);
        // Options with the pre-pass workspace (ignored by the rows without the pre-pass).
        auto opts = [&](bool causal, int tuning = 0) {
          HopperPrefillOptions o{causal};
          o.tuning = tuning;
          o.workspace = b.workspace.tensor.data;
          o.workspace_bytes = b.workspace.tensor.data ? b.workspace.tensor.numel() : 0;
          o.q_fp8 = b.q8.tensor.data;
          o.q_scales = b.q_scales.tensor.data ? b.q_scales.tensor.ptr<float>() : nullptr;
          return o;
        };
        const double flops = 4.0 * static_cast<double>(batch) * len * len * d * kHq;
        const bool fp8 = cache == DType::kFp8E4M3;
        const double ceiling = fp8 ? fp8_tflops : c.bf16_tflops;
        const char* kernel = fp8 ? "hopper_prefill_fp8" : "hopper_prefill_bf16";
        if (profile_tuning >= 0) {
          const HopperPrefillOptions o = opts(true, profile_tuning);
          for (int i = 0; i < 2; ++i) bench::check(prefill_attention_hopper_cuda(a, o, nullptr), "hopper");
          bench::check(cuda_synchronize(), "sync");
          std::printf("profiled %s %s tuning %d\n", kernel, base.c_str(), profile_tuning);
          continue;
        }
        auto time_options = [&](const HopperPrefillOptions& o) {
          return bench::median_ms(
              [&](int) { bench::check(prefill_attention_hopper_cuda(a, o, nullptr), "hopper"); }, nullptr, 3, 7, 2);
        };
        for (bool causal : {true, false}) {
          const double ms = time_options(opts(causal));
          const double tflops = (causal ? flops / 2 : flops) / ms / 1e9;
          bench::report(kernel, base + (causal ? " causal" : " full"), ms, tflops, ceiling, "TFLOP/s");
        }
        const HopperPrefillVariant* variant = nullptr;
        for (const HopperPrefillVariant& v : hopper_prefill_variants())
          if (v.cache_dtype == cache && v.head_dim == d) variant = &v;
        const int n_tunings = variant ? static_cast<int>(variant->tunings.size()) : 0;
        auto tuning_name = [&](int t) { return std::string(variant->tunings[static_cast<size_t>(t)].name); };
        // HOPPER_BENCH_ALSO_BF16 / _FP8 = "T1 T2 ...": those tunings (causal) at every length too.
        if (const char* also = std::getenv(fp8 ? "HOPPER_BENCH_ALSO_FP8" : "HOPPER_BENCH_ALSO_BF16"); also && len != 8192) {
          for (const char* c = also; *c;) {
            char* next = nullptr;
            const long t = std::strtol(c, &next, 10);
            if (next == c) break;
            c = next;
            if (t <= 0 || t >= n_tunings) continue;
            const HopperPrefillOptions o = opts(true, static_cast<int>(t));
            const double ms_t = time_options(o);
            bench::report((std::string(kernel) + "[" + tuning_name(o.tuning) + "]").c_str(), base + " causal", ms_t,
                          flops / 2 / ms_t / 1e9, ceiling, "TFLOP/s");
          }
        }
        if (len == 8192) {  // A/B rows: every compiled tuning (causal), no ping-pong, no kv-head chunks
          // Every tuning twice (two passes over the table, 15 timed repetitions each), the better median
          // reported: within one call the same kernel measured up to +-3% apart from row to row.
          std::vector<double> best(static_cast<size_t>(n_tunings), 1e30);
          for (int pass = 0; pass < 2; ++pass)
            for (int t = 0; t < n_tunings; ++t) {
              const HopperPrefillOptions o = opts(true, t);
              const double ms_t = bench::median_ms(
                  [&](int) { bench::check(prefill_attention_hopper_cuda(a, o, nullptr), "hopper"); }, nullptr, 3, 15,
                  2);
              best[static_cast<size_t>(t)] = std::min(best[static_cast<size_t>(t)], ms_t);
            }
          for (int t = 0; t < n_tunings; ++t) {
            const double ms_t = best[static_cast<size_t>(t)];
            bench::report((std::string(kernel) + "[" + std::to_string(t) + ": " + tuning_name(t) + "]").c_str(),
                          base + " causal", ms_t, flops / 2 / ms_t / 1e9, ceiling, "TFLOP/s");
          }
          HopperPrefillOptions no_pp = opts(true);
          no_pp.pingpong = false;
          const double ms_np = time_options(no_pp);
          bench::report((std::string(kernel) + "_nopingpong").c_str(), base + " causal", ms_np, flops / 2 / ms_np / 1e9,
                        ceiling, "TFLOP/s");
          HopperPrefillOptions all_heads = opts(true);
          all_heads.kv_heads_per_chunk = static_cast<int>(kHkv);
          const double ms_all = time_options(all_heads);
          bench::report((std::string(kernel) + "_nochunk").c_str(), base + " causal", ms_all, flops / 2 / ms_all / 1e9,
                        ceiling, "TFLOP/s");
        }
        if (b.workspace.tensor.data != nullptr && len == 8192) {  // the pre-pass alone: V read + Vt written
          const HopperPrefillOptions o = opts(true);
          const double ms = bench::median_ms(
              [&](int) { bench::check(hopper_vt_prepass_cuda(a, o.workspace, o.workspace_bytes, nullptr), "prepass"); },
              nullptr, 3, 15, 2);
          const double gbs = 2.0 * static_cast<double>(b.v.tensor.numel()) / ms / 1e6;
          bench::report("hopper_vt_prepass", base + " (GB/s vs copy)", ms, gbs, c.copy_gbps, "GB/s");
        }
        if (fp8 && len == 8192) {  // Q quantized per row alone: q read, q8 and scales written
          const double ms = bench::median_ms(
              [&](int) { bench::check(quantize_fp8_cuda(b.q_quantize(), nullptr), "quantize q"); }, nullptr, 3, 15, 2);
          const double gbs = (3.0 * static_cast<double>(b.q.tensor.numel()) + 4.0 * b.q_scales.tensor.numel()) / ms / 1e6;
          bench::report("quantize_fp8 q", base + " (GB/s vs copy)", ms, gbs, c.copy_gbps, "GB/s");
        }
        if (!fp8) {
          const double ms = bench::median_ms(
              [&](int) { bench::check(prefill_attention_cuda(a, nullptr), "portable"); }, nullptr, 3, 7, 2);
          bench::report("prefill_portable_bf16", base + " causal", ms, flops / 2 / ms / 1e9, ceiling, "TFLOP/s");
        }
      }
    }
  }
  return 0;
}
