// CUDA paged attention against paged_attention_cpu on the same bf16-rounded inputs: every row of the
// decode and prefill variant tables (bf16 and fp8 e4m3 caches; fp8 rows get the same fp8 bytes and
// K/V scales as the CPU reference) on kv lengths 1, 17, 97, 2048, block sizes 1 and 16, GQA ratios
// 1/3/4/8 (decode also 12 and 16), split-K (up to ~35 splits, merged in-kernel), mixed decode + prefix-extending prefill batches, causal q_len == kv_len, sliding
// windows; the fp8 decode configurations; decode after a kernel that writes the newest key late
// (programmatic dependent launch);
// then the shape-picking entry point (both cache dtypes), the portable fallback and errors. Unused cache slots hold NaN, unused
// block-table entries point far out of range and outputs start as NaN, so a read past a sequence or
// an unwritten output fails the comparison. Skips without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <numeric>
#include <random>

#include "kiln/kernels/attention.h"
#include "kiln/kernels/cuda/attention/attention_params.h"
#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/cuda/common/pdl.cuh"
#include "tests/kernels/kernel_test_util.h"
#include "tests/kernels/pdl_late_writer.cuh"

namespace kiln {
namespace {

struct Seq {
  int32_t q_len, kv_len;
};
struct Shape {
  std::vector<Seq> seqs;
  int64_t hq, hkv, block_size;
  int64_t window = 0;
};

// fp8 caches in these tests: K spread over ~[-150, 150] of e4m3's range, V over ~[-16, 16].
constexpr float kFp8KScale = 0.03f, kFp8VScale = 0.25f;

std::string describe(const Shape& s, int64_t d, DType cache = DType::kBF16) {
  std::string r = "cache=" + std::string(dtype_name(cache)) + " d=" + std::to_string(d) + " hq=" + std::to_string(s.hq) + " hkv=" + std::to_string(s.hkv) +
                  " bs=" + std::to_string(s.block_size) + " window=" + std::to_string(s.window) + " seqs(q/kv)=";
  for (const Seq& q : s.seqs) r += std::to_string(q.q_len) + "/" + std::to_string(q.kv_len) + " ";
  return r;
}

// One attention problem: f32 host tensors holding bf16 values (the CPU reference reads these; with
// an fp8 cache, the host caches are the fp8 bytes) and their bf16 / fp8 / int32 device copies.
struct Problem {
  Shape shape;
  DType cache = DType::kBF16;
  float k_scale = 1.f, v_scale = 1.f;
  int64_t d = 0, n = 0, batch = 0, table_width = 0;
  HostTensor q, k_cache, v_cache;
  std::vector<int32_t> cu, kv_lens, tables;
  DeviceTensor dq, dk, dv, dcu, dkv, dtables, dout;

