// The GPU decode kernel (skinny_gemm.cu), the fp8 prefill path and the dispatcher of Gemm::run
// against linear_cpu on fresh random inputs: every row of the decode kernel's variant table (bf16
// and fp8 weights, per-channel and per-tensor scales, bf16 and f32 y, bias, strided rows, odd n,
// split K), m on both sides of every dispatch threshold; every fp8 prefill mode (x per token / per
// tensor, cuBLASLt or epilogue scales, fast accumulation); both GPU fp8 quantizers against the CPU
// one bit for bit; graph capture and replay. Skipped without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/cuda/gemm/gemm_fp8_activations.h"
#include "kiln/kernels/cuda/gemm/skinny_gemm.h"
#include "kiln/kernels/gemm_cuda.h"
#include "kiln/kernels/linear.h"
#include "kiln/kernels/moe_cuda.h"
#include "kiln/kernels/quantize.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/kernels/skinny_workspace_cuda.h"
#include "tests/kernels/test_weights_cuda.h"

namespace kiln {
namespace {

using test::make_weights;
using test::scaled_error;
using test::Weights;

struct Case {
  int64_t m, n, k;
  bool bias;
  int64_t pad;  // extra elements per row of x and y
  bool edge_rows = false;  // m >= 3: row 1 of x all zero, row 2 with one huge value (per-token scales' edges)
};

// How the reference sees x: exact (bf16), or quantized to fp8 per row (token) or per tensor first,
// as the fp8 prefill path does (GemmOptions::fp8_activations).
enum XRef { kXExact, kXPerToken, kXPerTensor };
XRef x_ref_for(const GemmOptions& o) { return o.fp8_activations == Fp8Activations::kPerTensor ? kXPerTensor : kXPerToken; }

// y = gemm.run(x, w) compared with linear_cpu on x as x_ref says.
// Tolerances (max error / max |ref|): bf16 y: its rounding; f32 y: summation order, except on
// the fp8 cuBLASLt path, whose fp8 MMAs accumulate with fewer bits than f32 (tol_f32 > 0 overrides).
// err_out: the measured error, for the tests that print it.
template <typename Run>  // Status run(const LinearArgs&): Gemm::run or the decode kernel itself
void check_case(Run&& run, DType y_dtype, const Weights& W, const Case& c, XRef x_ref, std::mt19937& rng,
                double tol_bf16 = 1e-2, double tol_f32 = 0, double* err_out = nullptr) {
  const bool fp8_x = x_ref != kXExact;
  const int64_t m = c.m, n = c.n, k = c.k;
  SCOPED_TRACE("m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k) + " bias=" +
               std::to_string(c.bias) + " pad=" + std::to_string(c.pad) + " w=" + std::string(dtype_name(W.w.tensor.dtype)) +
               " scale=" + std::to_string(W.scale.tensor.numel()) + " y=" + std::string(dtype_name(y_dtype)));
  HostTensor x = test::random_tensor(DType::kBF16, {m, k + c.pad}, rng);
  if (c.edge_rows && m >= 3) {
    uint16_t* xb = x.tensor.ptr<uint16_t>();
    std::fill_n(xb + (k + c.pad), k, uint16_t{0});
    xb[2 * (k + c.pad) + k / 3] = 0x46EA;  // 29952
  }
  HostTensor b = test::random_tensor(y_dtype, {n}, rng);
  auto dx = to_device(x.tensor), db = to_device(b.tensor);
  auto dy = DeviceTensor::empty(y_dtype, {m, n + c.pad});
  ASSERT_TRUE(dx.ok() && db.ok() && dy.ok());
  ASSERT_TRUE(fill_bytes(dy->tensor, 0xff).ok());
  Tensor xv = dx->tensor, yv = dy->tensor;
  xv.shape[1] = k;
  yv.shape[1] = n;
  const Status st = run(LinearArgs{xv, W.dw.tensor, c.bias ? db->tensor : Tensor{}, yv, W.dscale.tensor});
  ASSERT_TRUE(st.ok()) << st.to_string();

  const std::vector<float> xf_all = test::to_f32(x.tensor);
  HostTensor xf = HostTensor::zeros(DType::kF32, {m, k});
  for (int64_t i = 0; i < m; ++i) std::copy_n(xf_all.begin() + i * (k + c.pad), k, xf.tensor.ptr<float>() + i * k);
  if (fp8_x) {
    HostTensor q = HostTensor::zeros(DType::kFp8E4M3, {m, k});
    HostTensor s = HostTensor::zeros(DType::kF32, {x_ref == kXPerTensor ? 1 : m});
    ASSERT_TRUE(quantize_fp8_cpu({xf.tensor, q.tensor, s.tensor}).ok());
    ASSERT_TRUE(dequantize_fp8_weights_cpu(q.tensor, s.tensor, xf.tensor).ok());
  }
  const std::vector<float> bf = test::to_f32(b.tensor);
  HostTensor ref = HostTensor::zeros(DType::kF32, {m, n});
  const Status rs = linear_cpu({xf.tensor, W.w.tensor, c.bias ? Tensor::view(const_cast<float*>(bf.data()), DType::kF32, {n}) : Tensor{},
                                ref.tensor, W.scale.tensor});
  ASSERT_TRUE(rs.ok()) << rs.to_string();
  auto y_host = to_host(dy->tensor, DType::kF32);
  ASSERT_TRUE(y_host.ok());
  const std::vector<float> y_all = test::to_f32(y_host->tensor);
  std::vector<float> y(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i) std::copy_n(y_all.begin() + i * (n + c.pad), n, y.begin() + i * n);
  const double tol = y_dtype == DType::kF32 ? (tol_f32 > 0 ? tol_f32 : fp8_x ? 1e-3 : 1e-4) : tol_bf16;
  const double err = scaled_error(y, test::to_f32(ref.tensor));
  if (err_out) *err_out = err;
  EXPECT_LT(err, tol);
}

void check_case(Gemm& gemm, DType y_dtype, const Weights& W, const Case& c, XRef x_ref, std::mt19937& rng,
                double tol_bf16 = 1e-2, double tol_f32 = 0, double* err_out = nullptr) {
  check_case([&](const LinearArgs& a) { return gemm.run(a, nullptr); }, y_dtype, W, c, x_ref, rng, tol_bf16, tol_f32,
             err_out);
}

using test::SkinnyWorkspace;

// Every variant of the decode kernel (m up to its max_m), several shapes: odd n, k a multiple of
// 16 only, long k (split K), n large enough for no split.
// Each row of the table is called directly (the alternatives too), with the automatic launch
// shape and with forced warps per CTA / split K, without and with programmatic dependent launch.
TEST(GemmSkinnyCuda, EveryVariantMatchesCpuReference) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(31);
  SkinnyWorkspace sw;
  const struct { int64_t n, k; } shapes[] = {{1000, 4096}, {4097, 1008}, {384, 14336}, {20000, 512}, {24, 48}};
  const auto variants = skinny_gemm_variants();
  for (int vi = 0; vi < static_cast<int>(variants.size()); ++vi) {
    const SkinnyGemmVariant& v = variants[static_cast<size_t>(vi)];
    SCOPED_TRACE("variant " + std::to_string(vi));
    for (const auto& s : shapes) {
      for (bool per_tensor : {false, true}) {
        if (v.w == DType::kBF16 && per_tensor) continue;
        const Weights W = make_weights(v.w, s.n, s.k, per_tensor, false, rng);
        for (int64_t m : {std::max<int64_t>(1, v.max_m / 2 + 1), static_cast<int64_t>(v.max_m)}) {
          if (m <= v.max_m / 2 && v.max_m > 8) continue;
          const SkinnyGemmConfig cfgs[] = {{vi, 0, 0}, {vi, 3, 0}, {vi, 8, 3}, {vi, 1, 1}};
          const int which = static_cast<int>((m + s.n + (per_tensor ? 1 : 0)) % 4);
          sw.ws.pdl = (m + s.k) % 2 == 0;
          check_case([&](const LinearArgs& a) { return skinny_gemm_cuda(a, sw.ws, nullptr, cfgs[which]); }, v.y, W,
                     {m, s.n, s.k, (m + s.n) % 2 == 0, m % 3 == 0 ? 8 : 0}, v.e4m3 ? kXPerToken : kXExact, rng);
          if (which != 0)  // and the automatic choice
            check_case([&](const LinearArgs& a) { return skinny_gemm_cuda(a, sw.ws, nullptr, cfgs[0]); }, v.y, W,
                       {m, s.n, s.k, false, 0}, v.e4m3 ? kXPerToken : kXExact, rng);
        }
      }
    }
  }
}

// The wgmma rows (x quantized per token to e4m3, wgmma.m64nNk32.e4m3) against the per-token
// reference at 4e-3 of max |y| (bf16 y; f32 y: 1e-3): m = 1, 8, 9, 16 within each row's N (rows of
// N = 32 / 64: 1, N / 2 + 1, N); n not a multiple of the 64 / 128 rows of a CTA, k not a multiple
// of 128 (zero-filled tail); a zero row and a row with one huge value; automatic and forced split
// K (3: the splits meet in a thread-block cluster, and through the workspace; 7: in a cluster where
// the partials fit one CTA's shared memory); with and without programmatic dependent launch.
TEST(GemmSkinnyCuda, WgmmaRowsMatchPerTokenReference) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(73);
  SkinnyWorkspace sw;
  const struct { int64_t n, k; } shapes[] = {{1000, 2064}, {64, 128}, {200, 4096}, {4096, 48}};
  const auto variants = skinny_gemm_variants();
  int tested = 0;
  for (int vi = 0; vi < static_cast<int>(variants.size()); ++vi) {
    const SkinnyGemmVariant& v = variants[static_cast<size_t>(vi)];
    if (!v.wgmma) continue;
    SCOPED_TRACE("variant " + std::to_string(vi));
    for (const auto& s : shapes) {
      const Weights W = make_weights(v.w, s.n, s.k, false, (s.n + vi) % 3 == 0, rng);
      const std::vector<int64_t> ms = v.max_m > 16 ? std::vector<int64_t>{1, v.max_m / 2 + 1, v.max_m} : std::vector<int64_t>{1, 8, 9, 16};
      for (int64_t m : ms) {
        if (m > v.max_m) continue;
        for (int split : {0, 3, 7, -3}) {  // -3: 3 splits through the workspace, not a cluster
          sw.ws.pdl = (m + split + vi) % 2 == 0;
          SCOPED_TRACE("split " + std::to_string(split) + " pdl " + std::to_string(sw.ws.pdl));
          SkinnyGemmConfig cfg{vi, 0, std::abs(split)};
          cfg.workspace_split = split < 0;
          SkinnyGemmLaunch launch;
          check_case([&](const LinearArgs& a) { return skinny_gemm_cuda(a, sw.ws, nullptr, cfg, &launch); }, v.y, W,
                     {m, s.n, s.k, split == 3, m == 9 ? 8 : 0, true}, kXPerToken, rng, 4e-3);
          if (split < 0) EXPECT_FALSE(launch.cluster_split);
          if (split == 3 && launch.split_k > 1) EXPECT_TRUE(launch.cluster_split);  // 3 fit every row's shared memory
          ++tested;
        }
      }
    }
  }
  if (tested == 0) GTEST_SKIP() << "no wgmma rows in the table (taken out until they pass here)";
}

