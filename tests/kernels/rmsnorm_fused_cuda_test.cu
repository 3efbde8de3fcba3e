// The fused rows of rmsnorm_cuda (residual + combine and / or fp8 out) on fresh random bf16 inputs:
//   combine: against moe_unpermute_cuda followed by the plain residual row, bit for bit (the same
//            arithmetic in one kernel), and against the CPU reference (weighted sum, rmsnorm_cpu);
//   quant:   out_q / out_scale against quantize_fp8_cpu of the kernel's own bf16 out, bit for bit;
//   route:   logits / top-k against moe_route_cuda's fused router on the kernel's own out, bit for
//            bit, and out / residual / out_q against the residual + quant row (bit for bit where
//            both run the same thread count: hidden <= 4096).
// Odd token counts read the residual before the PDL wait (RmsNormArgs::residual_written_earlier),
// even ones after it: the same bits either way. Outputs are poisoned before each run. Skipped
// without a GPU.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/moe.h"
#include "kiln/kernels/moe_cuda.h"
#include "kiln/kernels/quantize.h"
#include "kiln/kernels/rmsnorm.h"
#include "tests/kernels/device_tensors_cuda.h"
#include "tests/kernels/kernel_test_util.h"

namespace kiln {
namespace {

using test::poisoned;
using test::upload;

HostTensor down(const Tensor& device) {
  auto r = to_host(device);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return std::move(r).value();
}
bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.data, b.data, static_cast<size_t>(a.nbytes())) == 0;
}