  PagedAttentionArgs args(bool device, const Tensor& out) const {
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    if (device)
      return {dq.tensor, dk.tensor, dv.tensor, dcu.tensor, dkv.tensor, dtables.tensor, out, scale, shape.window,
              k_scale, v_scale};
    auto i32 = [](const std::vector<int32_t>& v, std::initializer_list<int64_t> s) {
      return Tensor::view(const_cast<int32_t*>(v.data()), DType::kInt32, s);
    };
    return {q.tensor,
            k_cache.tensor,
            v_cache.tensor,
            i32(cu, {batch + 1}),
            i32(kv_lens, {batch}),
            i32(tables, {batch, table_width}),
            out,
            scale,
            shape.window,
            k_scale,
            v_scale};
  }
};

// fp8(x / scale) of every element (NaN stays NaN: e4m3 0x7f).
HostTensor quantize_fp8(const HostTensor& f, float scale) {
  HostTensor q = HostTensor::zeros(DType::kFp8E4M3, f.tensor.shape.data(), f.tensor.ndim);
  for (int64_t i = 0; i < f.tensor.numel(); ++i)
    q.tensor.ptr<uint8_t>()[i] = f32_to_fp8_e4m3(f.tensor.ptr<float>()[i] / scale);
  return q;
}

HostTensor bf16_rounded(std::initializer_list<int64_t> dims, std::mt19937& rng) {
  HostTensor b = test::random_tensor(DType::kBF16, dims, rng);
  HostTensor f = HostTensor::zeros(DType::kF32, dims);
  EXPECT_TRUE(convert(b.tensor.data, DType::kBF16, f.tensor.data, DType::kF32, b.tensor.numel()).ok());
  return f;
}

Result<Problem> make_problem(const Shape& s, int64_t d, std::mt19937& rng, DType cache = DType::kBF16) {
  Problem p;
  p.shape = s;
  p.d = d;
  p.cache = cache;
  p.batch = static_cast<int64_t>(s.seqs.size());
  const int64_t bs = s.block_size;
  int64_t used_blocks = 0, max_blocks = 1;
  for (const Seq& q : s.seqs) {
    p.n += q.q_len;
    used_blocks += (q.kv_len + bs - 1) / bs;
    max_blocks = std::max<int64_t>(max_blocks, (q.kv_len + bs - 1) / bs);
  }
  const int64_t num_blocks = used_blocks + 3;  // spare blocks stay NaN
  p.table_width = max_blocks + 1;              // a wider table than needed: the tail is garbage
  p.q = bf16_rounded({p.n, s.hq, d}, rng);
  p.k_cache = HostTensor::zeros(DType::kF32, {num_blocks, bs, s.hkv, d});
  p.v_cache = HostTensor::zeros(DType::kF32, {num_blocks, bs, s.hkv, d});
  std::fill_n(p.k_cache.tensor.ptr<float>(), p.k_cache.tensor.numel(), NAN);
  std::fill_n(p.v_cache.tensor.ptr<float>(), p.v_cache.tensor.numel(), NAN);
  std::vector<int32_t> perm(static_cast<size_t>(num_blocks));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  p.tables.assign(static_cast<size_t>(p.batch * p.table_width), 1 << 28);
  p.cu = {0};
  size_t next = 0;
  for (int64_t b = 0; b < p.batch; ++b) {
    const Seq q = s.seqs[static_cast<size_t>(b)];
    HostTensor k = bf16_rounded({q.kv_len, s.hkv, d}, rng), v = bf16_rounded({q.kv_len, s.hkv, d}, rng);
    int32_t* table = p.tables.data() + b * p.table_width;
    for (int64_t j = 0; j < (q.kv_len + bs - 1) / bs; ++j) table[j] = perm[next++];
    for (int64_t j = 0; j < q.kv_len; ++j) {
      const int64_t slot = table[j / bs] * bs + j % bs;
      std::copy_n(k.tensor.ptr<float>() + j * s.hkv * d, s.hkv * d, p.k_cache.tensor.ptr<float>() + slot * s.hkv * d);
      std::copy_n(v.tensor.ptr<float>() + j * s.hkv * d, s.hkv * d, p.v_cache.tensor.ptr<float>() + slot * s.hkv * d);
    }
    p.cu.push_back(p.cu.back() + q.q_len);
    p.kv_lens.push_back(q.kv_len);
  }
  if (cache == DType::kFp8E4M3) {
    p.k_scale = kFp8KScale;
    p.v_scale = kFp8VScale;
    p.k_cache = quantize_fp8(p.k_cache, p.k_scale);
    p.v_cache = quantize_fp8(p.v_cache, p.v_scale);
  }
  KILN_ASSIGN_OR_RETURN(p.dq, to_device(p.q.tensor, DType::kBF16));
  KILN_ASSIGN_OR_RETURN(p.dk, to_device(p.k_cache.tensor, cache));
  KILN_ASSIGN_OR_RETURN(p.dv, to_device(p.v_cache.tensor, cache));
  KILN_ASSIGN_OR_RETURN(p.dcu, to_device(Tensor::view(p.cu.data(), DType::kInt32, {p.batch + 1})));
  KILN_ASSIGN_OR_RETURN(p.dkv, to_device(Tensor::view(p.kv_lens.data(), DType::kInt32, {p.batch})));
  KILN_ASSIGN_OR_RETURN(p.dtables, to_device(Tensor::view(p.tables.data(), DType::kInt32, {p.batch, p.table_width})));
  KILN_ASSIGN_OR_RETURN(p.dout, DeviceTensor::empty(DType::kBF16, {p.n, s.hq, d}));
  return std::move(p);
}

using Runner = std::function<Status(const PagedAttentionArgs&)>;

// Runs `run` on the device (output poisoned first) and the CPU reference; returns
// max |gpu - cpu| / max |cpu|, or infinity when an output is not finite.
double relative_error(Problem& p, const Runner& run) {
  EXPECT_TRUE(fill_bytes(p.dout.tensor, 0xff).ok());
  const Status st = run(p.args(true, p.dout.tensor));
  EXPECT_TRUE(st.ok()) << st.to_string();
  EXPECT_TRUE(cuda_synchronize().ok());
  HostTensor ref = HostTensor::zeros(DType::kF32, {p.n, p.shape.hq, p.d});
  EXPECT_TRUE(paged_attention_cpu(p.args(false, ref.tensor)).ok());
  Result<HostTensor> got = to_host(p.dout.tensor, DType::kF32);
  EXPECT_TRUE(got.ok());
  if (!st.ok() || !got.ok()) return INFINITY;
  const float* g = got->tensor.ptr<float>();
  const float* r = ref.tensor.ptr<float>();
  double max_ref = 0, max_diff = 0;
  for (int64_t i = 0; i < ref.tensor.numel(); ++i) {
    if (!std::isfinite(g[i])) return INFINITY;
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(r[i])));
    max_diff = std::max(max_diff, std::fabs(static_cast<double>(g[i]) - r[i]));
  }
  return max_ref > 0 ? max_diff / max_ref : max_diff;
}

