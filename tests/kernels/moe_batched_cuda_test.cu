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

// The layout of chunks of c rows (what moe_batched_layout makes once it has picked c).
MoeBatchedLayout chunks_of(const std::vector<int32_t>& off, int64_t c) {
  MoeBatchedLayout l;
  l.rows_per_entry = c;
  for (size_t e = 0; e + 1 < off.size(); ++e)
    for (int32_t b = off[e]; b < off[e + 1]; b += static_cast<int32_t>(c)) {
      l.expert.push_back(static_cast<int32_t>(e));
      l.begin.push_back(b);
      l.end.push_back(std::min<int32_t>(off[e + 1], b + static_cast<int32_t>(c)));
    }
  return l;
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
  // one entry per expert (96 rows), and chunks of 32 rows (expert 4's 92 rows in three)
  for (const MoeBatchedLayout& layout : {moe_batched_layout(off, 1000), chunks_of(off, 32)})
    for (const bool padded : {false, true}) {
      const int64_t rpe = layout.rows_per_entry, prow = layout.padded_rows();
      SCOPED_TRACE(std::string(padded ? "x padded" : "x at the offsets") + ", entries of " + std::to_string(rpe));
      const int64_t x_rows = padded ? prow : rows + rpe;  // the last entry reads rpe rows
      HostTensor x = test::random_tensor(DType::kFp8E4M3, {x_rows, k}, rng, 3.0f);
      auto dx = to_device(x.tensor);
      auto dy = DeviceTensor::empty(DType::kBF16, {prow, n});
      ASSERT_TRUE(dx.ok() && dy.ok());
      const MoeBatchedGemmArgs args{dx->tensor, &layout, padded, ptrs.tensor, n, dy->tensor};
      for (int call = 0; call < 2; ++call) {  // the first call times the candidates
        ASSERT_EQ(cudaMemset(dy->tensor.data, 0, static_cast<size_t>(prow * n * 2)), cudaSuccess);
        ASSERT_TRUE(gemm->run(args, nullptr).ok());
        auto hy = to_host(dy->tensor);
        ASSERT_TRUE(hy.ok());
        const std::vector<float> xf = test::to_f32(x.tensor), y = test::to_f32(hy->tensor);
        std::vector<float> got, want;
        int64_t checked = 0;
        for (int64_t i = 0; i < layout.entries(); ++i) {
          const size_t iu = static_cast<size_t>(i);
          const std::vector<float> wf = test::to_f32(hw[static_cast<size_t>(layout.expert[iu])].tensor);
          const int64_t x0 = padded ? i * rpe : layout.begin[iu];
          const int64_t own = off[static_cast<size_t>(layout.expert[iu])] + counts[static_cast<size_t>(layout.expert[iu])];
          for (int64_t r = 0; r < layout.end[iu] - layout.begin[iu] && layout.begin[iu] + r < own; ++r, ++checked)
            for (int64_t j = 0; j < n; ++j) {
              double acc = 0;
              for (int64_t c = 0; c < k; ++c) acc += double(xf[static_cast<size_t>((x0 + r) * k + c)]) * wf[static_cast<size_t>(j * k + c)];
              want.push_back(static_cast<float>(acc));
              got.push_back(y[static_cast<size_t>((i * rpe + r) * n + j)]);
            }
        }
        EXPECT_EQ(checked, 37 + 64 + 5 + 90);
        EXPECT_LE(test::scaled_error(got, want), 8e-3) << "call " << call;  // bf16 output
      }
    }
  // Bad arguments: refused, nothing launched.
  const MoeBatchedLayout layout = moe_batched_layout(off, 1000);
  auto dx = to_device(HostTensor::zeros(DType::kFp8E4M3, {rows, k}).tensor);
  auto dy = DeviceTensor::empty(DType::kBF16, {layout.padded_rows(), n});
  ASSERT_TRUE(dx.ok() && dy.ok());
  EXPECT_EQ(gemm->run({dx->tensor, &layout, false, ptrs.tensor, n, dy->tensor}, nullptr).code(), StatusCode::kInvalidArgument)
      << "x lacks the last entry's rows";
  auto dx2 = to_device(HostTensor::zeros(DType::kFp8E4M3, {rows + 128, k}).tensor);
  ASSERT_TRUE(dx2.ok());
  EXPECT_EQ(gemm->run({dx2->tensor, &layout, false, ptrs.tensor, n + 16, dy->tensor}, nullptr).code(), StatusCode::kInvalidArgument)
      << "y of another width";
  MoeBatchedLayout bad = layout;
  bad.end[0] = bad.begin[0] + static_cast<int32_t>(bad.rows_per_entry) + 1;
  EXPECT_EQ(gemm->run({dx2->tensor, &bad, false, ptrs.tensor, n, dy->tensor}, nullptr).code(), StatusCode::kInvalidArgument)
      << "an entry longer than rows_per_entry";
  bad = layout;
  bad.expert[0] = static_cast<int32_t>(experts);
  EXPECT_EQ(gemm->run({dx2->tensor, &bad, false, ptrs.tensor, n, dy->tensor}, nullptr).code(), StatusCode::kInvalidArgument)
      << "an expert out of range";
  // The layout's tables: each entry, and the padded row of every permuted row (-1: none).
  const MoeBatchedLayout chunked = chunks_of(off, 32);
  auto tables = gemm->upload_layout(chunked, rows, nullptr);
  ASSERT_TRUE(tables.ok());
  auto he = to_host(tables->entries);
  auto hp = to_host(tables->padded_rows);
  ASSERT_TRUE(he.ok() && hp.ok());
  std::vector<int32_t> want_rows(static_cast<size_t>(rows), -1);
  for (int64_t i = 0; i < chunked.entries(); ++i) {
    const size_t iu = static_cast<size_t>(i);
    EXPECT_EQ(he->tensor.ptr<int32_t>()[3 * i], chunked.expert[iu]);
    EXPECT_EQ(he->tensor.ptr<int32_t>()[3 * i + 1], chunked.begin[iu]);
    EXPECT_EQ(he->tensor.ptr<int32_t>()[3 * i + 2], chunked.end[iu]);
    for (int32_t r = chunked.begin[iu]; r < chunked.end[iu]; ++r) want_rows[static_cast<size_t>(r)] = static_cast<int32_t>(i * 32 + r - chunked.begin[iu]);
  }
  EXPECT_EQ(std::memcmp(hp->tensor.data, want_rows.data(), want_rows.size() * 4), 0);
}

