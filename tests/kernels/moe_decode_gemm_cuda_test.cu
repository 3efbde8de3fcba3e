// The MoE decode GEMM (moe_decode_gemm_cuda) against a loop of linear_cpu per slot, on fresh
// random inputs: bf16 experts and fp8 experts with per-channel scales, x shared per token or one
// row per slot, ids with repeats (several slots on one expert, up to all 64 slots on one), odd n;
// graph capture with the ids changed between replays; argument errors; every row of the variant
// table (fp8 widened to bf16 or to f16, or x quantized per token to e4m3 with a workspace), the
// f16 row also on activations past f16's range (clamped to +-65504: finite, equal to the
// reference on the clamped x); up to kMoeDecodeMaxSlots = 512 slots. Skipped without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/cuda/common/pdl.cuh"
#include "kiln/kernels/cuda/moe/moe_decode_gemm_variants.h"
#include "kiln/kernels/linear.h"
#include "kiln/kernels/moe_cuda.h"
#include "kiln/kernels/quantize.h"
#include "tests/kernels/kernel_test_util.h"

namespace kiln {
namespace {

using test::scaled_error;

struct Experts {
  std::vector<HostTensor> w, scale;  // host copies: [n, k] bf16 | fp8, [n] f32 (fp8)
  std::vector<DeviceTensor> dw, dscale;
  DeviceTensor ptrs, scale_ptrs;  // [E] int64
};

Experts make_experts(DType wt, int64_t num_experts, int64_t n, int64_t k, std::mt19937& rng) {
  Experts r;
  std::vector<int64_t> wp, sp;
  for (int64_t e = 0; e < num_experts; ++e) {
    if (wt == DType::kBF16) {
      r.w.push_back(test::random_tensor(DType::kBF16, {n, k}, rng, 0.05f));
    } else {
      HostTensor f = test::random_tensor(DType::kF32, {n, k}, rng, 0.05f);
      auto q = quantize_fp8_weights_cpu(f.tensor, false);
      EXPECT_TRUE(q.ok());
      r.w.push_back(std::move(q->q));
      r.scale.push_back(std::move(q->scale));
    }
    auto dw = to_device(r.w.back().tensor);
    EXPECT_TRUE(dw.ok());
    r.dw.push_back(std::move(dw).value());
    wp.push_back(reinterpret_cast<int64_t>(r.dw.back().tensor.data));
    if (wt != DType::kBF16) {
      auto ds = to_device(r.scale.back().tensor);
      EXPECT_TRUE(ds.ok());
      r.dscale.push_back(std::move(ds).value());
      sp.push_back(reinterpret_cast<int64_t>(r.dscale.back().tensor.data));
    }
  }
  auto p = to_device(Tensor::view(wp.data(), DType::kInt64, {num_experts}));
  EXPECT_TRUE(p.ok());
  r.ptrs = std::move(p).value();
  if (!sp.empty()) {
    auto s = to_device(Tensor::view(sp.data(), DType::kInt64, {num_experts}));
    EXPECT_TRUE(s.ok());
    r.scale_ptrs = std::move(s).value();
  }
  return r;
}

// The reference: y[s] = x[token(s) or s] @ W_{ids[s]}^T (* scale), linear_cpu per slot, f32.
std::vector<float> reference(const Experts& E, const HostTensor& x, const std::vector<int32_t>& ids, int64_t top_k,
                             bool x_per_slot, int64_t n, int64_t k) {
  const std::vector<float> xf = test::to_f32(x.tensor);
  std::vector<float> y(ids.size() * static_cast<size_t>(n));
  for (size_t s = 0; s < ids.size(); ++s) {
    const int64_t row = x_per_slot ? static_cast<int64_t>(s) : static_cast<int64_t>(s) / top_k;
    if (ids[s] < 0 || ids[s] >= static_cast<int32_t>(E.w.size())) continue;  // out of range: zeros
    const size_t e = static_cast<size_t>(ids[s]);
    const Status st = linear_cpu({Tensor::view(const_cast<float*>(xf.data()) + row * k, DType::kF32, {1, k}), E.w[e].tensor, {},
                                  Tensor::view(y.data() + s * static_cast<size_t>(n), DType::kF32, {1, n}),
                                  E.scale.empty() ? Tensor{} : E.scale[e].tensor});
    EXPECT_TRUE(st.ok()) << st.to_string();
  }
  return y;
}

struct MoeCase {
  int64_t t, top_k, num_experts, n, k;
  bool x_per_slot;
  // 0: random distinct per token, 1: random with repeats inside a token, 2: every slot on one
  // expert, 3: as 0 with every fifth slot's id out of range (-1, num_experts, 1000: zeros)
  int pattern;
};

std::vector<int32_t> make_ids(const MoeCase& c, std::mt19937& rng) {
  std::vector<int32_t> ids(static_cast<size_t>(c.t * c.top_k));
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(c.num_experts) - 1);
  for (int64_t i = 0; i < c.t; ++i) {
    std::vector<int32_t> perm(static_cast<size_t>(c.num_experts));
    for (int32_t e = 0; e < c.num_experts; ++e) perm[static_cast<size_t>(e)] = e;
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int64_t j = 0; j < c.top_k; ++j) {
      int32_t& id = ids[static_cast<size_t>(i * c.top_k + j)];
      id = c.pattern == 0 || c.pattern == 3 ? perm[static_cast<size_t>(j % c.num_experts)] : c.pattern == 1 ? pick(rng) : 3 % c.num_experts;
    }
  }
  if (c.pattern == 3)
    for (size_t s = 4; s < ids.size(); s += 5) ids[s] = s % 3 == 0 ? -1 : s % 3 == 1 ? static_cast<int32_t>(c.num_experts) : 1000;
  return ids;
}

