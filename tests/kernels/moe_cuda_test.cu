// GPU MoE: routing against moe_route_cpu (identical ids), the permutation's invariants (stable
// grouping by expert, inverse, gathered rows bit-exact), the weighted un-permute against a direct
// sum, and the whole expert block (route, permute, grouped GEMM, SiLU-mul, grouped GEMM,
// un-permute) against the CPU composition that models/mixtral.cc uses. Skipped without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <cmath>

#include "kiln/kernels/activation.h"
#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/gemm_cuda.h"
#include "kiln/kernels/linear.h"
#include "kiln/kernels/moe.h"
#include "kiln/kernels/moe_cuda.h"
#include "kiln/kernels/quantize.h"
#include "kiln/kernels/silu_mul_fp8.h"
#include "tests/kernels/kernel_test_util.h"

namespace kiln {
namespace {

using test::scaled_error;

template <typename T>
std::vector<T> download_as(const Tensor& device) {
  auto h = to_host(device);
  EXPECT_TRUE(h.ok()) << h.status().to_string();
  if (!h.ok()) return {};
  const T* p = h->tensor.template ptr<T>();
  return std::vector<T>(p, p + h->tensor.numel());
}

DeviceTensor make(DType dtype, std::initializer_list<int64_t> shape) {
  auto r = DeviceTensor::empty(dtype, shape);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_TRUE(fill_bytes(r->tensor, 0xff).ok());
  return std::move(r).value();
}
DeviceTensor upload(const Tensor& host) {
  auto r = to_device(host);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return std::move(r).value();
}

TEST(MoeRouteCuda, MatchesCpuIds) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(31);
  struct Case { int64_t n, experts, k; bool renormalize; };
  const Case cases[] = {{1, 8, 2, true}, {37, 8, 2, true}, {100, 64, 6, false}, {300, 256, 8, true}, {5, 3, 3, true}, {2048, 60, 4, false},
                        {9, 32, 11, true}, {4, 16, 10, false}};  // past the 8 weights route_token holds in registers
  for (const auto& v : moe_route_cuda_variants()) {
    if (v.x != DType::kF32) continue;  // the fused router: MoeRouteCuda.FusedRouterMatchesCpu
    for (const auto& c : cases) {
      SCOPED_TRACE("n=" + std::to_string(c.n) + " experts=" + std::to_string(c.experts) + " k=" + std::to_string(c.k));
      HostTensor logits = test::random_tensor(v.logits, {c.n, c.experts}, rng, 2.0f);
      HostTensor ids = HostTensor::zeros(DType::kInt32, {c.n, c.k}), w = HostTensor::zeros(DType::kF32, {c.n, c.k});
      ASSERT_TRUE(moe_route_cpu({logits.tensor, ids.tensor, w.tensor, c.renormalize}).ok());
      DeviceTensor dl = upload(logits.tensor), dids = make(DType::kInt32, {c.n, c.k}), dw = make(DType::kF32, {c.n, c.k});
      const Status st = moe_route_cuda({dl.tensor, dids.tensor, dw.tensor, c.renormalize}, nullptr);
      ASSERT_TRUE(st.ok()) << st.to_string();
      const auto gid = download_as<int32_t>(dids.tensor);
      const auto gw = download_as<float>(dw.tensor);
      EXPECT_TRUE(std::equal(gid.begin(), gid.end(), ids.tensor.ptr<int32_t>()));
      EXPECT_LT(scaled_error(gw, test::to_f32(w.tensor)), 1e-5);
    }
  }
}

// The router GEMM fused into routing: logits against linear_cpu on the same bf16 values (f32
// sums, tolerance for the order), ids and weights against moe_route_cpu on the CPU logits, except
// where the CPU's k-th and (k+1)-th probabilities are too close for the sum order to settle. The
// rows that sum each token in the same order (block per token, several tokens a block) give
// bit-equal logits; every row runs every case (partial token tiles included), whatever the
// dispatch's token ranges (the cluster row refuses batches past its max_tokens).
TEST(MoeRouteCuda, FusedRouterMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(35);
  struct Case { int64_t n, experts, k, hidden; bool renormalize; };
  const Case cases[] = {{1, 8, 2, 4096, true}, {13, 8, 2, 576, true}, {64, 60, 4, 1024, false}, {300, 256, 8, 64, true},
                        {1029, 8, 2, 4096, true}, {37, 20, 3, 4104, false}, {1600, 8, 2, 1024, true}};
  int device = 0, major = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device), cudaSuccess);
  int rows = 0;
  for (const auto& v : moe_route_cuda_variants()) rows += v.x == DType::kBF16;
  EXPECT_EQ(rows, 3);  // 8 tokens a block, block per token, cluster per token
  for (const auto& c : cases) {
    HostTensor x = test::random_tensor(DType::kBF16, {c.n, c.hidden}, rng);
    HostTensor w = test::random_tensor(DType::kBF16, {c.experts, c.hidden}, rng, 0.1f);
    const std::vector<float> xf = test::to_f32(x.tensor), wf = test::to_f32(w.tensor);
    HostTensor logits = HostTensor::zeros(DType::kF32, {c.n, c.experts});
    HostTensor ids = HostTensor::zeros(DType::kInt32, {c.n, c.k}), tw = HostTensor::zeros(DType::kF32, {c.n, c.k});
    ASSERT_TRUE(moe_route_cpu({logits.tensor, ids.tensor, tw.tensor, c.renormalize,
                               Tensor::view(const_cast<float*>(xf.data()), DType::kF32, {c.n, c.hidden}),
                               Tensor::view(const_cast<float*>(wf.data()), DType::kF32, {c.experts, c.hidden})}).ok());
    DeviceTensor dx = upload(x.tensor), dw = upload(w.tensor);
    std::vector<float> same_order;  // the logits of the first row that sums in the block-per-token order
    for (const auto& v : moe_route_cuda_variants()) {
      if (v.x != DType::kBF16 || (v.needs_clusters && major < 9)) continue;
      if (v.needs_clusters && c.n > v.max_tokens) continue;  // the cluster row refuses larger batches
      SCOPED_TRACE(std::string(v.name) + ": n=" + std::to_string(c.n) + " experts=" + std::to_string(c.experts) +
                   " hidden=" + std::to_string(c.hidden));
      DeviceTensor dl = make(DType::kF32, {c.n, c.experts});
      DeviceTensor dids = make(DType::kInt32, {c.n, c.k}), dtw = make(DType::kF32, {c.n, c.k});
      const Status st = v.launch({dl.tensor, dids.tensor, dtw.tensor, c.renormalize, dx.tensor, dw.tensor}, nullptr);
      ASSERT_TRUE(st.ok()) << st.to_string();
      const std::vector<float> gl = download_as<float>(dl.tensor);
      EXPECT_LT(scaled_error(gl, test::to_f32(logits.tensor)), 1e-5);
      if (!v.needs_clusters) {
        if (same_order.empty()) same_order = gl;
        else EXPECT_TRUE(std::memcmp(same_order.data(), gl.data(), gl.size() * sizeof(float)) == 0) << "logits differ in bits";
      }
      const auto gid = download_as<int32_t>(dids.tensor);
      const auto gw = download_as<float>(dtw.tensor);
      int64_t checked = 0;
      for (int64_t t = 0; t < c.n; ++t) {
        std::vector<float> l(logits.tensor.ptr<float>() + t * c.experts, logits.tensor.ptr<float>() + (t + 1) * c.experts);
        std::sort(l.begin(), l.end(), std::greater<float>());
        if (c.k < c.experts && l[static_cast<size_t>(c.k - 1)] - l[static_cast<size_t>(c.k)] < 1e-4f) continue;
        ++checked;
        for (int64_t j = 0; j < c.k; ++j) {
          EXPECT_EQ(gid[static_cast<size_t>(t * c.k + j)], ids.tensor.ptr<int32_t>()[t * c.k + j]) << "token " << t;
          EXPECT_NEAR(gw[static_cast<size_t>(t * c.k + j)], tw.tensor.ptr<float>()[t * c.k + j], 1e-4) << "token " << t;
        }
      }
      EXPECT_GT(checked, c.n / 2) << "too many near-ties to check the routing";
    }
    // The dispatcher (whichever row it picks for this batch: block per token, or 8 tokens a block
    // from its min_tokens on) gives the same bits.
    DeviceTensor dl = make(DType::kF32, {c.n, c.experts});
    DeviceTensor dids = make(DType::kInt32, {c.n, c.k}), dtw = make(DType::kF32, {c.n, c.k});
    const Status st = moe_route_cuda({dl.tensor, dids.tensor, dtw.tensor, c.renormalize, dx.tensor, dw.tensor}, nullptr);
    ASSERT_TRUE(st.ok()) << st.to_string();
    const std::vector<float> gl = download_as<float>(dl.tensor);
    ASSERT_EQ(gl.size(), same_order.size());
    EXPECT_TRUE(std::memcmp(same_order.data(), gl.data(), gl.size() * sizeof(float)) == 0) << "dispatch: n=" << c.n;
  }
  // Wrong shapes are refused with an error, not launched.
  for (const auto& v : moe_route_cuda_variants()) {
    if (v.x != DType::kBF16 || (v.needs_clusters && major < 9)) continue;
    DeviceTensor dx = make(DType::kBF16, {4, 64}), dw = make(DType::kBF16, {8, 65});
    DeviceTensor dl = make(DType::kF32, {4, 8}), dids = make(DType::kInt32, {4, 2}), dtw = make(DType::kF32, {4, 2});
    EXPECT_FALSE(v.launch({dl.tensor, dids.tensor, dtw.tensor, true, dx.tensor, dw.tensor}, nullptr).ok()) << v.name;
  }
}