constexpr double kTolerance = 1e-2;  // bf16 inputs, P and output

// Runs one table row directly with params from the same checks as the entry points. Decode runs
// twice on one workspace, the output poisoned in between: the split counters must come back zero.
// workspace_merge: the splits meet through the workspace even where the plan has them meet in a
// cluster's shared memory (p.cluster_merge, the default for 2..8 splits on sm_90).
Runner decode_row(const cuda::AttentionVariant& v, int num_splits, bool workspace_merge = false) {
  return [&v, num_splits, workspace_merge](const PagedAttentionArgs& a) -> Status {
    KILN_ASSIGN_OR_RETURN(cuda::PagedAttentionParams p, cuda::make_paged_attention_params(a));
    KILN_RETURN_IF_ERROR(cuda::plan_decode_splits(p, v, num_splits));
    if (workspace_merge) p.cluster_merge = 0;
    const int64_t bytes = cuda::decode_workspace_bytes(p);
    KILN_ASSIGN_OR_RETURN(DeviceBuffer ws, DeviceBuffer::alloc(bytes));
    if (p.num_splits > 1) {
      if (cudaMemset(ws.data(), 0, static_cast<size_t>(bytes)) != cudaSuccess) return internal_error("cudaMemset");
      cuda::bind_decode_workspace(p, ws.data());
    }
    KILN_RETURN_IF_ERROR(v.launch(p, nullptr));
    KILN_RETURN_IF_ERROR(fill_bytes(a.out, 0xff));
    KILN_RETURN_IF_ERROR(v.launch(p, nullptr));
    return cuda_synchronize();  // before ws goes away
  };
}
Runner prefill_row(const cuda::AttentionVariant& v) {
  return [&v](const PagedAttentionArgs& a) -> Status {
    KILN_ASSIGN_OR_RETURN(cuda::PagedAttentionParams p, cuda::make_paged_attention_params(a));
    return v.launch(p, nullptr);
  };
}

std::vector<std::pair<int64_t, int64_t>> head_configs(int64_t d) {
  std::vector<std::pair<int64_t, int64_t>> h = {{4, 4}, {16, 4}, {16, 2}};  // GQA ratios 1, 4, 8
  if (d == 64) h.push_back({9, 3});                                         // SmolLM2
  return h;
}

// Decode also covers groups above 8 (the fp8 kernel's full-tile variant) and 16, its limit.
std::vector<std::pair<int64_t, int64_t>> decode_head_configs(int64_t d) {
  std::vector<std::pair<int64_t, int64_t>> h = head_configs(d);
  h.push_back({24, 2});  // 12
  h.push_back({16, 1});  // 16
  return h;
}