// Two decode GEMMs back to back on one stream, the second reading the first's output: with
// programmatic dependent launch the second starts early, and must still wait for its x.
TEST(GemmSkinnyCuda, ChainedCallsWaitForTheirInput) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(38);
  auto gemm = Gemm::create();
  ASSERT_TRUE(gemm.ok());
  const int64_t m = 4, k = 4096, n1 = 8192, n2 = 2048;
  const Weights W1 = make_weights(DType::kFp8E4M3, n1, k, false, false, rng);
  const Weights W2 = make_weights(DType::kBF16, n2, n1, false, false, rng);
  HostTensor x = test::random_tensor(DType::kBF16, {m, k}, rng);
  auto dx = to_device(x.tensor);
  auto dh = DeviceTensor::empty(DType::kBF16, {m, n1});
  auto dy = DeviceTensor::empty(DType::kF32, {m, n2});
  ASSERT_TRUE(dx.ok() && dh.ok() && dy.ok());
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  for (int rep = 0; rep < 3; ++rep) {
    ASSERT_TRUE(fill_bytes(dh->tensor, 0xff, s).ok());  // NaNs, should the second call read too early
    ASSERT_TRUE(gemm->run({dx->tensor, W1.dw.tensor, {}, dh->tensor, W1.dscale.tensor}, s).ok());
    ASSERT_TRUE(gemm->run({dh->tensor, W2.dw.tensor, {}, dy->tensor}, s).ok());
  }
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  cudaStreamDestroy(s);
  auto h = to_host(dh->tensor);
  auto y = to_host(dy->tensor);
  ASSERT_TRUE(h.ok() && y.ok());
  // Reference of the second GEMM on the first's actual (bf16) output; the first against its own.
  HostTensor href = HostTensor::zeros(DType::kF32, {m, n1});
  std::vector<float> xf = test::to_f32(x.tensor);
  if (skinny_gemm_quantizes_x(DType::kFp8E4M3, DType::kBF16, m, n1)) {  // the decode kernel rounds x per token to e4m3
    const Tensor xv = Tensor::view(xf.data(), DType::kF32, {m, k});
    HostTensor q = HostTensor::zeros(DType::kFp8E4M3, {m, k}), sc = HostTensor::zeros(DType::kF32, {m});
    ASSERT_TRUE(quantize_fp8_cpu({xv, q.tensor, sc.tensor}).ok());
    ASSERT_TRUE(dequantize_fp8_weights_cpu(q.tensor, sc.tensor, xv).ok());
  }
  ASSERT_TRUE(linear_cpu({Tensor::view(const_cast<float*>(xf.data()), DType::kF32, {m, k}), W1.w.tensor, {}, href.tensor,
                          W1.scale.tensor}).ok());
  EXPECT_LT(scaled_error(test::to_f32(h->tensor), test::to_f32(href.tensor)), 1e-2);
  const std::vector<float> hf = test::to_f32(h->tensor);
  HostTensor yref = HostTensor::zeros(DType::kF32, {m, n2});
  ASSERT_TRUE(linear_cpu({Tensor::view(const_cast<float*>(hf.data()), DType::kF32, {m, n1}), W2.w.tensor, {}, yref.tensor}).ok());
  EXPECT_LT(scaled_error(test::to_f32(y->tensor), test::to_f32(yref.tensor)), 1e-4);
}

