// silu_mul_fp8_cuda against silu_mul_fp8_cpu (and the two-kernel path it replaces: silu_mul_cuda
// then the GPU quantizer), Gemm::run_quantized against Gemm::run on the same per-token-quantized x
// (aligned and unaligned scale slices), and moe_grouped_gemm_cuda with fp8 x against bf16 x.
// Fresh random inputs. GPU suites skip without a GPU.
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "kiln/kernels/activation.h"
#include "kiln/kernels/cuda/activation/fp8_row_divisor.cuh"
#include "kiln/kernels/cuda/activation/swiglu_exact.cuh"
#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/gemm_cuda.h"
#include "kiln/kernels/moe_cuda.h"
#include "kiln/kernels/quantize.h"
#include "kiln/kernels/silu_mul_fp8.h"
#include "tests/kernels/kernel_test_util.h"

namespace kiln {
namespace {

std::vector<float> dequant(const HostTensor& q, const HostTensor& s) {
  const int64_t rows = q.tensor.shape[0], k = q.tensor.shape[1];
  std::vector<float> v = test::to_f32(q.tensor);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < k; ++i) v[static_cast<size_t>(r * k + i)] *= s.tensor.ptr<float>()[r];
  return v;
}

TEST(SiluMulFp8Cpu, MatchesSiluMulThenQuantize) {
  std::mt19937 rng(7);
  const int64_t rows = 5, inter = 48;
  HostTensor gu = test::random_tensor(DType::kF32, {rows, 2 * inter}, rng, 2.0f);
  HostTensor q = HostTensor::zeros(DType::kFp8E4M3, {rows, inter}), s = HostTensor::zeros(DType::kF32, {rows});
  ASSERT_TRUE(silu_mul_fp8_cpu({gu.tensor, q.tensor, s.tensor}).ok());
  HostTensor act = HostTensor::zeros(DType::kF32, {rows, inter});
  ASSERT_TRUE(silu_mul_cpu({gu.tensor, act.tensor}).ok());
  const std::vector<float> got = dequant(q, s), want = test::to_f32(act.tensor);
  EXPECT_LE(test::scaled_error(got, want), 0.07);  // e4m3: 3 mantissa bits
  for (int64_t r = 0; r < rows; ++r) EXPECT_GT(s.tensor.ptr<float>()[r], 0.0f);
}

// Random gate_up [rows, 2 * inter] bf16 (row stride 2 * inter + pad), with, from row 2 on, some g
// outside the fast division's range (0, -0, tiny, > 64, < -64): those slices take the slow path.
HostTensor swiglu_input(int64_t rows, int64_t inter, int64_t pad, std::mt19937& rng) {
  HostTensor gu = test::random_tensor(DType::kBF16, {rows, 2 * inter + pad}, rng, 3.0f);
  gu.tensor.shape[1] = 2 * inter;
  const uint16_t specials[] = {0x0000, 0x8000, 0x0d00 /* 2^-101 */, 0x42c8 /* 100 */, 0xc2c8, 0xc4fa /* -2000 */};
  for (int64_t r = 2; r < rows; ++r)
    for (int64_t j = 0; j < 6; ++j)
      gu.tensor.row<uint16_t>(r)[static_cast<int64_t>(rng() % static_cast<uint32_t>(inter))] = specials[j];
  if (rows > 1) std::memset(gu.tensor.row<uint16_t>(1), 0, 2 * inter * 2);  // an all-zero row: scale 1
  return gu;
}

// Every variant row on every shape it takes, against silu_mul_fp8_cpu (the host expf differs in the
// last bit now and then: a few codes one step apart) and against the two-kernel path it replaces
// (silu_mul_cuda, then the GPU quantizer: the same bits). Row strides padded past 2 * inter too.
TEST(SiluMulFp8Cuda, EveryVariantMatchesReferenceAndTwoKernelPath) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(11);
  const auto variants = silu_mul_fp8_cuda_variants();
  struct Shape {
    int64_t rows, inter, pad;
  };
  const Shape shapes[] = {{1, 14336, 0},  {3, 8, 0},        {64, 24, 0},     {129, 1000, 16}, {3, 4096, 0},
                          {64, 11008, 0}, {129, 14336, 8},  {3, 16384, 0},   {130, 4096, 0},  {1000, 2056, 0},
                          {4000, 1000, 8}, {4096, 14336, 0}};  // 4000 x 1000: ~10 rows per persistent block
  for (const Shape& sh : shapes) {
    const int64_t rows = sh.rows, inter = sh.inter;
    const std::string where = std::to_string(rows) + " rows of " + std::to_string(inter);
    HostTensor gu = swiglu_input(rows, inter, sh.pad, rng);
    HostTensor q = HostTensor::zeros(DType::kFp8E4M3, {rows, inter}), s = HostTensor::zeros(DType::kF32, {rows});
    ASSERT_TRUE(silu_mul_fp8_cpu({gu.tensor, q.tensor, s.tensor}).ok());
    const std::vector<float> want = dequant(q, s);
    Tensor whole = gu.tensor;
    whole.shape[1] = 2 * inter + sh.pad;
    auto dwhole = to_device(whole);
    ASSERT_TRUE(dwhole.ok());
    Tensor dgu = dwhole->tensor;
    dgu.shape[1] = 2 * inter;
    // The two-kernel path.
    auto act = DeviceTensor::empty(DType::kBF16, {rows, inter});
    auto q2 = DeviceTensor::empty(DType::kFp8E4M3, {rows, inter});
    auto s2 = DeviceTensor::empty(DType::kF32, {rows});
    ASSERT_TRUE(act.ok() && q2.ok() && s2.ok());
    ASSERT_TRUE(silu_mul_cuda({dgu, act->tensor}, nullptr).ok());
    ASSERT_TRUE(quantize_fp8_cuda({act->tensor, q2->tensor, s2->tensor}, nullptr).ok());
    auto hq2 = to_host(q2->tensor);
    auto hs2 = to_host(s2->tensor);
    ASSERT_TRUE(hq2.ok() && hs2.ok());
    int ran = 0;
    for (size_t v = 0; v <= variants.size(); ++v) {  // the last pass: silu_mul_fp8_cuda's own pick
      const std::string what =
          (v < variants.size() ? "variant " + std::to_string(v) : std::string("dispatch")) + ", " + where;
      auto dq = DeviceTensor::empty(DType::kFp8E4M3, {rows, inter});
      auto ds = DeviceTensor::empty(DType::kF32, {rows});
      ASSERT_TRUE(dq.ok() && ds.ok());
      ASSERT_EQ(cudaMemset(dq->tensor.data, 0x55, rows * inter), cudaSuccess);
      SiluMulFp8Args args{dgu, dq->tensor, ds->tensor};
      args.trigger_early = v % 2 == 1;  // (the launch order only: the same bits either way)
      if (v < variants.size()) {
        const SiluMulFp8CudaVariant& info = variants[v];
        const bool takes = !info.dequant && inter <= info.max_inter && (info.max_rows == 0 || rows <= info.max_rows);
        const Status st = silu_mul_fp8_cuda_variant(args, v, nullptr);
        if (!takes) {
          EXPECT_EQ(st.code(), StatusCode::kUnimplemented) << what;
          continue;
        }
        ASSERT_TRUE(st.ok()) << what << ": " << st.to_string();
        ++ran;
      } else {
        ASSERT_TRUE(silu_mul_fp8_cuda(args, nullptr).ok()) << what;
      }
      auto hq = to_host(dq->tensor);
      auto hs = to_host(ds->tensor);
      ASSERT_TRUE(hq.ok() && hs.ok());
      EXPECT_EQ(std::memcmp(hq2->tensor.data, hq->tensor.data, rows * inter), 0) << what;
      EXPECT_EQ(std::memcmp(hs2->tensor.data, hs->tensor.data, rows * 4), 0) << what;
      int64_t diff = 0;
      for (int64_t i = 0; i < rows * inter; ++i) diff += hq->tensor.ptr<uint8_t>()[i] != q.tensor.ptr<uint8_t>()[i];
      for (int64_t r = 0; r < rows; ++r)
        EXPECT_NEAR(hs->tensor.ptr<float>()[r], s.tensor.ptr<float>()[r], 1e-2 * s.tensor.ptr<float>()[r]) << r;
      if (rows > 1) EXPECT_EQ(hs->tensor.ptr<float>()[1], 1.0f) << what;
      EXPECT_LE(diff, rows * inter / 100 + 1) << what;
      EXPECT_LE(test::scaled_error(dequant(*hq, *hs), want), 0.08) << what;
    }
    EXPECT_GT(ran, 0) << where;
  }
}