// Dequant inputs: the layout of chunks of rpe rows over experts with these row counts (the
// groups table), x scales for the permuted rows, per-channel scales per expert; host pointers in
// the CPU table.
struct DequantCase {
  std::vector<int32_t> counts;
  int64_t rpe, inter;
  std::vector<int32_t> off;
  MoeBatchedLayout layout;
  HostTensor gu, xs, groups;
  std::vector<HostTensor> cs;
  HostTensor host_ptrs;
  DequantCase(std::vector<int32_t> c, int64_t rows_per_group, int64_t width, std::mt19937& rng)
      : counts(std::move(c)), rpe(rows_per_group), inter(width), off(aligned_offsets(counts)), layout(chunks_of(off, rpe)) {
    const int64_t experts = static_cast<int64_t>(counts.size()), g = layout.entries();
    gu = test::random_tensor(DType::kBF16, {g * rpe, 2 * inter}, rng, 300.0f);  // unscaled sums
    xs = test::random_tensor(DType::kF32, {off.back()}, rng, 0.1f);
    groups = HostTensor::zeros(DType::kInt32, {g, 3});
    for (int64_t i = 0; i < g; ++i) {
      const size_t iu = static_cast<size_t>(i);
      int32_t* row = groups.tensor.ptr<int32_t>() + 3 * i;
      row[0] = layout.expert[iu], row[1] = layout.begin[iu], row[2] = layout.end[iu];
    }
    host_ptrs = HostTensor::zeros(DType::kInt64, {experts});
    for (int64_t e = 0; e < experts; ++e) {
      cs.push_back(test::random_tensor(DType::kF32, {2 * inter}, rng, 0.07f));
      host_ptrs.tensor.ptr<int64_t>()[e] = reinterpret_cast<int64_t>(cs.back().tensor.data);
    }
  }
  int64_t rows() const { return layout.padded_rows(); }
  // Whether padded row t is a row, and its entry.
  bool is_row(int64_t t) const {
    const size_t i = static_cast<size_t>(t / rpe);
    return t % rpe < layout.end[i] - layout.begin[i];
  }
};