// m = 1 (the decode case) and raw fp8 codes (subnormals, the largest values) with f32 output:
// the in-register widening must be exact.
TEST(GemmSkinnyCuda, ExactFp8WideningAndBatchOne) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(32);
  auto gemm = Gemm::create({.skinny_max_m_bf16 = 64, .skinny_max_m_fp8 = 64});
  ASSERT_TRUE(gemm.ok());
  for (bool per_tensor : {false, true}) {
    const Weights W = make_weights(DType::kFp8E4M3, 777, 2064, per_tensor, true, rng);
    // (past the exact rows, m = 40 takes a wgmma row that quantizes x per token: its reference)
    for (int64_t m : {1, 3, 8, 13, 40})
      check_case(*gemm, DType::kF32, W, {m, 777, 2064, m % 2 == 1, 0},
                 skinny_gemm_quantizes_x(DType::kFp8E4M3, DType::kF32, m, 777) ? kXPerToken : kXExact, rng);
    check_case(*gemm, DType::kBF16, W, {1, 777, 2064, true, 8},
               skinny_gemm_quantizes_x(DType::kFp8E4M3, DType::kBF16, 1, 777) ? kXPerToken : kXExact, rng);
  }
  const Weights B = make_weights(DType::kBF16, 6144, 4096, false, false, rng);
  check_case(*gemm, DType::kBF16, B, {1, 6144, 4096, false, 0}, kXExact, rng);
}