// Whether the call runs an e4m3 row (x quantized per token): the variant's, or for variant -1
// the preferred e4m3 row of wt when a workspace is given.
bool runs_e4m3(DType wt, int variant, bool workspace) {
  const auto v = moe_decode_gemm_variants();
  if (variant >= 0) return v[static_cast<size_t>(variant)].e4m3;
  return workspace && std::any_of(v.begin(), v.end(), [&](const MoeDecodeGemmVariant& r) { return r.w == wt && r.preferred && r.e4m3; });
}

// x as an e4m3 row sees it: rounded per row by quantize_fp8_cpu (the fp8 prefill path's arithmetic).
HostTensor round_per_token(const HostTensor& x) {
  const int64_t rows = x.tensor.shape[0], k = x.tensor.shape[1];
  HostTensor xf = HostTensor::zeros(DType::kF32, {rows, k});
  const std::vector<float> v = test::to_f32(x.tensor);
  std::copy(v.begin(), v.end(), xf.tensor.ptr<float>());
  HostTensor q = HostTensor::zeros(DType::kFp8E4M3, {rows, k}), s = HostTensor::zeros(DType::kF32, {rows});
  EXPECT_TRUE(quantize_fp8_cpu({xf.tensor, q.tensor, s.tensor}).ok());
  EXPECT_TRUE(dequantize_fp8_weights_cpu(q.tensor, s.tensor, xf.tensor).ok());
  return xf;
}