// swiglu_exact.cuh: silu<true> (the division written out) against silu<false> (the expression)
// over every bf16 g that in_fast_range admits, bit for bit; and the admitted set is what the
// header says ([2^-90, 64) in magnitude).
__global__ void silu_fast_vs_exact(uint32_t* mismatches, uint32_t* admitted) {
  const uint32_t bits = blockIdx.x * blockDim.x + threadIdx.x;  // 65536 threads: every bf16
  const uint32_t word = bits | bits << 16;
  cuda::swiglu::RangeAcc range;
  cuda::swiglu::range_add8(range, make_uint4(word, word, word, word));
  if (!cuda::swiglu::in_fast_range(range)) return;
  atomicAdd(admitted, 1u);
  const float g = __uint_as_float(bits << 16);
  if (__float_as_uint(cuda::swiglu::silu<true>(g)) != __float_as_uint(cuda::swiglu::silu<false>(g)))
    atomicAdd(mismatches, 1u);
}

TEST(SiluMulFp8Cuda, FastSiluIsTheDivisionOverItsRange) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  auto counts = DeviceTensor::empty(DType::kInt32, {2});
  ASSERT_TRUE(counts.ok());
  ASSERT_EQ(cudaMemset(counts->tensor.data, 0, 8), cudaSuccess);
  uint32_t* c = counts->tensor.ptr<uint32_t>();
  silu_fast_vs_exact<<<256, 256>>>(c, c + 1);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  auto h = to_host(counts->tensor);
  ASSERT_TRUE(h.ok());
  int64_t want = 0;  // bf16 with |g| in [2^-90, 64), both signs
  for (uint32_t b = 0; b < 0x8000; ++b) want += b >= cuda::swiglu::kFastMinBits && b < cuda::swiglu::kFastEndBits;
  EXPECT_EQ(h->tensor.ptr<uint32_t>()[0], 0u);
  EXPECT_EQ(h->tensor.ptr<uint32_t>()[1], static_cast<uint32_t>(2 * want));
}