// The CPU reference's dequant equals scaling gate_up first (bf16) and running the plain path on
// the rows that are rows; the padding rows of q and scale stay as they were.
TEST(SiluMulFp8Cpu, DequantEqualsScalingFirst) {
  std::mt19937 rng(41);
  DequantCase c({5, 0, 19}, 8, 24, rng);  // expert 2's 20 rows in three groups
  HostTensor q = HostTensor::zeros(DType::kFp8E4M3, {c.rows(), c.inter}), s = HostTensor::zeros(DType::kF32, {c.rows()});
  std::memset(q.tensor.data, 0x55, static_cast<size_t>(c.rows() * c.inter));
  for (int64_t t = 0; t < c.rows(); ++t) s.tensor.ptr<float>()[t] = -7.0f;
  ASSERT_TRUE(silu_mul_fp8_cpu({c.gu.tensor, q.tensor, s.tensor, {c.rpe, c.groups.tensor, c.xs.tensor, c.host_ptrs.tensor}}).ok());
  for (int64_t t = 0; t < c.rows(); ++t) {
    const size_t i = static_cast<size_t>(t / c.rpe);
    if (!c.is_row(t)) {
      EXPECT_EQ(s.tensor.ptr<float>()[t], -7.0f) << t;
      EXPECT_EQ(q.tensor.ptr<uint8_t>()[t * c.inter], 0x55) << t;
      continue;
    }
    std::vector<float> row = test::to_f32(c.gu.tensor.slice0(t, t + 1));
    const float rs = c.xs.tensor.ptr<float>()[c.layout.begin[i] + t % c.rpe];
    const float* cs = c.cs[static_cast<size_t>(c.layout.expert[i])].tensor.ptr<float>();
    for (size_t j = 0; j < row.size(); ++j) row[j] = row[j] * rs * cs[j];
    HostTensor scaled = HostTensor::zeros(DType::kBF16, {1, 2 * c.inter});
    ASSERT_TRUE(convert(row.data(), DType::kF32, scaled.tensor.data, DType::kBF16, 2 * c.inter).ok());
    HostTensor q1 = HostTensor::zeros(DType::kFp8E4M3, {1, c.inter}), s1 = HostTensor::zeros(DType::kF32, {1});
    ASSERT_TRUE(silu_mul_fp8_cpu({scaled.tensor, q1.tensor, s1.tensor}).ok());
    EXPECT_EQ(std::memcmp(q1.tensor.data, q.tensor.ptr<uint8_t>() + t * c.inter, static_cast<size_t>(c.inter)), 0) << t;
    EXPECT_EQ(s1.tensor.ptr<float>()[0], s.tensor.ptr<float>()[t]) << t;
  }
  HostTensor bad = HostTensor::zeros(DType::kFp8E4M3, {c.rows() - 1, c.inter});
  EXPECT_FALSE(silu_mul_fp8_cpu({c.gu.tensor.slice0(0, c.rows() - 1), bad.tensor, s.tensor.slice0(0, c.rows() - 1),
                                 {c.rpe, c.groups.tensor, c.xs.tensor, c.host_ptrs.tensor}}).ok());
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
  for (const Shape& sh : {Shape{{33, 0, 40}, 40, 1000}, Shape{{64, 61, 2, 50}, 64, 14336}, Shape{{7, 30, 100}, 32, 4096}}) {
    DequantCase c(sh.counts, sh.rpe, sh.inter, rng);
    const int64_t rows = c.rows(), inter = c.inter, groups = c.layout.entries();
    const std::string where = std::to_string(rows) + " rows of " + std::to_string(inter);
    HostTensor q = HostTensor::zeros(DType::kFp8E4M3, {rows, inter}), s = HostTensor::zeros(DType::kF32, {rows});
    std::memset(q.tensor.data, 0x55, static_cast<size_t>(rows * inter));
    ASSERT_TRUE(silu_mul_fp8_cpu({c.gu.tensor, q.tensor, s.tensor, {c.rpe, c.groups.tensor, c.xs.tensor, c.host_ptrs.tensor}}).ok());
    auto dgu = to_device(c.gu.tensor);
    auto dxs = to_device(c.xs.tensor);
    auto doff = to_device(c.groups.tensor);
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
        const bool is_row = c.is_row(t);
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
    const SiluMulFp8Args bad{dgu->tensor, dq->tensor, ds->tensor, {c.rpe, doff->tensor.slice0(0, groups - 1), dxs->tensor, dptrs.tensor}};
    EXPECT_EQ(silu_mul_fp8_cuda(bad, nullptr).code(), StatusCode::kInvalidArgument);
  }
}

// moe_unpermute's dequant: out[t] = sum_j w[t, j] * y[p] * row_scale[p] * col_scale[e][c] with
// p = padded_rows[inverse[t, j]] (entries of 16 rows), against that formula on the CPU.
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
  const MoeBatchedLayout layout = chunks_of(off, 16);  // experts of ~28 rows in two entries
  const int64_t prow = layout.padded_rows();
  std::vector<int32_t> padded(static_cast<size_t>(off.back()), -1);
  for (int64_t i = 0; i < layout.entries(); ++i)
    for (int32_t r = layout.begin[static_cast<size_t>(i)]; r < layout.end[static_cast<size_t>(i)]; ++r)
      padded[static_cast<size_t>(r)] = static_cast<int32_t>(i * 16 + r - layout.begin[static_cast<size_t>(i)]);
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
  auto dpad = to_device(host_i32(padded));
  auto dout = DeviceTensor::empty(DType::kBF16, {tokens, hidden});
  ASSERT_TRUE(dy.ok() && drs.ok() && dw.ok() && dids.ok() && dinv.ok() && dpad.ok() && dout.ok());
  MoeUnpermuteArgs a{dy->tensor, dw->tensor, dinv->tensor, dout->tensor};
  a.padded_rows = dpad->tensor;
  a.topk_ids = dids->tensor;
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
      const int64_t p = padded[static_cast<size_t>(inverse[s])];
      for (int64_t c = 0; c < hidden; ++c)
        want[static_cast<size_t>(t * hidden + c)] += w.tensor.ptr<float>()[s] * (yf[static_cast<size_t>(p * hidden + c)] *
                                                     rs.tensor.ptr<float>()[p] * cs[static_cast<size_t>(e)].tensor.ptr<float>()[c]);
    }
  EXPECT_LE(test::scaled_error(got, want), 8e-3);  // bf16 output
  a.row_scale = drs->tensor.slice0(0, prow - 1);  // a row scale short
  EXPECT_EQ(moe_unpermute_cuda(a, nullptr).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kiln