void expect_close(Problem& p, const Runner& run, const std::string& what) {
  const double err = relative_error(p, run);
  std::printf("[attention_cuda] %-8s %s rel err %.2e\n", what.c_str(), describe(p.shape, p.d, p.cache).c_str(), err);
  EXPECT_LT(err, kTolerance) << what << " " << describe(p.shape, p.d, p.cache);
}

TEST(PagedAttentionCuda, DecodeVariantsMatchCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(7);
  for (const cuda::AttentionVariant& v : cuda::decode_attention_variants()) {
    for (auto [hq, hkv] : decode_head_configs(v.head_dim)) {
      for (int64_t bs : {1, 16}) {
        for (int32_t kv : {1, 17, 97, 2048}) {
          Result<Problem> p =
              make_problem({{{1, kv}, {1, kv / 2 + 1}, {1, kv + 3}}, hq, hkv, bs}, v.head_dim, rng, v.cache);
          ASSERT_TRUE(p.ok()) << p.status().to_string();
          // 37 asked for: splits of 64 keys, more than a warp has lanes for the in-kernel combine.
          for (int splits : {1, 3, 0, 8, 37}) {  // 8: the largest cluster merge
            if ((splits == 37 || splits == 8) && kv != 2048) continue;
            expect_close(*p, decode_row(v, splits), "decode/" + std::to_string(splits));
          }
          if (kv >= 97) expect_close(*p, decode_row(v, 3, true), "decode/3/workspace");
        }
      }
    }
  }
}

// Batched decode (at least cuda::kDecodeBatchedCtas (sequence, kv head) pairs): the planner's
// batched rule, sequences of unequal lengths.
TEST(PagedAttentionCuda, BatchedDecodeMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(11);
  int batched = 0;
  for (const cuda::AttentionVariant& v : cuda::decode_attention_variants()) {
    for (auto [hq, hkv] : decode_head_configs(v.head_dim)) {
      for (int32_t kv : {97, 1500}) {
        std::vector<Seq> seqs;
        for (int i = 0; i < 12; ++i) seqs.push_back({1, kv - 7 * i});
        if (12 * hkv >= cuda::kDecodeBatchedCtas) ++batched;
        Result<Problem> p = make_problem({seqs, hq, hkv, 16}, v.head_dim, rng, v.cache);
        ASSERT_TRUE(p.ok()) << p.status().to_string();
        for (int splits : {0, 1, 3}) expect_close(*p, decode_row(v, splits), "batched/" + std::to_string(splits));
      }
    }
  }
  EXPECT_GT(batched, 0);
}

TEST(PagedAttentionCuda, PrefillVariantsMatchCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(11);
  for (const cuda::AttentionVariant& v : cuda::prefill_attention_variants()) {
    for (auto [hq, hkv] : head_configs(v.head_dim)) {
      for (int64_t bs : {1, 16}) {
        for (int32_t kv : {1, 17, 97, 2048}) {
          if (kv == 2048 && hq != 16) continue;  // keeps the CPU reference's share of the test short
          std::vector<Shape> shapes = {
              {{{kv, kv}}, hq, hkv, bs},                                                   // causal, q_len == kv_len
              {{{1, kv}, {5, kv + 4}, {std::min(kv, 40), kv + 40}, {3, 3}}, hq, hkv, bs},  // decode + prefix
          };
          for (const Shape& s : shapes) {
            Result<Problem> p = make_problem(s, v.head_dim, rng, v.cache);
            ASSERT_TRUE(p.ok()) << p.status().to_string();
            expect_close(*p, prefill_row(v), "prefill");
          }
        }
      }
    }
  }
}

constexpr DType kCacheDtypes[] = {DType::kBF16, DType::kFp8E4M3};