// Gemm::run picks by m: just below and above each threshold, the result matches the reference of
// the path gemm_path names (the fp8 cuBLASLt path quantizes x per row).
TEST(GemmDispatchCuda, BoundariesMatchCpuReference) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(33);
  const GemmOptions opt;
  auto gemm = Gemm::create(opt);
  ASSERT_TRUE(gemm.ok());
  const int64_t n = 1536, k = 1024;
  for (DType wt : {DType::kBF16, DType::kFp8E4M3}) {
    const int64_t t = wt == DType::kBF16 ? opt.skinny_max_m_bf16 : opt.skinny_max_m_fp8;
    for (bool per_tensor : {false, true}) {
      if (wt == DType::kBF16 && per_tensor) continue;
      const Weights W = make_weights(wt, n, k, per_tensor, false, rng);
      for (int64_t m : {t - 1, t, t + 1, t + 2, int64_t{300}}) {
        if (m < 1) continue;
        const GemmPath path = gemm_path(opt, m, wt, n * k * (wt == DType::kBF16 ? 2 : 1));
        EXPECT_EQ(path == GemmPath::kSkinny, m <= t);
        for (DType yt : {DType::kBF16, DType::kF32})
          check_case(*gemm, yt, W, {m, n, k, m % 2 == 0, 0},
                     path == GemmPath::kCublasFp8                                ? x_ref_for(opt)
                     : path == GemmPath::kSkinny && skinny_gemm_quantizes_x(wt, yt, m, n) ? kXPerToken
                                                                                 : kXExact,
                     rng,
                     path == GemmPath::kCublasFp8 ? 2e-2 : 1e-2,
                     path == GemmPath::kCublasFp8 && opt.fp8_fast_accum ? 1e-2 : 0);
      }
    }
  }
  std::printf("fp8 prefill scales: %s\n", gemm->fp8_prefill_scales().c_str());
}