// variant: an index into moe_decode_gemm_variants() (-1: moe_decode_gemm_cuda's choice);
// x_scale: the activations' standard deviation (the f16 rows clamp x to +-65504; so does the
// reference); workspace: pass MoeDecodeGemmArgs::workspace (the e4m3 rows need it).
void check_case(DType wt, const MoeCase& c, std::mt19937& rng, int variant = -1, float x_scale = 1.f, bool workspace = true) {
  SCOPED_TRACE("w=" + std::string(dtype_name(wt)) + " variant=" + std::to_string(variant) + " x_scale=" + std::to_string(x_scale) + " t=" + std::to_string(c.t) + " top_k=" + std::to_string(c.top_k) +
               " E=" + std::to_string(c.num_experts) + " n=" + std::to_string(c.n) + " k=" + std::to_string(c.k) +
               " x_per_slot=" + std::to_string(c.x_per_slot) + " pattern=" + std::to_string(c.pattern));
  const Experts E = make_experts(wt, c.num_experts, c.n, c.k, rng);
  const int64_t slots = c.t * c.top_k;
  HostTensor x = test::random_tensor(DType::kBF16, {c.x_per_slot ? slots : c.t, c.k}, rng, x_scale);
  const std::vector<int32_t> ids = make_ids(c, rng);
  if (x.tensor.shape[0] >= 3) {  // a zero row and a row with one huge value (the e4m3 scales' edge cases)
    uint16_t* xb = x.tensor.ptr<uint16_t>();
    std::fill_n(xb + c.k, c.k, uint16_t{0});
    xb[2 * c.k + c.k / 3] = 0x46EA;  // 29952
  }
  auto dx = to_device(x.tensor);
  auto dids = to_device(Tensor::view(const_cast<int32_t*>(ids.data()), DType::kInt32, {c.t, c.top_k}));
  auto dy = DeviceTensor::empty(DType::kBF16, {slots, c.n});
  auto dws = DeviceTensor::empty(DType::kInt8, {moe_decode_gemm_workspace_bytes(x.tensor.shape[0], c.k)});
  ASSERT_TRUE(dx.ok() && dids.ok() && dy.ok() && dws.ok());
  ASSERT_TRUE(fill_bytes(dy->tensor, 0xff).ok());
  MoeDecodeGemmArgs args{dx->tensor, dids->tensor, E.ptrs.tensor, E.scale_ptrs.tensor, wt, c.n, dy->tensor};
  if (workspace) args.workspace = dws->tensor;
  const Status st = variant < 0 ? moe_decode_gemm_cuda(args, nullptr) : moe_decode_gemm_cuda_variant(args, variant, nullptr);
  ASSERT_TRUE(st.ok()) << st.to_string();
  auto y = to_host(dy->tensor, DType::kF32);
  ASSERT_TRUE(y.ok());
  const bool e4m3 = runs_e4m3(wt, variant, workspace);
  SCOPED_TRACE(e4m3 ? "x per token e4m3" : "x bf16");
  HostTensor xc = HostTensor::zeros(DType::kF32, {x.tensor.shape[0], c.k});  // x as the kernel reads it
  if (e4m3) {
    xc = round_per_token(x);
  } else {
    const std::vector<float> xf = test::to_f32(x.tensor);
    for (size_t i = 0; i < xf.size(); ++i) xc.tensor.ptr<float>()[i] = std::clamp(xf[i], -65504.f, 65504.f);
  }
  const std::vector<float> yf = test::to_f32(y->tensor);
  EXPECT_TRUE(std::all_of(yf.begin(), yf.end(), [](float e) { return std::isfinite(e); }));
  // The clamp changes nothing for |x| <= 65504 (every bf16 test input at x_scale 1); at 3e4 a few
  // percent of the normal samples are past it already. e4m3: the reference rounds x alike, so
  // only the summation order and y's bf16 rounding (2^-9) differ.
  EXPECT_LT(scaled_error(yf, reference(E, xc, ids, c.top_k, c.x_per_slot, c.n, c.k)), e4m3 ? 4e-3 : 1e-2);
}

TEST(MoeDecodeGemmCuda, MatchesPerSlotReference) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(51);
  const MoeCase cases[] = {
      {1, 2, 8, 1000, 1024, false, 0},  {8, 2, 8, 2048, 512, false, 0}, {8, 2, 4, 777, 2064, true, 1},
      {32, 2, 8, 520, 256, false, 0},   {16, 4, 8, 300, 512, true, 1},  {64, 1, 8, 256, 512, false, 2},
      {20, 3, 16, 129, 4096, false, 1}, {3, 2, 2, 64, 48, false, 1},
      // Serving batches up to kMoeDecodeMaxSlots (512 slots): 64, 128 and 256 tokens x top-2, also
      // all on one expert (passes of 32 / 64).
      {64, 2, 8, 264, 1040, false, 0}, {64, 2, 8, 100, 512, true, 2}, {48, 2, 8, 130, 2064, true, 1},
      {128, 2, 8, 200, 1024, false, 0}, {128, 2, 8, 72, 512, true, 2}, {100, 2, 8, 136, 1040, false, 1},
      {256, 2, 8, 136, 1040, false, 0}, {256, 2, 8, 64, 512, true, 2}, {200, 2, 8, 72, 512, false, 3},
      // From 208 tokens the 96-slot rows (two warpgroups where k >= 8192).
      {224, 2, 8, 200, 1024, false, 0}, {224, 2, 8, 72, 8192, false, 0},
      // Ids out of range (zeros): a group of their own after the valid ones, or, with every expert
      // picked as well, the last row of CTAs' extra slots.
      {2, 4, 8, 200, 512, false, 3}, {40, 2, 8, 130, 1024, false, 3}, {128, 2, 8, 64, 256, true, 3},
      // At most 8 tokens on grids that are not sparse (the few_tokens row), also with repeated
      // experts inside a token (more than 8 slots on one expert: passes of 8).
      {1, 2, 8, 8192, 256, false, 0}, {4, 2, 8, 4096, 512, false, 1}, {8, 4, 8, 2048, 384, false, 2},
  };
  for (DType wt : {DType::kBF16, DType::kFp8E4M3})
    for (const MoeCase& c : cases) {
      check_case(wt, c, rng);
      if (wt == DType::kFp8E4M3) check_case(wt, c, rng, -1, 1.f, false);  // no workspace: x stays bf16
    }
}