// A batched plan whose (sequence, kv head) pairs fill half the SMs (16 x 8 on the H100's 132) keeps at
// least 256 keys a split: a short context runs whole, a longer one still splits.
TEST(PagedAttentionCuda, BatchedPlanSplitsOnlyLongerContexts) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  int device = 0, sms = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), cudaSuccess);
  if (2 * 16 * 8 < sms) GTEST_SKIP() << "16 x 8 pairs fill less than half of " << sms << " SMs: no floor";
  std::mt19937 rng(17);
  for (DType cache : kCacheDtypes) {
    Result<const cuda::AttentionVariant*> v =
        cuda::find_attention_variant(cuda::decode_attention_variants(), "decode_attention", DType::kBF16, cache, 128);
    ASSERT_TRUE(v.ok()) << v.status().to_string();
    for (int32_t kv : {256, 384, 2048}) {
      Result<Problem> p = make_problem({std::vector<Seq>(16, Seq{1, kv}), 32, 8, 16}, 128, rng, cache);
      ASSERT_TRUE(p.ok()) << p.status().to_string();
      Result<cuda::PagedAttentionParams> params = cuda::make_paged_attention_params(p->args(true, p->dout.tensor));
      ASSERT_TRUE(params.ok()) << params.status().to_string();
      ASSERT_TRUE(cuda::plan_decode_splits(*params, **v, 0).ok());
      const std::string what = std::string(dtype_name(cache)) + " B16 x " + std::to_string(kv);
      EXPECT_LE(params->num_splits * 256, std::max(256, params->max_kv_len)) << what;
      if (kv >= 2048) EXPECT_GT(params->num_splits, 1) << what;
      else EXPECT_EQ(params->num_splits, 1) << what;
    }
  }
}

TEST(PagedAttentionCuda, SlidingWindowMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(13);
  for (DType cache : kCacheDtypes)
  for (int64_t d : {64, 128}) {
    for (int64_t window : {8, 100}) {
      Result<Problem> dec = make_problem({{{1, 300}, {1, 5}, {1, 1000}}, 16, 4, 16, window}, d, rng, cache);
      ASSERT_TRUE(dec.ok());
      for (int splits : {1, 2}) {
        expect_close(
            *dec, [splits](const PagedAttentionArgs& a) { return decode_attention_cuda(a, splits, nullptr, nullptr); },
            "window/decode");
      }
      Result<Problem> pre = make_problem({{{300, 300}, {20, 50}, {1, 77}, {150, 400}}, 16, 4, 16, window}, d, rng, cache);
      ASSERT_TRUE(pre.ok());
      expect_close(
          *pre, [](const PagedAttentionArgs& a) { return prefill_attention_cuda(a, nullptr); }, "window/prefill");
    }
  }
}

TEST(PagedAttentionCuda, EntryPointPicksByShape) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(17);
  auto entry = [](const PagedAttentionArgs& a) { return paged_attention_cuda(a, nullptr); };
  for (DType cache : kCacheDtypes)
  for (int64_t d : {64, 128}) {
    Result<Problem> decode = make_problem({{{1, 5000}, {1, 3000}}, 32, 8, 16}, d, rng, cache);  // split-K by shape
    ASSERT_TRUE(decode.ok());
    expect_close(*decode, entry, "entry");
    Result<Problem> wide = make_problem({{{1, 300}}, 32, 1, 16}, d, rng, cache);  // group 32 > 16: prefill kernel
    ASSERT_TRUE(wide.ok());
    expect_close(*wide, entry, "entry");
    Result<Problem> mixed = make_problem({{{1, 700}, {64, 64}, {129, 1000}, {1, 1}}, 32, 8, 16}, d, rng, cache);
    ASSERT_TRUE(mixed.ok());
    expect_close(*mixed, entry, "entry");
  }
}

// Head dims outside the tuned tables go through generic_attention.cu from the entry point.
TEST(PagedAttentionCuda, PortableFallbackMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(23);
  auto entry = [](const PagedAttentionArgs& a) { return paged_attention_cuda(a, nullptr); };
  for (DType cache : kCacheDtypes)
  for (int64_t d : {16, 96, 256}) {
    for (int64_t bs : {1, 16}) {
      Result<Problem> p = make_problem({{{1, 300}, {17, 17}, {5, 130}}, 8, 2, bs}, d, rng, cache);
      ASSERT_TRUE(p.ok()) << p.status().to_string();
      expect_close(*p, entry, "portable d=" + std::to_string(d));
    }
    Result<Problem> w = make_problem({{{40, 90}, {1, 200}}, 4, 4, 16, 24}, d, rng, cache);  // sliding window
    ASSERT_TRUE(w.ok());
    expect_close(*w, entry, "portable window d=" + std::to_string(d));
  }
}