TEST(RmsNormFusedCuda, CombineAndQuantRows) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(23);
  struct Shape { int64_t n, k, hidden; };
  const std::vector<Shape> shapes = {{1, 2, 4096}, {3, 1, 576}, {17, 2, 4096}, {64, 3, 2048}, {2, 2, 32768}, {5, 4, 8}};
  int rows_run = 0;
  for (const auto& v : rmsnorm_cuda_variants()) {
    if ((!v.combine && !v.quant) || v.route) continue;  // route: RouteRow
    ++rows_run;
    for (const auto& s : shapes) {
      const int64_t n = s.n, k = v.combine ? s.k : 1, hidden = s.hidden;
      SCOPED_TRACE("combine=" + std::to_string(v.combine) + " quant=" + std::to_string(v.quant) + " n=" + std::to_string(n) +
                   " k=" + std::to_string(k) + " hidden=" + std::to_string(hidden));
      HostTensor x = test::random_tensor(DType::kBF16, {n * k, hidden}, rng);
      HostTensor r = test::random_tensor(DType::kBF16, {n, hidden}, rng, 2.0f);
      HostTensor w = test::random_tensor(DType::kBF16, {hidden}, rng);
      HostTensor sw = test::random_tensor(DType::kF32, {n, k}, rng);
      if (n > 1) std::memset(x.tensor.ptr<uint16_t>() + k * hidden, 0, static_cast<size_t>(k * hidden) * 2);  // a zero row
      if (n > 1 && v.quant) std::memset(r.tensor.ptr<uint16_t>() + hidden, 0, static_cast<size_t>(hidden) * 2);  // scale 1 row
      DeviceTensor dx = upload(x.tensor), dr = upload(r.tensor), dw = upload(w.tensor), dsw = upload(sw.tensor);
      DeviceTensor dout = poisoned(DType::kBF16, {n, hidden});
      DeviceTensor dq = poisoned(DType::kFp8E4M3, {n, hidden}), dqs = poisoned(DType::kF32, {n});
      RmsNormArgs args{dx.tensor, dr.tensor, dw.tensor, dout.tensor, 1e-5f};
      args.residual_written_earlier = n % 2 == 1;  // both residual loads (before / after the PDL wait), same bits
      if (v.combine) args.slot_weights = dsw.tensor;
      if (v.quant) {
        args.out_q = dq.tensor;
        args.out_scale = dqs.tensor;
      }
      const Status st = rmsnorm_cuda(args, nullptr);
      ASSERT_TRUE(st.ok()) << st.to_string();
      const HostTensor out = down(dout.tensor), res = down(dr.tensor);

      // The unfused path on fresh copies: [moe_unpermute_cuda,] then the plain residual row.
      DeviceTensor dr2 = upload(r.tensor), dout2 = poisoned(DType::kBF16, {n, hidden}), dsum = poisoned(DType::kBF16, {n, hidden});
      Tensor xin = dx.tensor;
      if (v.combine) {
        std::vector<int32_t> iota(static_cast<size_t>(n * k));
        for (size_t i = 0; i < iota.size(); ++i) iota[i] = static_cast<int32_t>(i);
        DeviceTensor dinv = upload(Tensor::view(iota.data(), DType::kInt32, {n * k}));
        ASSERT_TRUE(moe_unpermute_cuda({dx.tensor, dsw.tensor, dinv.tensor, dsum.tensor}, nullptr).ok());
        xin = dsum.tensor;
      }
      ASSERT_TRUE(rmsnorm_cuda({xin, dr2.tensor, dw.tensor, dout2.tensor, 1e-5f}, nullptr).ok());
      EXPECT_TRUE(same_bytes(out.tensor, down(dout2.tensor).tensor)) << "out differs from the unfused kernels";
      EXPECT_TRUE(same_bytes(res.tensor, down(dr2.tensor).tensor)) << "residual differs from the unfused kernels";

      // The CPU reference: weighted sum in f32 (rounded to bf16 as the kernel stores it), rmsnorm_cpu.
      const std::vector<float> xf = test::to_f32(x.tensor);
      HostTensor xs = HostTensor::zeros(DType::kF32, {n, hidden}), rf = HostTensor::zeros(DType::kF32, {n, hidden});
      const std::vector<float> r0 = test::to_f32(r.tensor);
      std::copy(r0.begin(), r0.end(), rf.tensor.ptr<float>());
      for (int64_t t = 0; t < n; ++t)
        for (int64_t i = 0; i < hidden; ++i) {
          float acc = 0.f;
          for (int64_t j = 0; j < k; ++j)
            acc += (v.combine ? sw.tensor.ptr<float>()[t * k + j] : 1.0f) * xf[static_cast<size_t>((t * k + j) * hidden + i)];
          xs.tensor.ptr<float>()[t * hidden + i] = bf16_to_f32(f32_to_bf16(acc));
        }
      HostTensor ref = HostTensor::zeros(DType::kF32, {n, hidden});
      ASSERT_TRUE(rmsnorm_cpu({xs.tensor, rf.tensor, w.tensor, ref.tensor, 1e-5f}).ok());
      EXPECT_LT(test::scaled_error(test::to_f32(out.tensor), test::to_f32(ref.tensor)), 1e-2);
      EXPECT_LT(test::scaled_error(test::to_f32(res.tensor), test::to_f32(rf.tensor)), 1e-2);

      if (v.quant) {  // quantize_fp8_cpu of the kernel's bf16 out, bit for bit
        HostTensor q = HostTensor::zeros(DType::kFp8E4M3, {n, hidden}), qs = HostTensor::zeros(DType::kF32, {n});
        ASSERT_TRUE(quantize_fp8_cpu({out.tensor, q.tensor, qs.tensor}).ok());
        EXPECT_TRUE(same_bytes(down(dq.tensor).tensor, q.tensor)) << "out_q";
        EXPECT_TRUE(same_bytes(down(dqs.tensor).tensor, qs.tensor)) << "out_scale";
      }
    }
  }
  EXPECT_GE(rows_run, 3);  // combine, quant, both

  // Misuse is an error, not a crash: slot weights of the wrong shape, out_q of the wrong dtype.
  HostTensor x = test::random_tensor(DType::kBF16, {4, 64}, rng), r = test::random_tensor(DType::kBF16, {2, 64}, rng);
  HostTensor w = test::random_tensor(DType::kBF16, {64}, rng), sw = test::random_tensor(DType::kF32, {2, 3}, rng);
  DeviceTensor dx = upload(x.tensor), dr = upload(r.tensor), dw = upload(w.tensor), dsw = upload(sw.tensor);
  DeviceTensor dout = poisoned(DType::kBF16, {2, 64}), dbad = poisoned(DType::kBF16, {2, 64}), ds = poisoned(DType::kF32, {2});
  RmsNormArgs bad{dx.tensor, dr.tensor, dw.tensor, dout.tensor, 1e-5f};
  bad.slot_weights = dsw.tensor;  // k = 3, but x has 2 rows per token
  EXPECT_EQ(rmsnorm_cuda(bad, nullptr).code(), StatusCode::kInvalidArgument);
  RmsNormArgs badq{Tensor::view(dx.tensor.data, DType::kBF16, {2, 64}, Device::kCuda), dr.tensor, dw.tensor, dout.tensor, 1e-5f};
  badq.out_q = dbad.tensor;
  badq.out_scale = ds.tensor;
  EXPECT_EQ(rmsnorm_cuda(badq, nullptr).code(), StatusCode::kInvalidArgument);
  RmsNormArgs noscale{Tensor::view(dx.tensor.data, DType::kBF16, {2, 64}, Device::kCuda), {}, dw.tensor, dout.tensor, 1e-5f};
  noscale.out_scale = ds.tensor;  // quant without the residual: no such row
  EXPECT_EQ(rmsnorm_cuda(noscale, nullptr).code(), StatusCode::kUnimplemented);
}