// Every row of the variant table (not only the preferred ones), and the f16 widening on large
// activations: standard deviation 3e4 (mostly exact in f16) and 1e5 (mostly clamped to +-65504,
// in the kernel and in the reference).
TEST(MoeDecodeGemmCuda, EveryVariantMatches) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(54);
  // The last four, for the wide rows: 50-80 slots an expert (256 tokens on 8), 81-96 (176 on 4),
  // ~128 (repeats on 2 experts) and ~133 (3 experts): passes of 96 (one-byte rows take at most 256
  // slots).
  const MoeCase cases[] = {{1, 2, 8, 1000, 1024, false, 0}, {8, 2, 8, 777, 2064, true, 1}, {20, 3, 16, 129, 512, false, 1},
                           {64, 2, 8, 72, 1008, true, 1},   {128, 2, 8, 72, 512, false, 3}, {256, 2, 8, 72, 512, false, 0},
                           {176, 2, 4, 72, 512, false, 0},  {128, 2, 2, 72, 512, true, 1},  {200, 2, 3, 64, 256, false, 0}};
  const auto variants = moe_decode_gemm_variants();
  for (int vi = 0; vi < static_cast<int>(variants.size()); ++vi) {
    const MoeDecodeGemmVariant& v = variants[static_cast<size_t>(vi)];
    for (const MoeCase& c : cases) {
      if (c.t * c.top_k > v.max_slots) continue;
      check_case(v.w, c, rng, vi);
      if (v.f16)
        for (float x_scale : {3e4f, 1e5f}) check_case(v.w, c, rng, vi, x_scale);
    }
  }
}

// Captured once, replayed with different ids written into the same device tensor: the grouping
// happens on the device each replay.
TEST(MoeDecodeGemmCuda, GraphReplayFollowsTheIds) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(52);
  const MoeCase c{8, 2, 8, 1024, 1024, false, 0};
  const DType wt = DType::kFp8E4M3;
  const Experts E = make_experts(wt, c.num_experts, c.n, c.k, rng);
  HostTensor x = test::random_tensor(DType::kBF16, {c.t, c.k}, rng);
  auto dx = to_device(x.tensor);
  auto dids = DeviceTensor::empty(DType::kInt32, {c.t, c.top_k});
  auto dy = DeviceTensor::empty(DType::kBF16, {c.t * c.top_k, c.n});
  ASSERT_TRUE(dx.ok() && dids.ok() && dy.ok());
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  auto dws = DeviceTensor::empty(DType::kInt8, {moe_decode_gemm_workspace_bytes(c.t, c.k)});
  ASSERT_TRUE(dws.ok());
  const MoeDecodeGemmArgs args{dx->tensor, dids->tensor, E.ptrs.tensor, E.scale_ptrs.tensor, wt, c.n, dy->tensor, dws->tensor};
  const HostTensor x_ref = runs_e4m3(wt, -1, true) ? round_per_token(x) : HostTensor{};
  ASSERT_TRUE(moe_decode_gemm_cuda(args, s).ok());  // first call outside the capture (attributes, occupancy)
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  const Status st = moe_decode_gemm_cuda(args, s);
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  ASSERT_TRUE(st.ok()) << st.to_string();
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int r = 0; r < 3; ++r) {
    MoeCase cr = c;
    cr.pattern = r == 2 ? 2 : r;
    const std::vector<int32_t> ids = make_ids(cr, rng);
    ASSERT_EQ(cudaMemcpyAsync(dids->tensor.data, ids.data(), ids.size() * 4, cudaMemcpyHostToDevice, s), cudaSuccess);
    ASSERT_TRUE(fill_bytes(dy->tensor, 0xff, s).ok());
    ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    auto y = to_host(dy->tensor, DType::kF32);
    ASSERT_TRUE(y.ok());
    EXPECT_LT(scaled_error(test::to_f32(y->tensor), reference(E, x_ref.tensor.empty() ? x : x_ref, ids, c.top_k, false, c.n, c.k)),
              1e-2) << "replay " << r;
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
}