// A NaN logits row (NaN activations) still yields expert ids in range, as the CPU's.
TEST(MoeRouteCuda, NanLogitsStayInRange) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::vector<float> logits(2 * 8, 0.5f);
  for (int e = 0; e < 8; ++e) logits[static_cast<size_t>(e)] = std::nanf("");
  HostTensor ids = HostTensor::zeros(DType::kInt32, {2, 2}), w = HostTensor::zeros(DType::kF32, {2, 2});
  const Tensor hl = Tensor::view(logits.data(), DType::kF32, {2, 8});
  ASSERT_TRUE(moe_route_cpu({hl, ids.tensor, w.tensor, true}).ok());
  DeviceTensor dl = upload(hl), dids = make(DType::kInt32, {2, 2}), dw = make(DType::kF32, {2, 2});
  ASSERT_TRUE(moe_route_cuda({dl.tensor, dids.tensor, dw.tensor, true}, nullptr).ok());
  const auto gid = download_as<int32_t>(dids.tensor);
  for (size_t i = 0; i < gid.size(); ++i) {
    EXPECT_GE(gid[i], 0);
    EXPECT_LT(gid[i], 8);
    EXPECT_EQ(gid[i], ids.tensor.ptr<int32_t>()[i]) << i;
  }
}

// align_rows 1 (offsets = prefix sums of the counts) and 4 / 8 (each expert's first row a multiple
// of it, the gap rows -1 in permuted_src and zero in x_permuted).
TEST(MoePermuteCuda, GroupsStablyAndUnpermutes) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(32);
  struct Case { int64_t n, experts, k, hidden, align; };
  const Case cases[] = {{1, 8, 2, 64, 1},       {33, 8, 2, 576, 1}, {700, 64, 6, 128, 1}, {3000, 256, 8, 64, 1},
                        {33, 8, 2, 576, 4},     {1, 8, 2, 64, 4},   {700, 64, 6, 128, 8}, {257, 8, 2, 64, 4}};
  for (const auto& v : moe_cuda_variants()) {
    for (const auto& c : cases) {
      SCOPED_TRACE("n=" + std::to_string(c.n) + " experts=" + std::to_string(c.experts) + " k=" + std::to_string(c.k) +
                   " align=" + std::to_string(c.align));
      const int64_t a = c.n * c.k, rows = moe_permuted_rows(a, c.experts, c.align);
      // Distinct experts per token, as routing gives; skewed so that some experts get no rows.
      std::vector<int32_t> ids(static_cast<size_t>(a));
      for (int64_t t = 0; t < c.n; ++t) {
        std::vector<int32_t> pool(static_cast<size_t>(c.experts));
        for (int32_t e = 0; e < c.experts; ++e) pool[static_cast<size_t>(e)] = e;
        std::shuffle(pool.begin(), pool.end() - (c.experts > 4 ? 2 : 0), rng);  // last two experts never chosen
        std::copy_n(pool.begin(), c.k, ids.begin() + t * c.k);
      }
      HostTensor x = test::random_tensor(v.act, {c.n, c.hidden}, rng);
      DeviceTensor dids = upload(Tensor::view(ids.data(), DType::kInt32, {c.n, c.k})), dx = upload(x.tensor);
      DeviceTensor doff = make(DType::kInt32, {c.experts + 1}), dsrc = make(DType::kInt32, {rows}), dinv = make(DType::kInt32, {a});
      DeviceTensor dxp = make(v.act, {rows, c.hidden});
      ASSERT_TRUE(fill_bytes(dxp.tensor, 0xff).ok());  // gap rows must come out zero
      MoePermuteArgs pa{dids.tensor, dx.tensor, c.experts, doff.tensor, dsrc.tensor, dinv.tensor, dxp.tensor};
      pa.align_rows = c.align;
      const Status st = moe_permute_cuda(pa, nullptr);
      ASSERT_TRUE(st.ok()) << st.to_string();
      const auto off = download_as<int32_t>(doff.tensor), src = download_as<int32_t>(dsrc.tensor), inv = download_as<int32_t>(dinv.tensor);
      // Offsets are the (aligned) prefix sums of the counts; rows of an expert list its assignments
      // in order, then -1 up to the next expert's first row.
      std::vector<int32_t> want_src;
      for (int32_t e = 0; e < c.experts; ++e) {
        while (e > 0 && want_src.size() % static_cast<size_t>(c.align) != 0) want_src.push_back(-1);
        EXPECT_EQ(off[static_cast<size_t>(e)], static_cast<int32_t>(want_src.size())) << "expert " << e;
        for (int64_t i = 0; i < a; ++i) if (ids[static_cast<size_t>(i)] == e) want_src.push_back(static_cast<int32_t>(i));
      }
      ASSERT_LE(static_cast<int64_t>(want_src.size()), rows);
      EXPECT_EQ(off.back(), static_cast<int32_t>(want_src.size()));
      EXPECT_EQ(std::vector<int32_t>(src.begin(), src.begin() + static_cast<int64_t>(want_src.size())), want_src);
      for (int64_t i = 0; i < a; ++i) ASSERT_EQ(src[static_cast<size_t>(inv[static_cast<size_t>(i)])], i);
      const auto xp = download_as<uint16_t>(dxp.tensor);
      for (int64_t r = 0; r < static_cast<int64_t>(want_src.size()); ++r) {
        const int32_t s = src[static_cast<size_t>(r)];
        if (s < 0)
          ASSERT_TRUE(std::all_of(xp.begin() + r * c.hidden, xp.begin() + (r + 1) * c.hidden, [](uint16_t b) { return b == 0; }))
              << "gap row " << r;
        else
          ASSERT_TRUE(std::equal(xp.begin() + r * c.hidden, xp.begin() + (r + 1) * c.hidden,
                                 x.tensor.ptr<uint16_t>() + (s / c.k) * c.hidden)) << "row " << r;
      }

      // Un-permute: out[t] = sum_j w[t, j] * y[inv[t * k + j]].
      HostTensor y = test::random_tensor(v.act, {rows, c.hidden}, rng);
      HostTensor w = test::random_tensor(DType::kF32, {c.n, c.k}, rng);
      DeviceTensor dy = upload(y.tensor), dw = upload(w.tensor), dout = make(v.act, {c.n, c.hidden});
      const Status st2 = moe_unpermute_cuda({dy.tensor, dw.tensor, dinv.tensor, dout.tensor}, nullptr);
      ASSERT_TRUE(st2.ok()) << st2.to_string();
      const std::vector<float> yf = test::to_f32(y.tensor);
      std::vector<float> ref(static_cast<size_t>(c.n * c.hidden), 0.f);
      for (int64_t t = 0; t < c.n; ++t)
        for (int64_t j = 0; j < c.k; ++j) {
          const int64_t row = inv[static_cast<size_t>(t * c.k + j)];
          const float wt = w.tensor.ptr<float>()[t * c.k + j];
          for (int64_t i = 0; i < c.hidden; ++i) ref[static_cast<size_t>(t * c.hidden + i)] += wt * yf[static_cast<size_t>(row * c.hidden + i)];
        }
      auto out = to_host(dout.tensor, DType::kF32);
      ASSERT_TRUE(out.ok());
      EXPECT_LT(scaled_error(test::to_f32(out->tensor), ref), 1e-2);
    }
  }
  // align_rows not a power of two (or past 64): an error.
  DeviceTensor dids = make(DType::kInt32, {1, 2}), dx = make(DType::kBF16, {1, 64}), doff = make(DType::kInt32, {9});
  DeviceTensor dsrc = make(DType::kInt32, {2}), dinv = make(DType::kInt32, {2}), dxp = make(DType::kBF16, {2, 64});
  MoePermuteArgs bad{dids.tensor, dx.tensor, 8, doff.tensor, dsrc.tensor, dinv.tensor, dxp.tensor};
  bad.align_rows = 3;
  EXPECT_EQ(moe_permute_cuda(bad, nullptr).code(), StatusCode::kInvalidArgument);
}