// The fp8 d128 decode configurations the bench compares (the shipped one, the sparse grids' 6-stage
// ring and the alternatives), each against the CPU, one group of each head-tile count.
TEST(PagedAttentionCuda, Fp8DecodeConfigurationsMatchCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(31);
  for (auto [hq, hkv] : std::vector<std::pair<int64_t, int64_t>>{{16, 4}, {24, 2}}) {
    Result<Problem> p =
        make_problem({{{1, 17}, {1, 700}, {1, 2048}}, hq, hkv, 16}, 128, rng, DType::kFp8E4M3);
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    for (const cuda::Fp8DecodeTuning& t : cuda::decode_fp8_tunings()) {
      const cuda::AttentionVariant v{DType::kBF16, 128, t.launch, t.ctas_per_sm, DType::kFp8E4M3};
      for (int splits : {1, 0}) expect_close(*p, decode_row(v, splits), std::string(t.name) + "/" + std::to_string(splits));
    }
  }
}

// Stands in for the RoPE / KV write before decode attention: lets the next kernel launch at once,
// waits 20 us, then writes each sequence's newest key (the K and V rows of every kv head) from a
// staging copy. Decode attention may request older keys before its griddepcontrol.wait, never these.
struct LateRows {
  const uint8_t* k_src;
  const uint8_t* v_src;
  uint8_t* k_cache;
  uint8_t* v_cache;
  int64_t offset[4];  // byte offsets of the rows in the caches
  int rows, row_bytes;
};
__global__ void write_rows_late(const __grid_constant__ LateRows a) {
  test::release_next_then_spin(20000);
  for (int i = threadIdx.x; i < a.rows * a.row_bytes; i += blockDim.x) {
    const int r = i / a.row_bytes, b = i % a.row_bytes;
    a.k_cache[a.offset[r] + b] = a.k_src[i];
    a.v_cache[a.offset[r] + b] = a.v_src[i];
  }
}

// The newest key in a split's first tile (kv 17, 97) and in a later one (2048), one split and
// split-K: poisoned (NaN) until the kernel before decode attention writes it.
TEST(PagedAttentionCuda, DecodeReadsTheNewestKeyAfterTheKernelBefore) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(29);
  for (DType cache : kCacheDtypes)
  for (int64_t d : {64, 128}) {
    Result<Problem> p = make_problem({{{1, 17}, {1, 97}, {1, 2048}}, 16, 4, 16}, d, rng, cache);
    ASSERT_TRUE(p.ok()) << p.status().to_string();
    const int64_t row_bytes = p->shape.hkv * d * (cache == DType::kFp8E4M3 ? 1 : 2), bs = p->shape.block_size;
    Result<DeviceBuffer> staging = DeviceBuffer::alloc(2 * p->batch * row_bytes);
    ASSERT_TRUE(staging.ok());
    auto* kc = static_cast<uint8_t*>(p->dk.tensor.data);
    auto* vc = static_cast<uint8_t*>(p->dv.tensor.data);
    LateRows late{static_cast<const uint8_t*>(staging->data()),
                  static_cast<const uint8_t*>(staging->data()) + p->batch * row_bytes, kc, vc, {}, static_cast<int>(p->batch),
                  static_cast<int>(row_bytes)};
    for (int64_t b = 0; b < p->batch; ++b) {
      const int32_t key = p->kv_lens[static_cast<size_t>(b)] - 1;
      const int64_t slot = p->tables[static_cast<size_t>(b * p->table_width + key / bs)] * bs + key % bs;
      late.offset[b] = slot * row_bytes;
      ASSERT_EQ(cudaMemcpy(static_cast<uint8_t*>(staging->data()) + b * row_bytes, kc + late.offset[b], row_bytes,
                           cudaMemcpyDeviceToDevice), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(static_cast<uint8_t*>(staging->data()) + (p->batch + b) * row_bytes, vc + late.offset[b],
                           row_bytes, cudaMemcpyDeviceToDevice), cudaSuccess);
    }
    for (int splits : {1, 0}) {
      Runner run = [&](const PagedAttentionArgs& a) -> Status {
        for (int64_t b = 0; b < p->batch; ++b) {  // NaN in both dtypes
          if (cudaMemset(kc + late.offset[b], 0xff, row_bytes) != cudaSuccess ||
              cudaMemset(vc + late.offset[b], 0xff, row_bytes) != cudaSuccess)
            return internal_error("cudaMemset");
        }
        KILN_ASSIGN_OR_RETURN(int64_t ws_bytes, decode_attention_workspace_bytes(a, splits));
        KILN_ASSIGN_OR_RETURN(DeviceBuffer ws, DeviceBuffer::alloc(std::max<int64_t>(ws_bytes, 256)));
        if (cudaMemset(ws.data(), 0, static_cast<size_t>(std::max<int64_t>(ws_bytes, 256))) != cudaSuccess ||
            cudaDeviceSynchronize() != cudaSuccess)
          return internal_error("workspace");
        cudaStream_t s;
        if (cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) != cudaSuccess) return internal_error("stream");
        Status st = cuda::launch_pdl(write_rows_late, dim3(1), dim3(256), 0, s, late) == cudaSuccess
                        ? decode_attention_cuda(a, splits, ws.data(), s)
                        : internal_error("write_rows_late launch");
        if (cudaStreamSynchronize(s) != cudaSuccess && st.ok()) st = internal_error("stream sync");
        (void)cudaStreamDestroy(s);
        return st;
      };
      expect_close(*p, run, "newest/" + std::to_string(splits));
    }
  }
}