// x already quantized per row (x fp8 + x_scale, as rmsnorm_cuda's out_q or silu_mul_fp8_cuda
// write it) gives the bits of the e4m3 rows' own pre-pass on the bf16 x; with ids_ready (the
// weight tiles requested before the wait) too. Every e4m3 row, x per token and per slot.
TEST(MoeDecodeGemmCuda, PreQuantizedXMatchesThePrePass) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(61);
  const std::vector<MoeCase> cases = {{1, 2, 8, 14336 / 8, 512, false, 0}, {3, 2, 8, 448, 1024, true, 1}, {40, 2, 8, 320, 256, false, 0}};
  const auto variants = moe_decode_gemm_variants();
  int compared = 0;
  for (const MoeCase& c : cases) {
    const Experts E = make_experts(DType::kFp8E4M3, c.num_experts, c.n, c.k, rng);
    const int64_t slots = c.t * c.top_k, rows = c.x_per_slot ? slots : c.t;
    HostTensor x = test::random_tensor(DType::kBF16, {rows, c.k}, rng, 2.0f);
    const std::vector<int32_t> ids = make_ids(c, rng);
    HostTensor xf = HostTensor::zeros(DType::kF32, {rows, c.k});
    const std::vector<float> v = test::to_f32(x.tensor);
    std::copy(v.begin(), v.end(), xf.tensor.ptr<float>());
    HostTensor q = HostTensor::zeros(DType::kFp8E4M3, {rows, c.k}), qs = HostTensor::zeros(DType::kF32, {rows});
    ASSERT_TRUE(quantize_fp8_cpu({xf.tensor, q.tensor, qs.tensor}).ok());
    auto dx = to_device(x.tensor), dq = to_device(q.tensor), dqs = to_device(qs.tensor);
    auto dids = to_device(Tensor::view(const_cast<int32_t*>(ids.data()), DType::kInt32, {c.t, c.top_k}));
    auto dws = DeviceTensor::empty(DType::kInt8, {moe_decode_gemm_workspace_bytes(rows, c.k)});
    auto dy0 = DeviceTensor::empty(DType::kBF16, {slots, c.n}), dy1 = DeviceTensor::empty(DType::kBF16, {slots, c.n});
    ASSERT_TRUE(dx.ok() && dq.ok() && dqs.ok() && dids.ok() && dws.ok() && dy0.ok() && dy1.ok());
    for (int vi = 0; vi < static_cast<int>(variants.size()); ++vi) {
      if (!variants[static_cast<size_t>(vi)].e4m3) continue;
      for (bool ids_ready : {false, true}) {
        SCOPED_TRACE("variant " + std::to_string(vi) + " t=" + std::to_string(c.t) + " per_slot=" + std::to_string(c.x_per_slot) +
                     " ids_ready=" + std::to_string(ids_ready));
        ASSERT_TRUE(fill_bytes(dy0->tensor, 0xff).ok() && fill_bytes(dy1->tensor, 0xff).ok());
        MoeDecodeGemmArgs a{dx->tensor, dids->tensor, E.ptrs.tensor, E.scale_ptrs.tensor, DType::kFp8E4M3, c.n, dy0->tensor};
        a.workspace = dws->tensor;
        ASSERT_TRUE(moe_decode_gemm_cuda_variant(a, vi, nullptr).ok());
        MoeDecodeGemmArgs b{dq->tensor, dids->tensor, E.ptrs.tensor, E.scale_ptrs.tensor, DType::kFp8E4M3, c.n, dy1->tensor};
        b.x_scale = dqs->tensor;
        b.ids_ready = ids_ready;
        const Status st = moe_decode_gemm_cuda_variant(b, vi, nullptr);
        ASSERT_TRUE(st.ok()) << st.to_string();
        auto y0 = to_host(dy0->tensor), y1 = to_host(dy1->tensor);
        ASSERT_TRUE(y0.ok() && y1.ok());
        EXPECT_EQ(std::memcmp(y0->tensor.data, y1->tensor.data, static_cast<size_t>(y0->tensor.nbytes())), 0);
        ++compared;
      }
    }
    // moe_decode_gemm_cuda picks an e4m3 row for fp8 x (no workspace needed).
    MoeDecodeGemmArgs b{dq->tensor, dids->tensor, E.ptrs.tensor, E.scale_ptrs.tensor, DType::kFp8E4M3, c.n, dy1->tensor};
    b.x_scale = dqs->tensor;
    EXPECT_TRUE(moe_decode_gemm_cuda(b, nullptr).ok());
    // fp8 x without its scales, or on a bf16 row: errors.
    b.x_scale = Tensor{};
    EXPECT_EQ(moe_decode_gemm_cuda(b, nullptr).code(), StatusCode::kInvalidArgument);
    b.x_scale = dqs->tensor;
    for (int vi = 0; vi < static_cast<int>(variants.size()); ++vi)
      if (!variants[static_cast<size_t>(vi)].e4m3 && variants[static_cast<size_t>(vi)].w == DType::kFp8E4M3)
        EXPECT_EQ(moe_decode_gemm_cuda_variant(b, vi, nullptr).code(), StatusCode::kInvalidArgument);
  }
  EXPECT_GE(compared, 6);
}