// The whole expert block on the GPU against the CPU composition of models/mixtral.cc.
TEST(MoeBlockCuda, MatchesCpuComposition) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(33);
  const int64_t hidden = 256, inter = 384, experts = 8, k = 2;
  auto gemm = Gemm::create();
  ASSERT_TRUE(gemm.ok());
  std::vector<HostTensor> gate_up, down;
  std::vector<DeviceTensor> dgate_up, ddown;
  for (int64_t e = 0; e < experts; ++e) {
    gate_up.push_back(test::random_tensor(DType::kBF16, {2 * inter, hidden}, rng, 0.08f));
    down.push_back(test::random_tensor(DType::kBF16, {hidden, inter}, rng, 0.06f));
    dgate_up.push_back(upload(gate_up.back().tensor));
    ddown.push_back(upload(down.back().tensor));
  }
  std::vector<Tensor> gu_views, down_views;
  for (int64_t e = 0; e < experts; ++e) { gu_views.push_back(dgate_up[static_cast<size_t>(e)].tensor); down_views.push_back(ddown[static_cast<size_t>(e)].tensor); }
  for (int64_t n : {1, 5, 64, 301}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    HostTensor h = test::random_tensor(DType::kBF16, {n, hidden}, rng);
    HostTensor logits = test::random_tensor(DType::kF32, {n, experts}, rng, 2.0f);
    // GPU.
    DeviceTensor dh = upload(h.tensor), dl = upload(logits.tensor);
    DeviceTensor dids = make(DType::kInt32, {n, k}), dw = make(DType::kF32, {n, k});
    DeviceTensor doff = make(DType::kInt32, {experts + 1}), dsrc = make(DType::kInt32, {n * k}), dinv = make(DType::kInt32, {n * k});
    DeviceTensor dxp = make(DType::kBF16, {n * k, hidden}), dgu = make(DType::kBF16, {n * k, 2 * inter});
    DeviceTensor dact = make(DType::kBF16, {n * k, inter}), dyp = make(DType::kBF16, {n * k, hidden});
    DeviceTensor dout = make(DType::kBF16, {n, hidden});
    ASSERT_TRUE(moe_route_cuda({dl.tensor, dids.tensor, dw.tensor, true}, nullptr).ok());
    ASSERT_TRUE(moe_permute_cuda({dids.tensor, dh.tensor, experts, doff.tensor, dsrc.tensor, dinv.tensor, dxp.tensor}, nullptr).ok());
    auto off = moe_offsets_to_host(doff.tensor, nullptr);
    ASSERT_TRUE(off.ok());
    const Status st = moe_grouped_gemm_cuda(*gemm, {dxp.tensor, gu_views, *off, dgu.tensor}, nullptr);
    ASSERT_TRUE(st.ok()) << st.to_string();
    ASSERT_TRUE(silu_mul_cuda({dgu.tensor, dact.tensor}, nullptr).ok());
    const Status st2 = moe_grouped_gemm_cuda(*gemm, {dact.tensor, down_views, *off, dyp.tensor}, nullptr);
    ASSERT_TRUE(st2.ok()) << st2.to_string();
    ASSERT_TRUE(moe_unpermute_cuda({dyp.tensor, dw.tensor, dinv.tensor, dout.tensor}, nullptr).ok());
    auto got = to_host(dout.tensor, DType::kF32);
    ASSERT_TRUE(got.ok());

    // CPU: route, then per expert gate_up -> silu_mul -> down, accumulated with the gates.
    HostTensor ids = HostTensor::zeros(DType::kInt32, {n, k}), w = HostTensor::zeros(DType::kF32, {n, k});
    ASSERT_TRUE(moe_route_cpu({logits.tensor, ids.tensor, w.tensor, true}).ok());
    const std::vector<float> hf = test::to_f32(h.tensor);
    std::vector<float> ref(static_cast<size_t>(n * hidden), 0.f);
    for (int64_t i = 0; i < n * k; ++i) {
      const int32_t e = ids.tensor.ptr<int32_t>()[i];
      const int64_t t = i / k;
      HostTensor x = HostTensor::zeros(DType::kF32, {1, hidden}), gu = HostTensor::zeros(DType::kF32, {1, 2 * inter});
      HostTensor act = HostTensor::zeros(DType::kF32, {1, inter}), y = HostTensor::zeros(DType::kF32, {1, hidden});
      std::copy_n(hf.begin() + t * hidden, hidden, x.tensor.ptr<float>());
      ASSERT_TRUE(linear_cpu({x.tensor, gate_up[static_cast<size_t>(e)].tensor, {}, gu.tensor}).ok());
      ASSERT_TRUE(silu_mul_cpu({gu.tensor, act.tensor}).ok());
      ASSERT_TRUE(linear_cpu({act.tensor, down[static_cast<size_t>(e)].tensor, {}, y.tensor}).ok());
      for (int64_t j = 0; j < hidden; ++j) ref[static_cast<size_t>(t * hidden + j)] += w.tensor.ptr<float>()[i] * y.tensor.ptr<float>()[j];
    }
    // Three bf16 roundings of intermediates on the GPU path: a looser bound than one kernel's.
    EXPECT_LT(scaled_error(test::to_f32(got->tensor), ref), 2e-2);
  }
}