// fp8_row_divisor.cuh: divide<true> against __fdiv_rn for every bf16 x in the quantizer's domain
// (|x| <= 449 s) and scales s = amax / 448 of every positive finite bf16 amax plus 8192 random f32
// s in [2^-60, 2^60]: the same f32 bits where |q| >= 2^-11, the same e4m3 code everywhere.
__device__ uint32_t test_scale(uint32_t i) {
  if (i < 0x7f80) return __float_as_uint(__fdiv_rn(__uint_as_float(i << 16), 448.0f));
  uint32_t h = i * 0x9E3779B1u;
  h ^= h >> 15; h *= 0x2C1B3C6Du; h ^= h >> 12; h *= 0x297A2D39u; h ^= h >> 15;
  return (67u + h % 121u) << 23 | (h >> 9);  // exponent 2^-60 .. 2^60, any mantissa
}
__global__ void divide_fast_vs_fdiv(uint32_t num_scales, uint32_t* mismatches, unsigned long long* checked) {
  const uint32_t xbits = (blockIdx.x * blockDim.x + threadIdx.x) & 0xffff;
  const float x = __uint_as_float(xbits << 16);
  uint32_t bad = 0, n = 0;
  const uint32_t step = (gridDim.x * blockDim.x) >> 16;
  for (uint32_t i = (blockIdx.x * blockDim.x + threadIdx.x) >> 16; i < num_scales; i += step) {
    const float s = __uint_as_float(test_scale(i));
    const cuda::fp8row::RowDivisor d = cuda::fp8row::row_divisor(s);
    if (!d.fast || !(fabsf(x) <= 449.0f * s)) continue;
    ++n;
    const float fast = cuda::fp8row::divide<true>(x, d), exact = __fdiv_rn(x, s);
    const bool f32_differs = fabsf(exact) >= 0x1p-11f && __float_as_uint(fast) != __float_as_uint(exact);
    const bool e4m3_differs = __nv_cvt_float_to_fp8(fast, __NV_SATFINITE, __NV_E4M3) !=
                              __nv_cvt_float_to_fp8(exact, __NV_SATFINITE, __NV_E4M3);
    bad += f32_differs || e4m3_differs;
  }
  if (bad) atomicAdd(mismatches, bad);
  atomicAdd(checked, static_cast<unsigned long long>(n));
}