// Every way the fp8 prefill path can run: x per token / per tensor, scales applied by cuBLASLt or
// by the epilogue kernel, plain and fast accumulation; per-channel and per-tensor weights, bf16
// and f32 y, bias, strided rows. Prints which plans cuBLASLt took (a refused scaled plan falls
// back to the epilogue kernel, which the native_scales = false rows check too).
TEST(GemmFp8PrefillCuda, EveryScaleModeMatchesCpuReference) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(34);
  for (Fp8Activations act : {Fp8Activations::kPerToken, Fp8Activations::kPerTensor}) {
    for (bool native : {true, false}) {
      for (bool fast : {false, true}) {
        const GemmOptions opt{.skinny_max_m_fp8 = 0, .fp8_fast_accum = fast, .fp8_activations = act,
                              .fp8_native_scales = native};
        SCOPED_TRACE(std::string("x per ") + (act == Fp8Activations::kPerToken ? "token" : "tensor") +
                     (native ? ", cuBLASLt scales" : ", epilogue") + (fast ? ", fast accumulation" : ""));
        auto gemm = Gemm::create(opt);
        ASSERT_TRUE(gemm.ok());
        for (bool per_tensor : {false, true}) {
          const Weights W = make_weights(DType::kFp8E4M3, 1000, 2048, per_tensor, false, rng);
          for (int64_t m : {1, 17, 160}) {
            EXPECT_EQ(gemm_path(opt, m, DType::kFp8E4M3), GemmPath::kCublasFp8);
            check_case(*gemm, DType::kBF16, W, {m, 1000, 2048, m == 17, m == 1 ? 8 : 0}, x_ref_for(opt), rng, 2e-2,
                       fast ? 1e-2 : 0);
            check_case(*gemm, DType::kF32, W, {m, 1000, 2048, m == 160, m == 17 ? 8 : 0}, x_ref_for(opt), rng, 2e-2,
                       fast ? 1e-2 : 0);
          }
        }
        std::printf("fp8 prefill (x per %s, native %d, fast %d): %s\n",
                    act == Fp8Activations::kPerToken ? "token" : "tensor", native, fast,
                    gemm->fp8_prefill_scales().c_str());
        // Hopper's cuBLASLt takes the outer-vector scales at least for bf16 y (the string starts
        // with that count); elsewhere a refusal is legal (the epilogue covers it).
        int dev = 0, major = 0;
        ASSERT_EQ(cudaGetDevice(&dev), cudaSuccess);
        ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), cudaSuccess);
        const int outer = std::stoi(gemm->fp8_prefill_scales());
        if (!native) EXPECT_EQ(outer, 0);
        if (native && major == 9) EXPECT_GE(outer, 6);  // the 6 bf16-y plans of 2 weights x 3 m
      }
    }
  }
}

// A long reduction (k = 14336, Llama-3-8B's down_proj): the output of each mode against the
// reference on the same fp8 x (plain accumulation within 1e-3 of max |y| with f32 y, fast within
// 1e-2), and against the exact (bf16) x: what quantizing x costs, for scale. All printed.
TEST(GemmFp8PrefillCuda, LongReductionAccuracy) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(39);
  const int64_t m = 64, n = 512, k = 14336;
  const Weights W = make_weights(DType::kFp8E4M3, n, k, false, false, rng);
  for (Fp8Activations act : {Fp8Activations::kPerToken, Fp8Activations::kPerTensor}) {
    for (bool fast : {false, true}) {
      const GemmOptions opt{.skinny_max_m_fp8 = 0, .fp8_fast_accum = fast, .fp8_activations = act};
      auto gemm = Gemm::create(opt);
      ASSERT_TRUE(gemm.ok());
      double err_f32 = 0, err_bf16 = 0, err_exact = 0;
      check_case(*gemm, DType::kF32, W, {m, n, k, false, 0}, x_ref_for(opt), rng, 2e-2, fast ? 1e-2 : 1e-3, &err_f32);
      check_case(*gemm, DType::kBF16, W, {m, n, k, true, 0}, x_ref_for(opt), rng, 2e-2, 0, &err_bf16);
      check_case(*gemm, DType::kBF16, W, {m, n, k, false, 0}, kXExact, rng, 1e-1, 0, &err_exact);
      std::printf("fp8 prefill k=%lld x per %s, fast accumulation %d: error / max|y| vs the fp8-x reference: f32 y "
                  "%.2e, bf16 y %.2e; vs the exact-x reference: bf16 y %.2e (%s)\n",
                  static_cast<long long>(k), act == Fp8Activations::kPerToken ? "token" : "tensor", fast, err_f32,
                  err_bf16, err_exact, gemm->fp8_prefill_scales().c_str());
    }
  }
}