// The fp8 prefill expert block as the model runs it (rows aligned to 4 per expert, x quantized once
// for all experts, the scale slices handed to cuBLASLt as they are) against the same block with
// unaligned rows and x quantized inside each expert's GEMM: the same fp8 bits of x go in, so the
// outputs agree up to the GEMMs' summation order.
TEST(MoeBlockCuda, AlignedFp8MatchesPerExpertQuantization) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(35);
  const int64_t hidden = 256, inter = 384, experts = 8, k = 2;
  auto gemm = Gemm::create({.skinny_max_m_fp8 = 0});  // cuBLASLt for every expert, as for large steps
  ASSERT_TRUE(gemm.ok());
  std::vector<DeviceTensor> dw, ds;
  std::vector<Tensor> gu_w, gu_s, dn_w, dn_s;
  for (int64_t e = 0; e < 2 * experts; ++e) {
    const bool up = e < experts;
    HostTensor f = test::random_tensor(DType::kF32, {up ? 2 * inter : hidden, up ? hidden : inter}, rng, 0.08f);
    auto q = quantize_fp8_weights_cpu(f.tensor, false);
    ASSERT_TRUE(q.ok());
    dw.push_back(upload(q->q.tensor));
    ds.push_back(upload(q->scale.tensor));
  }
  for (int64_t e = 0; e < 2 * experts; ++e) {
    (e < experts ? gu_w : dn_w).push_back(dw[static_cast<size_t>(e)].tensor);
    (e < experts ? gu_s : dn_s).push_back(ds[static_cast<size_t>(e)].tensor);
  }
  for (int64_t n : {3, 77, 301}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    DeviceTensor dh = upload(test::random_tensor(DType::kBF16, {n, hidden}, rng).tensor);
    DeviceTensor dl = upload(test::random_tensor(DType::kF32, {n, experts}, rng, 2.0f).tensor);
    DeviceTensor dids = make(DType::kInt32, {n, k}), dwt = make(DType::kF32, {n, k});
    ASSERT_TRUE(moe_route_cuda({dl.tensor, dids.tensor, dwt.tensor, true}, nullptr).ok());
    std::vector<std::vector<float>> outs;
    for (int64_t align : {1, 4}) {
      const int64_t rows_max = moe_permuted_rows(n * k, experts, align);
      DeviceTensor doff = make(DType::kInt32, {experts + 1}), dsrc = make(DType::kInt32, {rows_max}), dinv = make(DType::kInt32, {n * k});
      DeviceTensor dxp = make(DType::kBF16, {rows_max, hidden}), dout = make(DType::kBF16, {n, hidden});
      ASSERT_TRUE(moe_permute_cuda({dids.tensor, dh.tensor, experts, doff.tensor, dsrc.tensor, dinv.tensor, dxp.tensor, align}, nullptr).ok());
      auto off = moe_offsets_to_host(doff.tensor, nullptr);
      ASSERT_TRUE(off.ok());
      const int64_t rows = off->back();
      for (int64_t e = 0; align > 1 && e < experts; ++e) EXPECT_EQ((*off)[static_cast<size_t>(e)] % align, 0);
      DeviceTensor dgu = make(DType::kBF16, {rows, 2 * inter}), dyp = make(DType::kBF16, {rows, hidden});
      DeviceTensor dq = make(DType::kFp8E4M3, {rows, std::max(hidden, inter)}), dsc = make(DType::kF32, {rows});
      const Tensor xq = Tensor::view(dq.tensor.data, DType::kFp8E4M3, {rows, hidden}, Device::kCuda);
      const Tensor aq = Tensor::view(dq.tensor.data, DType::kFp8E4M3, {rows, inter}, Device::kCuda);
      if (align == 1) {  // x bf16: each expert's GEMM quantizes its own rows
        ASSERT_TRUE(moe_grouped_gemm_cuda(*gemm, {dxp.tensor, gu_w, *off, dgu.tensor, gu_s}, nullptr).ok());
      } else {
        ASSERT_TRUE(quantize_fp8_cuda({dxp.tensor.slice0(0, rows), xq, dsc.tensor}, nullptr).ok());
        const Status st = moe_grouped_gemm_cuda(*gemm, {xq, gu_w, *off, dgu.tensor, gu_s, dsc.tensor}, nullptr);
        ASSERT_TRUE(st.ok()) << st.to_string();
      }
      ASSERT_TRUE(silu_mul_fp8_cuda({dgu.tensor, aq, dsc.tensor}, nullptr).ok());
      const Status st2 = moe_grouped_gemm_cuda(*gemm, {aq, dn_w, *off, dyp.tensor, dn_s, dsc.tensor}, nullptr);
      ASSERT_TRUE(st2.ok()) << st2.to_string();
      ASSERT_TRUE(moe_unpermute_cuda({dyp.tensor, dwt.tensor, dinv.tensor, dout.tensor}, nullptr).ok());
      auto got = to_host(dout.tensor, DType::kF32);
      ASSERT_TRUE(got.ok());
      outs.push_back(test::to_f32(got->tensor));
      EXPECT_TRUE(std::all_of(outs.back().begin(), outs.back().end(), [](float v) { return std::isfinite(v); }));
    }
    EXPECT_LT(scaled_error(outs[1], outs[0]), 1e-2);
  }
}

}  // namespace
}  // namespace kiln