TEST(SiluMulFp8Cuda, FastDivisorIsTheDivisionOverTheQuantizersDomain) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  auto counts = DeviceTensor::empty(DType::kInt32, {4});
  ASSERT_TRUE(counts.ok());
  ASSERT_EQ(cudaMemset(counts->tensor.data, 0, 16), cudaSuccess);
  uint32_t* c = counts->tensor.ptr<uint32_t>();
  divide_fast_vs_fdiv<<<4096, 256>>>(0x7f80 + (1u << 13), c, reinterpret_cast<unsigned long long*>(c + 2));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  auto h = to_host(counts->tensor);
  ASSERT_TRUE(h.ok());
  uint64_t checked = 0;
  std::memcpy(&checked, h->tensor.ptr<uint32_t>() + 2, 8);
  EXPECT_EQ(h->tensor.ptr<uint32_t>()[0], 0u);
  EXPECT_GT(checked, uint64_t{1} << 28);
}

TEST(SiluMulFp8Cuda, RejectsWhatItDoesNotTake) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  auto gu = DeviceTensor::empty(DType::kBF16, {2, 2 * 20000});
  auto q = DeviceTensor::empty(DType::kFp8E4M3, {2, 20000});
  auto s = DeviceTensor::empty(DType::kF32, {2});
  ASSERT_TRUE(gu.ok() && q.ok() && s.ok());
  EXPECT_EQ(silu_mul_fp8_cuda({gu->tensor, q->tensor, s->tensor}, nullptr).code(), StatusCode::kUnimplemented);
  auto q1 = DeviceTensor::empty(DType::kFp8E4M3, {3, 20000});
  ASSERT_TRUE(q1.ok());
  EXPECT_EQ(silu_mul_fp8_cuda({gu->tensor, q1->tensor, s->tensor}, nullptr).code(), StatusCode::kInvalidArgument);
}

struct Fp8W {
  DeviceTensor w, s;
};
Fp8W fp8_weights(int64_t n, int64_t k, std::mt19937& rng) {
  HostTensor f = test::random_tensor(DType::kF32, {n, k}, rng, 0.05f);
  auto q = quantize_fp8_weights_cpu(f.tensor, false);
  EXPECT_TRUE(q.ok());
  auto w = to_device(q->q.tensor);
  auto s = to_device(q->scale.tensor);
  EXPECT_TRUE(w.ok() && s.ok());
  return {std::move(w).value(), std::move(s).value()};
}

// Random bf16 x [m, k] on the device, and its per-token fp8 quantization (quantize_fp8_cpu).
struct QuantizedX {
  DeviceTensor x, q, scale;
};
QuantizedX quantized_x(int64_t m, int64_t k, std::mt19937& rng) {
  HostTensor x = test::random_tensor(DType::kBF16, {m, k}, rng);
  HostTensor xq = HostTensor::zeros(DType::kFp8E4M3, {m, k}), xs = HostTensor::zeros(DType::kF32, {m});
  EXPECT_TRUE(quantize_fp8_cpu({x.tensor, xq.tensor, xs.tensor}).ok());
  auto dx = to_device(x.tensor);
  auto dxq = to_device(xq.tensor);
  auto dxs = to_device(xs.tensor);
  EXPECT_TRUE(dx.ok() && dxq.ok() && dxs.ok());
  return {std::move(dx).value(), std::move(dxq).value(), std::move(dxs).value()};
}