// Runs args once eagerly, captures the same call into a graph and replays it `replays` times over
// a poisoned y: every replay must give the eager bits.
void expect_replays_match_eager(Gemm& gemm, const LinearArgs& args, cudaStream_t s, int replays) {
  ASSERT_TRUE(gemm.run(args, s).ok());
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  auto first = to_host(args.y);
  ASSERT_TRUE(first.ok());
  cudaGraph_t graph;
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  const Status st = gemm.run(args, s);
  ASSERT_EQ(cudaStreamEndCapture(s, &graph), cudaSuccess);
  ASSERT_TRUE(st.ok()) << st.to_string();
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int r = 0; r < replays; ++r) {
    ASSERT_TRUE(fill_bytes(args.y, 0xff, s).ok());
    ASSERT_EQ(cudaGraphLaunch(exec, s), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
    auto again = to_host(args.y);
    ASSERT_TRUE(again.ok());
    ASSERT_EQ(0, std::memcmp(first->tensor.data, again->tensor.data, static_cast<size_t>(args.y.nbytes()))) << "replay " << r;
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
}

// The fp8 prefill path inside a CUDA graph (decode batches of 17..64 rows take it): after one
// eager call per shape, capture and replay give the eager bits, for both activation modes.
TEST(GemmFp8PrefillCuda, GraphReplayMatchesEager) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(40);
  const int64_t m = 40, n = 1536, k = 1024;
  const Weights W = make_weights(DType::kFp8E4M3, n, k, false, false, rng);
  HostTensor x = test::random_tensor(DType::kBF16, {m, k}, rng);
  auto dx = to_device(x.tensor);
  auto dy = DeviceTensor::empty(DType::kBF16, {m, n});
  ASSERT_TRUE(dx.ok() && dy.ok());
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  for (Fp8Activations act : {Fp8Activations::kPerToken, Fp8Activations::kPerTensor}) {
    auto gemm = Gemm::create({.fp8_activations = act});
    ASSERT_TRUE(gemm.ok());
    expect_replays_match_eager(*gemm, {dx->tensor, W.dw.tensor, {}, dy->tensor, W.dscale.tensor}, s, 2);
  }
  cudaStreamDestroy(s);
}

// The fp8 activation workspace grows on demand and frees the old buffers: workspace_generation()
// moves exactly then, so a caller that keys its graphs on it never replays freed addresses (the
// model's decode graphs do; a stale replay faulted once in Mixtral serving).
TEST(GemmFp8PrefillCuda, WorkspaceGenerationMovesWhenBuffersGrow) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(44);
  const Weights small = make_weights(DType::kFp8E4M3, 256, 1024, false, false, rng);
  const Weights wide = make_weights(DType::kFp8E4M3, 256, 4096, false, false, rng);
  auto gemm = Gemm::create();
  ASSERT_TRUE(gemm.ok());
  auto run = [&](const Weights& W, int64_t m) {
    const int64_t k = W.w.tensor.shape[1];
    HostTensor x = test::random_tensor(DType::kBF16, {m, k}, rng);
    auto dx = to_device(x.tensor);
    auto dy = DeviceTensor::empty(DType::kBF16, {m, 256});
    ASSERT_TRUE(dx.ok() && dy.ok());
    ASSERT_TRUE(gemm->run({dx->tensor, W.dw.tensor, {}, dy->tensor, W.dscale.tensor}, nullptr).ok());
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  };
  const int64_t g0 = gemm->workspace_generation();
  run(small, 40);  // above the decode range: the fp8 cuBLASLt path allocates its workspace
  const int64_t g1 = gemm->workspace_generation();
  EXPECT_GT(g1, g0);
  run(small, 40);
  run(small, 17);
  EXPECT_EQ(gemm->workspace_generation(), g1) << "no growth, no move";
  run(wide, 300);  // 300 x 4096 > 40 x 1024: the buffers move
  EXPECT_GT(gemm->workspace_generation(), g1);
}