TEST(PagedAttentionCuda, RejectsWhatNoVariantCovers) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(19);
  Result<Problem> p96 = make_problem({{{1, 20}}, 4, 4, 16}, 96, rng);
  ASSERT_TRUE(p96.ok());
  // The tuned kernels reject head_dim 96 and name what they support (the entry point falls back
  // to the portable kernel instead: PortableFallbackMatchesCpu).
  const Status s96 = prefill_attention_cuda(p96->args(true, p96->dout.tensor), nullptr);
  EXPECT_EQ(s96.code(), StatusCode::kUnimplemented);
  EXPECT_NE(s96.message().find("bf16/bf16 x 64, bf16/bf16 x 128, bf16/fp8_e4m3 x 64, bf16/fp8_e4m3 x 128"),
            std::string::npos)
      << s96.message();
  EXPECT_EQ(decode_attention_cuda(p96->args(true, p96->dout.tensor), 0, nullptr, nullptr).code(), StatusCode::kUnimplemented);

  Result<Problem> p = make_problem({{{1, 20}}, 4, 4, 16}, 64, rng);
  ASSERT_TRUE(p.ok());
  PagedAttentionArgs host = p->args(false, p->q.tensor);  // host tensors
  EXPECT_EQ(paged_attention_cuda(host, nullptr).code(), StatusCode::kInvalidArgument);
  PagedAttentionArgs odd = p->args(true, p->dout.tensor);
  odd.k_cache.shape[1] = odd.v_cache.shape[1] = 12;  // block size 12: not a power of two
  odd.k_cache.shape[0] = odd.v_cache.shape[0] = 1;
  odd.k_cache.strides = odd.v_cache.strides = Tensor::view(nullptr, DType::kBF16, {1, 12, 4, 64}).strides;
  EXPECT_EQ(paged_attention_cuda(odd, nullptr).code(), StatusCode::kUnimplemented);
  PagedAttentionArgs two_tokens = p->args(true, p->dout.tensor);
  two_tokens.q.shape[0] = two_tokens.out.shape[0] = 2;  // not a decode batch
  EXPECT_EQ(decode_attention_cuda(two_tokens, 0, nullptr, nullptr).code(), StatusCode::kInvalidArgument);

  Result<Problem> p8 = make_problem({{{1, 20}}, 4, 4, 16}, 64, rng, DType::kFp8E4M3);
  ASSERT_TRUE(p8.ok());
  PagedAttentionArgs zero_scale = p8->args(true, p8->dout.tensor);
  zero_scale.v_scale = 0.f;
  EXPECT_EQ(paged_attention_cuda(zero_scale, nullptr).code(), StatusCode::kInvalidArgument);
  PagedAttentionArgs mixed_caches = p8->args(true, p8->dout.tensor);
  mixed_caches.v_cache = p->dv.tensor;  // bf16 V with an fp8 K
  EXPECT_NE(paged_attention_cuda(mixed_caches, nullptr).code(), StatusCode::kOk);
}

}  // namespace
}  // namespace kiln