// Gemm::run_quantized on x quantized per token (bit-identical to what Gemm::run's fp8 path does
// itself) against Gemm::run on the bf16 x; rows [3, m) too: an unaligned scale slice.
TEST(GemmQuantizedCuda, MatchesRunOnBf16X) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(5);
  auto gemm = Gemm::create();
  ASSERT_TRUE(gemm.ok());
  for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{40, 256, 512}, {300, 1024, 2048}, {5, 128, 4096}}) {
    Fp8W W = fp8_weights(n, k, rng);
    const QuantizedX qx = quantized_x(m, k, rng);
    const DeviceTensor *dx = &qx.x, *dxq = &qx.q, *dxs = &qx.scale;
    auto y1 = DeviceTensor::empty(DType::kBF16, {m, n});
    auto y2 = DeviceTensor::empty(DType::kBF16, {m, n});
    ASSERT_TRUE(y1.ok() && y2.ok());
    GemmOptions o;
    o.skinny_max_m_fp8 = 0;  // the fp8 cuBLASLt path for every m: what run_quantized computes
    auto g0 = Gemm::create(o);
    ASSERT_TRUE(g0.ok());
    ASSERT_TRUE(g0->run({dx->tensor, W.w.tensor, {}, y1->tensor, W.s.tensor}, nullptr).ok());
    ASSERT_TRUE(gemm->run_quantized({dxq->tensor, dxs->tensor, W.w.tensor, {}, y2->tensor, W.s.tensor}, nullptr).ok());
    const std::vector<float> a = test::to_f32(to_host(y1->tensor)->tensor), b = test::to_f32(to_host(y2->tensor)->tensor);
    EXPECT_LE(test::scaled_error(b, a), 1e-2) << m << "x" << n << "x" << k;
    // rows [3, m): x and its scales sliced (scale pointer 12 bytes into the buffer)
    auto y3 = DeviceTensor::empty(DType::kBF16, {m - 3, n});
    ASSERT_TRUE(y3.ok());
    ASSERT_TRUE(gemm->run_quantized({dxq->tensor.slice0(3, m), dxs->tensor.slice0(3, m), W.w.tensor, {}, y3->tensor, W.s.tensor},
                                    nullptr).ok());
    const std::vector<float> c = test::to_f32(to_host(y3->tensor)->tensor);
    const std::vector<float> a3(a.begin() + 3 * n, a.end());
    EXPECT_LE(test::scaled_error(c, a3), 1e-2) << "slice " << m << "x" << n << "x" << k;
  }
}

// The grouped expert GEMM on fp8 x (per-row scales) against the same on bf16 x.
TEST(MoeGroupedGemmCuda, Fp8XMatchesBf16X) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(9);
  const int64_t e = 4, n = 512, k = 1024;
  const std::vector<int32_t> offsets = {0, 70, 70, 133, 200};  // an empty expert, odd starts
  const int64_t rows = offsets.back();
  std::vector<Fp8W> ws;
  std::vector<Tensor> w, s;
  for (int64_t i = 0; i < e; ++i) ws.push_back(fp8_weights(n, k, rng));
  for (auto& x : ws) { w.push_back(x.w.tensor); s.push_back(x.s.tensor); }
  const QuantizedX qx = quantized_x(rows, k, rng);
  const DeviceTensor *dx = &qx.x, *dxq = &qx.q, *dxs = &qx.scale;
  auto y1 = DeviceTensor::empty(DType::kBF16, {rows, n});
  auto y2 = DeviceTensor::empty(DType::kBF16, {rows, n});
  ASSERT_TRUE(y1.ok() && y2.ok());
  GemmOptions o;
  o.skinny_max_m_fp8 = 0;
  auto gemm = Gemm::create(o);
  ASSERT_TRUE(gemm.ok());
  ASSERT_TRUE(moe_grouped_gemm_cuda(*gemm, {dx->tensor, w, offsets, y1->tensor, s}, nullptr).ok());
  ASSERT_TRUE(moe_grouped_gemm_cuda(*gemm, {dxq->tensor, w, offsets, y2->tensor, s, dxs->tensor}, nullptr).ok());
  const std::vector<float> a = test::to_f32(to_host(y1->tensor)->tensor), b = test::to_f32(to_host(y2->tensor)->tensor);
  EXPECT_LE(test::scaled_error(b, a), 1e-2);
  // fp8 x without its scales is refused
  EXPECT_FALSE(moe_grouped_gemm_cuda(*gemm, {dxq->tensor, w, offsets, y2->tensor, s}, nullptr).ok());
}

}  // namespace
}  // namespace kiln