// A decode GEMM with split K captured into a graph and replayed: the same numbers every replay
// (the arrival counters reset themselves).
TEST(GemmSkinnyCuda, GraphReplayIsDeterministic) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(35);
  auto gemm = Gemm::create();
  ASSERT_TRUE(gemm.ok());
  const Weights W = make_weights(DType::kFp8E4M3, 4096, 4096, false, false, rng);
  HostTensor x = test::random_tensor(DType::kBF16, {4, 4096}, rng);
  auto dx = to_device(x.tensor);
  auto dy = DeviceTensor::empty(DType::kF32, {4, 4096});
  ASSERT_TRUE(dx.ok() && dy.ok());
  cudaStream_t s;
  ASSERT_EQ(cudaStreamCreate(&s), cudaSuccess);
  expect_replays_match_eager(*gemm, {dx->tensor, W.dw.tensor, {}, dy->tensor, W.dscale.tensor}, s, 3);
  cudaStreamDestroy(s);
}

// The GPU quantizer gives the CPU quantizer's bits: per row and per tensor, vector and scalar
// paths (k % 8 != 0), short rows (k <= 256: a lane group per row, more rows than one block holds),
// a zero row, strided rows.
TEST(QuantizeFp8Cuda, MatchesCpuBitForBit) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(36);
  for (int64_t k : {4096, 100, 14336, 128, 64, 256, 72, 24}) {
    for (bool per_tensor : {false, true}) {
      const int64_t rows = k <= 256 ? 1037 : 37;
      HostTensor src = test::random_tensor(DType::kBF16, {rows, k}, rng, 2.0f);
      std::fill_n(src.tensor.ptr<uint16_t>() + 5 * k, k, uint16_t{0});  // a zero row
      src.tensor.ptr<uint16_t>()[9 * k + 3] = 0x4780;  // 65536: a large value
      HostTensor q = HostTensor::zeros(DType::kFp8E4M3, {rows, k});
      HostTensor s = HostTensor::zeros(DType::kF32, {per_tensor ? 1 : rows});
      ASSERT_TRUE(quantize_fp8_cpu({src.tensor, q.tensor, s.tensor}).ok());
      auto dsrc = to_device(src.tensor);
      auto dq = DeviceTensor::empty(DType::kFp8E4M3, {rows, k});
      auto ds = DeviceTensor::empty(DType::kF32, {per_tensor ? 1 : rows});
      ASSERT_TRUE(dsrc.ok() && dq.ok() && ds.ok());
      const Status st = quantize_fp8_cuda({dsrc->tensor, dq->tensor, ds->tensor}, nullptr);
      ASSERT_TRUE(st.ok()) << st.to_string();
      auto hq = to_host(dq->tensor);
      auto hs = to_host(ds->tensor);
      ASSERT_TRUE(hq.ok() && hs.ok());
      EXPECT_EQ(0, std::memcmp(hs->tensor.data, s.tensor.data, static_cast<size_t>(s.tensor.nbytes()))) << "k=" << k;
      int64_t diff = 0;
      for (int64_t i = 0; i < rows * k; ++i) diff += hq->tensor.ptr<uint8_t>()[i] != q.tensor.ptr<uint8_t>()[i];
      EXPECT_EQ(diff, 0) << "k=" << k << " per_tensor=" << per_tensor;
    }
  }
}