TEST(RmsNormFusedCuda, RouteRow) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(29);
  struct Shape { int64_t n, hidden, experts, k; bool renorm; };
  const std::vector<Shape> shapes = {{1, 4096, 8, 2, true}, {5, 2048, 8, 2, false}, {3, 4096, 64, 4, true}, {2, 8192, 8, 2, true},
                                     {4, 576, 3, 1, true}};
  int rows_run = 0;
  for (const auto& v : rmsnorm_cuda_variants()) {
    if (!v.route) continue;
    ++rows_run;
    for (const auto& sh : shapes) {
      const int64_t n = sh.n, hidden = sh.hidden, e = sh.experts, k = sh.k;
      SCOPED_TRACE("n=" + std::to_string(n) + " hidden=" + std::to_string(hidden) + " experts=" + std::to_string(e) +
                   " k=" + std::to_string(k));
      HostTensor x = test::random_tensor(DType::kBF16, {n, hidden}, rng), r = test::random_tensor(DType::kBF16, {n, hidden}, rng, 2.0f);
      HostTensor w = test::random_tensor(DType::kBF16, {hidden}, rng), rw = test::random_tensor(DType::kBF16, {e, hidden}, rng, 0.05f);
      DeviceTensor dx = upload(x.tensor), dr = upload(r.tensor), dw = upload(w.tensor), drw = upload(rw.tensor), dr2 = upload(r.tensor);
      DeviceTensor dout = poisoned(DType::kBF16, {n, hidden}), dq = poisoned(DType::kFp8E4M3, {n, hidden}), dqs = poisoned(DType::kF32, {n});
      DeviceTensor dl = poisoned(DType::kF32, {n, e}), di = poisoned(DType::kInt32, {n, k}), dtw = poisoned(DType::kF32, {n, k});
      MoeRouteArgs route{dl.tensor, di.tensor, dtw.tensor, sh.renorm, {}, drw.tensor};
      RmsNormArgs args{dx.tensor, dr.tensor, dw.tensor, dout.tensor, 1e-5f};
      args.out_q = dq.tensor;
      args.out_scale = dqs.tensor;
      args.route = &route;
      args.residual_written_earlier = n % 2 == 1;  // both residual loads (before / after the PDL wait), same bits
      args.route_ids_cleared_early = n % 2 == 0;   // ids set to -1 first, then routed: the same ids
      const Status st = rmsnorm_cuda(args, nullptr);
      ASSERT_TRUE(st.ok()) << st.to_string();
      // The router kernel on the fused kernel's own out.
      DeviceTensor dl2 = poisoned(DType::kF32, {n, e}), di2 = poisoned(DType::kInt32, {n, k}), dtw2 = poisoned(DType::kF32, {n, k});
      ASSERT_TRUE(moe_route_cuda({dl2.tensor, di2.tensor, dtw2.tensor, sh.renorm, dout.tensor, drw.tensor}, nullptr).ok());
      EXPECT_TRUE(same_bytes(down(dl.tensor).tensor, down(dl2.tensor).tensor)) << "router logits";
      EXPECT_TRUE(same_bytes(down(di.tensor).tensor, down(di2.tensor).tensor)) << "top-k ids";
      EXPECT_TRUE(same_bytes(down(dtw.tensor).tensor, down(dtw2.tensor).tensor)) << "top-k weights";
      const HostTensor ids = down(di.tensor);
      for (int64_t i = 0; i < n * k; ++i) EXPECT_TRUE(ids.tensor.ptr<int32_t>()[i] >= 0 && ids.tensor.ptr<int32_t>()[i] < e);
      // The norm part against the residual + quant row.
      DeviceTensor dout2 = poisoned(DType::kBF16, {n, hidden}), dq2 = poisoned(DType::kFp8E4M3, {n, hidden}), dqs2 = poisoned(DType::kF32, {n});
      RmsNormArgs plain{dx.tensor, dr2.tensor, dw.tensor, dout2.tensor, 1e-5f};
      plain.out_q = dq2.tensor;
      plain.out_scale = dqs2.tensor;
      ASSERT_TRUE(rmsnorm_cuda(plain, nullptr).ok());
      EXPECT_TRUE(same_bytes(down(dr.tensor).tensor, down(dr2.tensor).tensor)) << "residual";
      if (hidden <= 4096) {
        EXPECT_TRUE(same_bytes(down(dout.tensor).tensor, down(dout2.tensor).tensor)) << "out";
        EXPECT_TRUE(same_bytes(down(dq.tensor).tensor, down(dq2.tensor).tensor)) << "out_q";
      } else {
        EXPECT_LT(test::scaled_error(test::to_f32(down(dout.tensor).tensor), test::to_f32(down(dout2.tensor).tensor)), 1e-2);
      }
    }
  }
  EXPECT_EQ(rows_run, 1);
  // A route without fp8 out: no such row; a route whose x is set: an error.
  HostTensor x = test::random_tensor(DType::kBF16, {2, 64}, rng), rw = test::random_tensor(DType::kBF16, {4, 64}, rng);
  DeviceTensor dx = upload(x.tensor), dr = upload(x.tensor), drw = upload(rw.tensor), dw = upload(test::random_tensor(DType::kBF16, {64}, rng).tensor);
  DeviceTensor dout = poisoned(DType::kBF16, {2, 64}), dq = poisoned(DType::kFp8E4M3, {2, 64}), dqs = poisoned(DType::kF32, {2});
  DeviceTensor dl = poisoned(DType::kF32, {2, 4}), di = poisoned(DType::kInt32, {2, 2}), dtw = poisoned(DType::kF32, {2, 2});
  MoeRouteArgs route{dl.tensor, di.tensor, dtw.tensor, true, {}, drw.tensor};
  RmsNormArgs a{dx.tensor, dr.tensor, dw.tensor, dout.tensor, 1e-5f};
  a.route = &route;
  EXPECT_EQ(rmsnorm_cuda(a, nullptr).code(), StatusCode::kUnimplemented);
  a.out_q = dq.tensor;
  a.out_scale = dqs.tensor;
  route.x = dx.tensor;
  EXPECT_EQ(rmsnorm_cuda(a, nullptr).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kiln