// A stand-in for the norm that routes: lets the next kernel launch at once (programmatic dependent
// launch), spins ~spin_ns, then writes the final ids.
struct IdsWriterParams {
  int32_t* ids;
  const int32_t* final_ids;
  int slots;
  long long spin_ns;
};
__global__ void late_ids_writer(IdsWriterParams p) {
  cuda::pdl_wait();
  cuda::pdl_trigger();
  long long t0 = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  for (long long t = t0; t - t0 < p.spin_ns;) asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  if (threadIdx.x < p.slots) p.ids[threadIdx.x] = p.final_ids[threadIdx.x];
}

// ids_poll (the gate_up GEMM after the routing norm): whatever the ids buffer holds when the CTAs
// start (cleared to -1, other experts' ids, or the final ids), the output is the bits of a run on
// the final ids: a CTA that started on other ids drops its weight tiles after the wait and starts
// again. The writer spins so that the GEMM's CTAs poll before the final ids are there. Final ids
// with a bad one: the poll gives up, the bits of a run without it. Every wgmma row, one and three
// tokens. (Which path a CTA took is not observable here; the A/B timing in perf.md shows the
// early requests happen in the model.)
TEST(MoeDecodeGemmCuda, PolledIdsGiveTheFinalIdsBits) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(67);
  const std::vector<MoeCase> cases = {{1, 2, 8, 1792, 512, false, 0}, {3, 2, 8, 448, 1024, false, 0}};
  const auto variants = moe_decode_gemm_variants();
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  int compared = 0;
  for (const MoeCase& c : cases) {
    const Experts E = make_experts(DType::kFp8E4M3, c.num_experts, c.n, c.k, rng);
    const int64_t slots = c.t * c.top_k;
    HostTensor xf = test::random_tensor(DType::kF32, {c.t, c.k}, rng, 2.0f);
    HostTensor q = HostTensor::zeros(DType::kFp8E4M3, {c.t, c.k}), qs = HostTensor::zeros(DType::kF32, {c.t});
    ASSERT_TRUE(quantize_fp8_cpu({xf.tensor, q.tensor, qs.tensor}).ok());
    std::vector<int32_t> final_ids = make_ids(c, rng), other_ids(final_ids.size()), cleared(final_ids.size(), -1);
    for (size_t i = 0; i < final_ids.size(); ++i) other_ids[i] = (final_ids[i] + 3) % static_cast<int32_t>(c.num_experts);
    auto dq = to_device(q.tensor), dqs = to_device(qs.tensor);
    auto dfinal = to_device(Tensor::view(final_ids.data(), DType::kInt32, {c.t, c.top_k}));
    auto dids = DeviceTensor::empty(DType::kInt32, {c.t, c.top_k});
    auto dy0 = DeviceTensor::empty(DType::kBF16, {slots, c.n}), dy1 = DeviceTensor::empty(DType::kBF16, {slots, c.n});
    ASSERT_TRUE(dq.ok() && dqs.ok() && dfinal.ok() && dids.ok() && dy0.ok() && dy1.ok());
    for (int vi = 0; vi < static_cast<int>(variants.size()); ++vi) {
      if (!variants[static_cast<size_t>(vi)].wgmma) continue;
      // The reference: the final ids, no polling.
      ASSERT_TRUE(fill_bytes(dy0->tensor, 0xff).ok());
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      MoeDecodeGemmArgs ref{dq->tensor, dfinal->tensor, E.ptrs.tensor, E.scale_ptrs.tensor, DType::kFp8E4M3, c.n, dy0->tensor};
      ref.x_scale = dqs->tensor;
      ASSERT_TRUE(moe_decode_gemm_cuda_variant(ref, vi, s).ok());
      ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
      auto y0 = to_host(dy0->tensor);
      ASSERT_TRUE(y0.ok());
      for (int start = 0; start < 3; ++start) {  // cleared, other experts', the final ids
        SCOPED_TRACE("variant " + std::to_string(vi) + " t=" + std::to_string(c.t) + " start=" + std::to_string(start));
        const std::vector<int32_t>& first = start == 0 ? cleared : start == 1 ? other_ids : final_ids;
        ASSERT_EQ(cudaMemcpyAsync(dids->tensor.data, first.data(), first.size() * 4, cudaMemcpyHostToDevice, s), cudaSuccess);
        ASSERT_TRUE(fill_bytes(dy1->tensor, 0xff).ok());
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        const IdsWriterParams w{dids->tensor.ptr<int32_t>(), dfinal->tensor.ptr<int32_t>(), static_cast<int>(slots), 30000};
        ASSERT_EQ(cuda::launch_pdl(late_ids_writer, dim3(1), dim3(32), 0, s, w), cudaSuccess);
        MoeDecodeGemmArgs b{dq->tensor, dids->tensor, E.ptrs.tensor, E.scale_ptrs.tensor, DType::kFp8E4M3, c.n, dy1->tensor};
        b.x_scale = dqs->tensor;
        b.ids_poll = true;
        const Status st = moe_decode_gemm_cuda_variant(b, vi, s);
        ASSERT_TRUE(st.ok()) << st.to_string();
        ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
        auto y1 = to_host(dy1->tensor);
        ASSERT_TRUE(y1.ok());
        EXPECT_EQ(std::memcmp(y0->tensor.data, y1->tensor.data, static_cast<size_t>(y0->tensor.nbytes())), 0);
        ++compared;
      }
      // Final ids with one out of range: the poll never sees them all valid and gives up (50 us),
      // the CTAs group after the wait, the bad slot gets zeros, as without polling.
      std::vector<int32_t> bad_ids = final_ids;
      bad_ids[0] = static_cast<int32_t>(c.num_experts);
      ASSERT_EQ(cudaMemcpy(dfinal->tensor.data, bad_ids.data(), bad_ids.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
      ASSERT_TRUE(fill_bytes(dy0->tensor, 0xff).ok() && fill_bytes(dy1->tensor, 0xff).ok());
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      ASSERT_TRUE(moe_decode_gemm_cuda_variant(ref, vi, s).ok());
      ASSERT_EQ(cudaMemcpyAsync(dids->tensor.data, cleared.data(), cleared.size() * 4, cudaMemcpyHostToDevice, s), cudaSuccess);
      const IdsWriterParams w{dids->tensor.ptr<int32_t>(), dfinal->tensor.ptr<int32_t>(), static_cast<int>(slots), 30000};
      ASSERT_EQ(cuda::launch_pdl(late_ids_writer, dim3(1), dim3(32), 0, s, w), cudaSuccess);
      MoeDecodeGemmArgs b{dq->tensor, dids->tensor, E.ptrs.tensor, E.scale_ptrs.tensor, DType::kFp8E4M3, c.n, dy1->tensor};
      b.x_scale = dqs->tensor;
      b.ids_poll = true;
      ASSERT_TRUE(moe_decode_gemm_cuda_variant(b, vi, s).ok());
      ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
      auto yb0 = to_host(dy0->tensor), yb1 = to_host(dy1->tensor);
      ASSERT_TRUE(yb0.ok() && yb1.ok());
      EXPECT_EQ(std::memcmp(yb0->tensor.data, yb1->tensor.data, static_cast<size_t>(yb0->tensor.nbytes())), 0) << "bad ids";
      ASSERT_EQ(cudaMemcpy(dfinal->tensor.data, final_ids.data(), final_ids.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
    }
  }
  EXPECT_GE(compared, 6);
  cudaStreamDestroy(s);
}

TEST(MoeDecodeGemmCuda, RejectsBadArguments) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(53);
  const Experts E = make_experts(DType::kBF16, 4, 64, 64, rng);
  auto dx = DeviceTensor::empty(DType::kBF16, {320, 64});
  auto dids = DeviceTensor::empty(DType::kInt32, {320, 2});
  auto dy = DeviceTensor::empty(DType::kBF16, {640, 64});
  ASSERT_TRUE(dx.ok() && dids.ok() && dy.ok());
  // 640 slots: past the decode limit.
  EXPECT_EQ(moe_decode_gemm_cuda({dx->tensor, dids->tensor, E.ptrs.tensor, {}, DType::kBF16, 64, dy->tensor}, nullptr).code(),
            StatusCode::kUnimplemented);
  // 512 slots: within the decode limit, past the one-byte-index rows' (a workspace given).
  {
    const Experts G = make_experts(DType::kFp8E4M3, 4, 64, 64, rng);
    auto ws = DeviceTensor::empty(DType::kInt8, {moe_decode_gemm_workspace_bytes(256, 64)});
    ASSERT_TRUE(ws.ok());
    MoeDecodeGemmArgs a{dx->tensor.slice0(0, 256), dids->tensor.slice0(0, 256), G.ptrs.tensor, G.scale_ptrs.tensor, DType::kFp8E4M3, 64,
                        dy->tensor.slice0(0, 512), ws->tensor};
    const auto rows = moe_decode_gemm_variants();
    for (int vi = 0; vi < static_cast<int>(rows.size()); ++vi)
      if (rows[static_cast<size_t>(vi)].w == DType::kFp8E4M3 && rows[static_cast<size_t>(vi)].max_slots < 512)
        EXPECT_EQ(moe_decode_gemm_cuda_variant(a, vi, nullptr).code(), StatusCode::kUnimplemented) << "variant " << vi;
  }
  // y with the wrong rows; fp8 without scales; scales for bf16.
  const Tensor ids8 = dids->tensor.slice0(0, 8), x8 = dx->tensor.slice0(0, 8);
  EXPECT_FALSE(moe_decode_gemm_cuda({x8, ids8, E.ptrs.tensor, {}, DType::kBF16, 64, dy->tensor}, nullptr).ok());
  EXPECT_FALSE(moe_decode_gemm_cuda({x8, ids8, E.ptrs.tensor, {}, DType::kFp8E4M3, 64, dy->tensor.slice0(0, 16)}, nullptr).ok());
  EXPECT_FALSE(moe_decode_gemm_cuda({x8, ids8, E.ptrs.tensor, E.ptrs.tensor, DType::kBF16, 64, dy->tensor.slice0(0, 16)}, nullptr).ok());
  EXPECT_EQ(moe_decode_gemm_cuda({x8, ids8, E.ptrs.tensor, {}, DType::kF32, 64, dy->tensor.slice0(0, 16)}, nullptr).code(),
            StatusCode::kUnimplemented);
  // An e4m3 row without a workspace, or with one too small.
  const Experts F = make_experts(DType::kFp8E4M3, 4, 64, 64, rng);
  auto small = DeviceTensor::empty(DType::kInt8, {moe_decode_gemm_workspace_bytes(8, 64) - 16});
  ASSERT_TRUE(small.ok());
  const auto variants = moe_decode_gemm_variants();
  for (int vi = 0; vi < static_cast<int>(variants.size()); ++vi) {
    if (!variants[static_cast<size_t>(vi)].e4m3) continue;
    MoeDecodeGemmArgs a{x8, ids8, F.ptrs.tensor, F.scale_ptrs.tensor, DType::kFp8E4M3, 64, dy->tensor.slice0(0, 16)};
    EXPECT_EQ(moe_decode_gemm_cuda_variant(a, vi, nullptr).code(), StatusCode::kInvalidArgument);
    a.workspace = small->tensor;
    EXPECT_EQ(moe_decode_gemm_cuda_variant(a, vi, nullptr).code(), StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace kiln