// The fp8 prefill GEMM's own activation quantizer gives the CPU quantizer's bits: per token (every
// register-resident variant, and k past them) and per tensor, a zero row, a large value, strided
// rows, k not a multiple of 8 (the general quantizer's path).
TEST(QuantizeFp8Cuda, GemmActivationQuantizerMatchesCpuBitForBit) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(41);
  auto amax = DeviceBuffer::alloc(256);
  ASSERT_TRUE(amax.ok());
  for (int64_t k : {16, 2048, 4096, 8192, 14336, 20480, 100}) {
    for (bool per_tensor : {false, true}) {
      const int64_t rows = 37, pad = k % 8 == 0 ? 8 : 0;
      HostTensor src = test::random_tensor(DType::kBF16, {rows, k + pad}, rng, 2.0f);
      std::fill_n(src.tensor.ptr<uint16_t>() + 5 * (k + pad), k, uint16_t{0});  // a zero row
      src.tensor.ptr<uint16_t>()[9 * (k + pad) + 3] = 0x4780;                 // 65536: a large value
      HostTensor dense = HostTensor::zeros(DType::kBF16, {rows, k});
      for (int64_t r = 0; r < rows; ++r)
        std::copy_n(src.tensor.ptr<uint16_t>() + r * (k + pad), k, dense.tensor.ptr<uint16_t>() + r * k);
      HostTensor q = HostTensor::zeros(DType::kFp8E4M3, {rows, k});
      HostTensor s = HostTensor::zeros(DType::kF32, {per_tensor ? 1 : rows});
      ASSERT_TRUE(quantize_fp8_cpu({dense.tensor, q.tensor, s.tensor}).ok());
      auto dsrc = to_device(src.tensor);
      auto dq = DeviceTensor::empty(DType::kFp8E4M3, {rows, k});
      auto ds = DeviceTensor::empty(DType::kF32, {per_tensor ? 1 : rows});
      ASSERT_TRUE(dsrc.ok() && dq.ok() && ds.ok());
      Tensor sv = dsrc->tensor;
      sv.shape[1] = k;
      for (int rep = 0; rep < 2; ++rep) {  // twice: the amax word must be reset between calls
        const Status st = quantize_fp8_activations_cuda({sv, dq->tensor, ds->tensor}, static_cast<uint32_t*>(amax->data()), nullptr);
        ASSERT_TRUE(st.ok()) << st.to_string();
      }
      auto hq = to_host(dq->tensor);
      auto hs = to_host(ds->tensor);
      ASSERT_TRUE(hq.ok() && hs.ok());
      EXPECT_EQ(0, std::memcmp(hs->tensor.data, s.tensor.data, static_cast<size_t>(s.tensor.nbytes())))
          << "k=" << k << " per_tensor=" << per_tensor;
      int64_t diff = 0;
      for (int64_t i = 0; i < rows * k; ++i) diff += hq->tensor.ptr<uint8_t>()[i] != q.tensor.ptr<uint8_t>()[i];
      EXPECT_EQ(diff, 0) << "k=" << k << " per_tensor=" << per_tensor;
    }
  }
}

// MoE grouped GEMM with fp8 experts (one scale tensor per expert) against a per-expert reference.
TEST(GemmSkinnyCuda, MoeGroupedGemmWithFp8Experts) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(37);
  auto gemm = Gemm::create();
  ASSERT_TRUE(gemm.ok());
  const int64_t n = 512, k = 256;
  std::vector<Weights> experts;
  std::vector<Tensor> ws, scales;
  for (int e = 0; e < 3; ++e) experts.push_back(make_weights(DType::kFp8E4M3, n, k, e == 1, false, rng));
  for (auto& e : experts) { ws.push_back(e.dw.tensor); scales.push_back(e.dscale.tensor); }
  const std::vector<int32_t> offsets = {0, 5, 5, 12};  // expert 1 gets no rows
  HostTensor x = test::random_tensor(DType::kBF16, {12, k}, rng);
  auto dx = to_device(x.tensor);
  auto dy = DeviceTensor::empty(DType::kF32, {12, n});
  ASSERT_TRUE(dx.ok() && dy.ok());
  const Status st = moe_grouped_gemm_cuda(*gemm, {dx->tensor, ws, offsets, dy->tensor, scales}, nullptr);
  ASSERT_TRUE(st.ok()) << st.to_string();
  auto y = to_host(dy->tensor);
  ASSERT_TRUE(y.ok());
  const std::vector<float> xf = test::to_f32(x.tensor);
  for (int e = 0; e < 3; ++e) {
    const int64_t r0 = offsets[static_cast<size_t>(e)], r1 = offsets[static_cast<size_t>(e) + 1];
    if (r0 == r1) continue;
    HostTensor ref = HostTensor::zeros(DType::kF32, {r1 - r0, n});
    Tensor xe = Tensor::view(const_cast<float*>(xf.data()) + r0 * k, DType::kF32, {r1 - r0, k});
    ASSERT_TRUE(linear_cpu({xe, experts[static_cast<size_t>(e)].w.tensor, {}, ref.tensor,
                            experts[static_cast<size_t>(e)].scale.tensor}).ok());
    std::vector<float> got(y->tensor.ptr<float>() + r0 * n, y->tensor.ptr<float>() + r1 * n);
    EXPECT_LT(scaled_error(got, test::to_f32(ref.tensor)), 1e-4) << "expert " << e;
  }
  // A scale list of the wrong length is an error.
  EXPECT_FALSE(moe_grouped_gemm_cuda(*gemm, {dx->tensor, ws, offsets, dy->tensor, std::span<const Tensor>(scales).first(2)},
                                     nullptr).ok());
}

}  // namespace
}  // namespace kiln
