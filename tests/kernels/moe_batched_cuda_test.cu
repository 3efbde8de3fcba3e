// The batched MoE path's kernels on fresh random inputs: MoeBatchedGemm against a plain CPU dot
// product per expert row (x contiguous at the offsets and padded), its argument checks; the
// SwiGLU's dequant rows (silu_mul_fp8, SiluMulFp8Dequant) against silu_mul_fp8_cpu, and that CPU
// reference against scaling first and then the plain path; moe_unpermute's dequant against the
// formula on the CPU. GPU suites skip without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/moe_cuda.h"
#include "kiln/kernels/silu_mul_fp8.h"
#include "tests/kernels/kernel_test_util.h"

namespace kiln {
namespace {

// Offsets (aligned to 4, as the fp8 grouped path permutes) of experts with these row counts.
std::vector<int32_t> aligned_offsets(const std::vector<int32_t>& counts) {
  std::vector<int32_t> off(counts.size() + 1, 0);
  for (size_t e = 0; e < counts.size(); ++e) off[e + 1] = off[e] + (counts[e] + 3) / 4 * 4;
  return off;
}

// A device table of the experts' base pointers ([experts] int64).
DeviceTensor pointer_table(const std::vector<DeviceTensor>& t) {
  std::vector<int64_t> p;
  for (const DeviceTensor& d : t) p.push_back(reinterpret_cast<int64_t>(d.tensor.data));
  return std::move(to_device(Tensor::view(p.data(), DType::kInt64, {static_cast<int64_t>(p.size())}))).value();
}

TEST(MoeBatchedGemmCuda, MatchesCpuPerExpert) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  const int64_t n = 192, k = 256;
  const std::vector<int32_t> counts = {37, 0, 64, 5, 90};
  const std::vector<int32_t> off = aligned_offsets(counts);
  const int64_t experts = static_cast<int64_t>(counts.size()), rows = off.back();
  const int64_t rpe = moe_batched_rows_per_expert(90);
  ASSERT_EQ(rpe, 96);
  std::mt19937 rng(31);
  auto gemm = MoeBatchedGemm::create();
  ASSERT_TRUE(gemm.ok()) << gemm.status().to_string();
  std::vector<HostTensor> hw;
  std::vector<DeviceTensor> dw;
  for (int64_t e = 0; e < experts; ++e) {
    hw.push_back(test::random_tensor(DType::kFp8E4M3, {n, k}, rng, 2.0f));
    dw.push_back(std::move(to_device(hw.back().tensor)).value());
  }
  const DeviceTensor ptrs = pointer_table(dw);
  for (const bool padded : {false, true}) {
    SCOPED_TRACE(padded ? "x padded" : "x at the offsets");
    const int64_t x_rows = padded ? experts * rpe : rows + rpe;  // the last expert reads rpe rows
    HostTensor x = test::random_tensor(DType::kFp8E4M3, {x_rows, k}, rng, 3.0f);
    auto dx = to_device(x.tensor);
    auto dy = DeviceTensor::empty(DType::kBF16, {experts * rpe, n});
    ASSERT_TRUE(dx.ok() && dy.ok());
    ASSERT_EQ(cudaMemset(dy->tensor.data, 0, static_cast<size_t>(experts * rpe * n * 2)), cudaSuccess);
    const MoeBatchedGemmArgs args{dx->tensor, off, padded, ptrs.tensor, n, rpe, dy->tensor};
    for (int call = 0; call < 2; ++call) {  // the first call times the candidates
      ASSERT_TRUE(gemm->run(args, nullptr).ok());
      auto hy = to_host(dy->tensor);
      ASSERT_TRUE(hy.ok());
      const std::vector<float> xf = test::to_f32(x.tensor), y = test::to_f32(hy->tensor);
      std::vector<float> got, want;
      for (int64_t e = 0; e < experts; ++e) {
        const std::vector<float> wf = test::to_f32(hw[static_cast<size_t>(e)].tensor);
        const int64_t x0 = padded ? e * rpe : off[static_cast<size_t>(e)];
        for (int64_t r = 0; r < counts[static_cast<size_t>(e)]; ++r)
          for (int64_t j = 0; j < n; ++j) {
            double acc = 0;
            for (int64_t i = 0; i < k; ++i) acc += double(xf[static_cast<size_t>((x0 + r) * k + i)]) * wf[static_cast<size_t>(j * k + i)];
            want.push_back(static_cast<float>(acc));
            got.push_back(y[static_cast<size_t>((e * rpe + r) * n + j)]);
          }
      }
      EXPECT_LE(test::scaled_error(got, want), 8e-3) << "call " << call;  // bf16 output
    }
  }
  // Bad arguments: refused, nothing launched.
  auto dx = to_device(HostTensor::zeros(DType::kFp8E4M3, {rows, k}).tensor);
  auto dy = DeviceTensor::empty(DType::kBF16, {experts * rpe, n});
  ASSERT_TRUE(dx.ok() && dy.ok());
  EXPECT_EQ(gemm->run({dx->tensor, off, false, ptrs.tensor, n, rpe, dy->tensor}, nullptr).code(), StatusCode::kInvalidArgument)
      << "x lacks the last expert's rows";
  const std::vector<int32_t> big = aligned_offsets({37, 0, 100, 5, 90});
  auto dx2 = to_device(HostTensor::zeros(DType::kFp8E4M3, {big.back() + rpe, k}).tensor);
  ASSERT_TRUE(dx2.ok());
  EXPECT_EQ(gemm->run({dx2->tensor, big, false, ptrs.tensor, n, rpe, dy->tensor}, nullptr).code(), StatusCode::kInvalidArgument)
      << "an expert with more rows than rows_per_expert";
  EXPECT_EQ(gemm->run({dx2->tensor, off, false, ptrs.tensor, n + 16, rpe, dy->tensor}, nullptr).code(), StatusCode::kInvalidArgument)
      << "y of another width";
}

// Dequant inputs: groups of rpe padded rows with these counts, x scales for the rows the offsets
// count, per-channel scales per group; host pointers in the CPU table.
struct DequantCase {
  std::vector<int32_t> counts;
  int64_t rpe, inter;
  std::vector<int32_t> off;
  HostTensor gu, xs, offsets;
  std::vector<HostTensor> cs;
  HostTensor host_ptrs;
  DequantCase(std::vector<int32_t> c, int64_t rows_per_group, int64_t width, std::mt19937& rng)
      : counts(std::move(c)), rpe(rows_per_group), inter(width), off(aligned_offsets(counts)) {
    const int64_t groups = static_cast<int64_t>(counts.size());
    gu = test::random_tensor(DType::kBF16, {groups * rpe, 2 * inter}, rng, 300.0f);  // unscaled sums
    xs = test::random_tensor(DType::kF32, {off.back()}, rng, 0.1f);
    offsets = HostTensor::zeros(DType::kInt32, {groups + 1});
    std::memcpy(offsets.tensor.data, off.data(), off.size() * 4);
    host_ptrs = HostTensor::zeros(DType::kInt64, {groups});
    for (int64_t g = 0; g < groups; ++g) {
      cs.push_back(test::random_tensor(DType::kF32, {2 * inter}, rng, 0.07f));
      host_ptrs.tensor.ptr<int64_t>()[g] = reinterpret_cast<int64_t>(cs.back().tensor.data);
    }
  }
  int64_t rows() const { return static_cast<int64_t>(counts.size()) * rpe; }
};

// The CPU reference's dequant equals scaling gate_up first (bf16) and running the plain path on
// the rows that are rows; the padding rows of q and scale stay as they were.
TEST(SiluMulFp8Cpu, DequantEqualsScalingFirst) {
  std::mt19937 rng(41);
  DequantCase c({5, 0, 8}, 8, 24, rng);
  HostTensor q = HostTensor::zeros(DType::kFp8E4M3, {c.rows(), c.inter}), s = HostTensor::zeros(DType::kF32, {c.rows()});
  std::memset(q.tensor.data, 0x55, static_cast<size_t>(c.rows() * c.inter));
  for (int64_t t = 0; t < c.rows(); ++t) s.tensor.ptr<float>()[t] = -7.0f;
  ASSERT_TRUE(silu_mul_fp8_cpu({c.gu.tensor, q.tensor, s.tensor, {c.rpe, c.offsets.tensor, c.xs.tensor, c.host_ptrs.tensor}}).ok());
  for (int64_t t = 0; t < c.rows(); ++t) {
    const int64_t g = t / c.rpe, r = t % c.rpe;
    if (r >= c.off[static_cast<size_t>(g) + 1] - c.off[static_cast<size_t>(g)]) {
      EXPECT_EQ(s.tensor.ptr<float>()[t], -7.0f) << t;
      EXPECT_EQ(q.tensor.ptr<uint8_t>()[t * c.inter], 0x55) << t;
      continue;
    }
    std::vector<float> row = test::to_f32(c.gu.tensor.slice0(t, t + 1));
    const float rs = c.xs.tensor.ptr<float>()[c.off[static_cast<size_t>(g)] + r];
    for (size_t j = 0; j < row.size(); ++j) row[j] = row[j] * rs * c.cs[static_cast<size_t>(g)].tensor.ptr<float>()[j];
    HostTensor scaled = HostTensor::zeros(DType::kBF16, {1, 2 * c.inter});
    ASSERT_TRUE(convert(row.data(), DType::kF32, scaled.tensor.data, DType::kBF16, 2 * c.inter).ok());
    HostTensor q1 = HostTensor::zeros(DType::kFp8E4M3, {1, c.inter}), s1 = HostTensor::zeros(DType::kF32, {1});
    ASSERT_TRUE(silu_mul_fp8_cpu({scaled.tensor, q1.tensor, s1.tensor}).ok());
    EXPECT_EQ(std::memcmp(q1.tensor.data, q.tensor.ptr<uint8_t>() + t * c.inter, static_cast<size_t>(c.inter)), 0) << t;
    EXPECT_EQ(s1.tensor.ptr<float>()[0], s.tensor.ptr<float>()[t]) << t;
  }
  HostTensor bad = HostTensor::zeros(DType::kFp8E4M3, {c.rows() - 1, c.inter});
  EXPECT_FALSE(silu_mul_fp8_cpu({c.gu.tensor.slice0(0, c.rows() - 1), bad.tensor, s.tensor.slice0(0, c.rows() - 1),
                                 {c.rpe, c.offsets.tensor, c.xs.tensor, c.host_ptrs.tensor}}).ok());
}

// Every dequant row of the table against the CPU reference (the host expf may differ in the last
// bit now and then: a few codes one step apart), padding rows untouched.
TEST(SiluMulFp8Cuda, DequantRowsMatchCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(43);
  const auto variants = silu_mul_fp8_cuda_variants();
  struct Shape {
    std::vector<int32_t> counts;
    int64_t rpe, inter;
  };
  for (const Shape& sh : {Shape{{33, 0, 40}, 40, 1000}, Shape{{64, 61, 2, 50}, 64, 14336}, Shape{{7, 30}, 32, 4096}}) {
    DequantCase c(sh.counts, sh.rpe, sh.inter, rng);
    const int64_t rows = c.rows(), inter = c.inter, groups = static_cast<int64_t>(c.counts.size());
    const std::string where = std::to_string(rows) + " rows of " + std::to_string(inter);
    HostTensor q = HostTensor::zeros(DType::kFp8E4M3, {rows, inter}), s = HostTensor::zeros(DType::kF32, {rows});
    std::memset(q.tensor.data, 0x55, static_cast<size_t>(rows * inter));
    ASSERT_TRUE(silu_mul_fp8_cpu({c.gu.tensor, q.tensor, s.tensor, {c.rpe, c.offsets.tensor, c.xs.tensor, c.host_ptrs.tensor}}).ok());
    auto dgu = to_device(c.gu.tensor);
    auto dxs = to_device(c.xs.tensor);
    auto doff = to_device(c.offsets.tensor);
    std::vector<DeviceTensor> dcs;
    for (const HostTensor& h : c.cs) dcs.push_back(std::move(to_device(h.tensor)).value());
    const DeviceTensor dptrs = pointer_table(dcs);
    ASSERT_TRUE(dgu.ok() && dxs.ok() && doff.ok());
    int ran = 0;
    for (size_t v = 0; v <= variants.size(); ++v) {  // the last pass: the dispatch
      if (v < variants.size() && (!variants[v].dequant || inter > variants[v].max_inter ||
                                  (variants[v].max_rows && rows > variants[v].max_rows)))
        continue;
      auto dq = to_device(HostTensor::zeros(DType::kFp8E4M3, {rows, inter}).tensor);
      auto ds = DeviceTensor::empty(DType::kF32, {rows});
      ASSERT_TRUE(dq.ok() && ds.ok());
      ASSERT_EQ(cudaMemset(dq->tensor.data, 0x55, static_cast<size_t>(rows * inter)), cudaSuccess);
      const SiluMulFp8Args args{dgu->tensor, dq->tensor, ds->tensor, {c.rpe, doff->tensor, dxs->tensor, dptrs.tensor}};
      const Status st = v < variants.size() ? silu_mul_fp8_cuda_variant(args, v, nullptr) : silu_mul_fp8_cuda(args, nullptr);
      ASSERT_TRUE(st.ok()) << where << " variant " << v << ": " << st.to_string();
      ran += v < variants.size();
      auto hq = to_host(dq->tensor);
      auto hs = to_host(ds->tensor);
      ASSERT_TRUE(hq.ok() && hs.ok());
      int64_t diff = 0, kept = 0;
      for (int64_t t = 0; t < rows; ++t) {
        const int64_t g = t / c.rpe, r = t % c.rpe;
        const bool is_row = r < c.off[static_cast<size_t>(g) + 1] - c.off[static_cast<size_t>(g)];
        const uint8_t* a = hq->tensor.ptr<uint8_t>() + t * inter;
        const uint8_t* b = q.tensor.ptr<uint8_t>() + t * inter;
        if (!is_row) {
          EXPECT_EQ(a[0], 0x55) << where << " padding row " << t;
          continue;
        }
        ++kept;
        for (int64_t i = 0; i < inter; ++i) diff += a[i] != b[i];
        EXPECT_NEAR(hs->tensor.ptr<float>()[t], s.tensor.ptr<float>()[t], 1e-2 * std::fabs(s.tensor.ptr<float>()[t])) << t;
      }
      EXPECT_GT(kept, 0);
      EXPECT_LE(diff, kept * inter / 100 + 1) << where << " variant " << v;
    }
    EXPECT_GT(ran, 0) << where;
    // A table of the wrong length is refused.
    auto dq = DeviceTensor::empty(DType::kFp8E4M3, {rows, inter});
    auto ds = DeviceTensor::empty(DType::kF32, {rows});
    ASSERT_TRUE(dq.ok() && ds.ok());
    const SiluMulFp8Args bad{dgu->tensor, dq->tensor, ds->tensor, {c.rpe, doff->tensor, dxs->tensor, dptrs.tensor.slice0(0, groups - 1)}};
    EXPECT_EQ(silu_mul_fp8_cuda(bad, nullptr).code(), StatusCode::kInvalidArgument);
  }
}

// moe_unpermute's dequant: out[t] = sum_j w[t, j] * y[p] * row_scale[p] * col_scale[e][c] with
// p = e * rpe + inverse[t, j] - offsets[e], against that formula on the CPU.
TEST(MoeUnpermuteCuda, DequantMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(47);
  const int64_t tokens = 70, k = 2, experts = 5, hidden = 256;
  // routing: two distinct experts per token; offsets aligned to 4; inverse as the permute writes it
  std::vector<int32_t> ids(static_cast<size_t>(tokens * k)), counts(static_cast<size_t>(experts), 0);
  for (int64_t t = 0; t < tokens; ++t) {
    const int32_t a = static_cast<int32_t>(rng() % experts);
    int32_t b = static_cast<int32_t>(rng() % (experts - 1));
    b += b >= a;
    ids[static_cast<size_t>(t * k)] = a;
    ids[static_cast<size_t>(t * k + 1)] = b;
  }
  std::vector<int32_t> inverse(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) inverse[i] = counts[static_cast<size_t>(ids[i])]++;
  const std::vector<int32_t> off = aligned_offsets(counts);
  for (size_t i = 0; i < ids.size(); ++i) inverse[i] += off[static_cast<size_t>(ids[i])];
  int32_t most = 0;
  for (int32_t c : counts) most = std::max(most, c);
  const int64_t rpe = moe_batched_rows_per_expert(most), prow = experts * rpe;
  HostTensor y = test::random_tensor(DType::kBF16, {prow, hidden}, rng, 50.0f);
  HostTensor rs = test::random_tensor(DType::kF32, {prow}, rng, 0.05f);
  HostTensor w = test::random_tensor(DType::kF32, {tokens, k}, rng, 0.5f);
  std::vector<HostTensor> cs;
  std::vector<DeviceTensor> dcs;
  for (int64_t e = 0; e < experts; ++e) {
    cs.push_back(test::random_tensor(DType::kF32, {hidden}, rng, 0.1f));
    dcs.push_back(std::move(to_device(cs.back().tensor)).value());
  }
  const DeviceTensor dptrs = pointer_table(dcs);
  auto host_i32 = [](const std::vector<int32_t>& v) { return Tensor::view(const_cast<int32_t*>(v.data()), DType::kInt32, {static_cast<int64_t>(v.size())}); };
  auto dy = to_device(y.tensor);
  auto drs = to_device(rs.tensor);
  auto dw = to_device(w.tensor);
  auto dids = to_device(host_i32(ids));
  auto dinv = to_device(host_i32(inverse));
  auto doff = to_device(host_i32(off));
  auto dout = DeviceTensor::empty(DType::kBF16, {tokens, hidden});
  ASSERT_TRUE(dy.ok() && drs.ok() && dw.ok() && dids.ok() && dinv.ok() && doff.ok() && dout.ok());
  MoeUnpermuteArgs a{dy->tensor, dw->tensor, dinv->tensor, dout->tensor};
  a.rows_per_expert = rpe;
  a.topk_ids = dids->tensor;
  a.expert_offsets = doff->tensor;
  a.row_scale = drs->tensor;
  a.col_scale_ptrs = dptrs.tensor;
  ASSERT_TRUE(moe_unpermute_cuda(a, nullptr).ok());
  auto hout = to_host(dout->tensor);
  ASSERT_TRUE(hout.ok());
  const std::vector<float> yf = test::to_f32(y.tensor), got = test::to_f32(hout->tensor);
  std::vector<float> want(static_cast<size_t>(tokens * hidden), 0.f);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t j = 0; j < k; ++j) {
      const size_t s = static_cast<size_t>(t * k + j);
      const int32_t e = ids[s];
      const int64_t p = e * rpe + inverse[s] - off[static_cast<size_t>(e)];
      for (int64_t c = 0; c < hidden; ++c)
        want[static_cast<size_t>(t * hidden + c)] += w.tensor.ptr<float>()[s] * (yf[static_cast<size_t>(p * hidden + c)] *
                                                     rs.tensor.ptr<float>()[p] * cs[static_cast<size_t>(e)].tensor.ptr<float>()[c]);
    }
  EXPECT_LE(test::scaled_error(got, want), 8e-3);  // bf16 output
  a.rows_per_expert = rpe + 1;  // y no longer experts x rows_per_expert rows
  EXPECT_EQ(moe_unpermute_cuda(a, nullptr).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kiln
