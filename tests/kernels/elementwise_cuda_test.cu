// GPU RMSNorm (+ residual), SiLU-mul, embedding gather and RoPE + paged KV write against the CPU
// references, on fresh random bf16 inputs over several shapes, for every row of each family's
// variant table. Outputs are poisoned (NaN) before each run so unwritten elements fail.
// Skipped when no GPU is present (CI).
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "kiln/kernels/activation.h"
#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/embedding.h"
#include "kiln/kernels/rmsnorm.h"
#include "kiln/kernels/rope.h"
#include "tests/kernels/device_tensors_cuda.h"
#include "tests/kernels/kernel_test_util.h"

namespace kiln {
namespace {

using test::scaled_error;

constexpr double kBf16Tol = 1e-2;  // bf16 outputs vs the f32 reference on the same inputs

using test::poisoned;
using test::upload;

std::vector<float> download(const Tensor& device) {
  auto r = to_host(device, DType::kF32);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() ? test::to_f32(r->tensor) : std::vector<float>{};
}
HostTensor host_f32(const std::vector<float>& v, std::initializer_list<int64_t> shape) {
  HostTensor h = HostTensor::zeros(DType::kF32, shape);
  std::copy(v.begin(), v.end(), h.tensor.ptr<float>());
  return h;
}

TEST(RmsNormCuda, MatchesCpuReference) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(11);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 8}, {3, 576}, {17, 4096}, {97, 8192}, {4, 32768}};
  for (const auto& v : rmsnorm_cuda_variants()) {
    if (v.combine || v.quant) continue;  // the fused rows: rmsnorm_fused_cuda_test.cu
    for (auto [n, hidden] : shapes) {
      SCOPED_TRACE("variant residual=" + std::to_string(v.residual) + " n=" + std::to_string(n) + " hidden=" + std::to_string(hidden));
      HostTensor x = test::random_tensor(v.act, {n, hidden}, rng);
      HostTensor r = test::random_tensor(v.act, {n, hidden}, rng, 2.0f);
      HostTensor w = test::random_tensor(v.weight, {hidden}, rng);
      DeviceTensor dx = upload(x.tensor), dr = upload(r.tensor), dw = upload(w.tensor);
      DeviceTensor dout = poisoned(v.act, {n, hidden});
      const Status st = rmsnorm_cuda({dx.tensor, v.residual ? dr.tensor : Tensor{}, dw.tensor, dout.tensor, 1e-5f}, nullptr);
      ASSERT_TRUE(st.ok()) << st.to_string();
      HostTensor xf = host_f32(test::to_f32(x.tensor), {n, hidden}), rf = host_f32(test::to_f32(r.tensor), {n, hidden});
      HostTensor out = HostTensor::zeros(DType::kF32, {n, hidden});
      ASSERT_TRUE(rmsnorm_cpu({xf.tensor, v.residual ? rf.tensor : Tensor{}, w.tensor, out.tensor, 1e-5f}).ok());
      EXPECT_LT(scaled_error(download(dout.tensor), test::to_f32(out.tensor)), kBf16Tol);
      if (v.residual) EXPECT_LT(scaled_error(download(dr.tensor), test::to_f32(rf.tensor)), kBf16Tol);
      else EXPECT_EQ(download(dr.tensor), test::to_f32(r.tensor));  // untouched
    }
  }
  // Misuse is an error, not a crash.
  HostTensor x = test::random_tensor(DType::kBF16, {2, 12}, rng), w = test::random_tensor(DType::kBF16, {12}, rng);
  DeviceTensor dx = upload(x.tensor), dw = upload(w.tensor);
  EXPECT_EQ(rmsnorm_cuda({dx.tensor, {}, dw.tensor, dx.tensor, 1e-5f}, nullptr).code(), StatusCode::kUnimplemented);
  EXPECT_FALSE(rmsnorm_cuda({x.tensor, {}, w.tensor, x.tensor, 1e-5f}, nullptr).ok());  // host tensors
}

TEST(SiluMulCuda, MatchesCpuReference) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(12);
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 8}, {7, 1000}, {33, 14336}, {300, 2048}};
  for (const auto& v : silu_mul_cuda_variants()) {
    for (auto [n, inter] : shapes) {
      SCOPED_TRACE("n=" + std::to_string(n) + " inter=" + std::to_string(inter));
      HostTensor gu = test::random_tensor(v.act, {n, 2 * inter}, rng, 3.0f);
      DeviceTensor dgu = upload(gu.tensor), dout = poisoned(v.act, {n, inter});
      const Status st = silu_mul_cuda({dgu.tensor, dout.tensor}, nullptr);
      ASSERT_TRUE(st.ok()) << st.to_string();
      HostTensor guf = host_f32(test::to_f32(gu.tensor), {n, 2 * inter});
      HostTensor out = HostTensor::zeros(DType::kF32, {n, inter});
      ASSERT_TRUE(silu_mul_cpu({guf.tensor, out.tensor}).ok());
      EXPECT_LT(scaled_error(download(dout.tensor), test::to_f32(out.tensor)), kBf16Tol);
    }
  }
}

TEST(EmbeddingCuda, GathersRowsExactly) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(13);
  for (const auto& v : embedding_cuda_variants()) {
    for (int64_t n : {1, 17, 2048}) {
      const int64_t vocab = 1000, hidden = 576;
      HostTensor table = test::random_tensor(v.table, {vocab, hidden}, rng);
      std::vector<int32_t> ids(static_cast<size_t>(n));
      for (auto& id : ids) id = static_cast<int32_t>(rng() % vocab);
      ids[0] = static_cast<int32_t>(vocab - 1);
      DeviceTensor dtable = upload(table.tensor);
      DeviceTensor dids = upload(Tensor::view(ids.data(), DType::kInt32, {n}));
      DeviceTensor dout = poisoned(v.out, {n, hidden});
      const Status st = embedding_cuda({dids.tensor, dtable.tensor, dout.tensor}, nullptr);
      ASSERT_TRUE(st.ok()) << st.to_string();
      HostTensor ref = HostTensor::zeros(DType::kF32, {n, hidden});
      ASSERT_TRUE(embedding_cpu({Tensor::view(ids.data(), DType::kInt32, {n}), table.tensor, ref.tensor}).ok());
      EXPECT_EQ(download(dout.tensor), test::to_f32(ref.tensor)) << "n=" << n;
    }
  }
}

// RoPE + KV write. q, k, v are views into one fused [n, (hq + 2 hkv) d] qkv buffer when `fused`.
struct RopeCase {
  int64_t n, hq, hkv, d, block_size, num_blocks;
  bool fused, llama3;
};

void check_rope_case(const RopeKvWriteCudaVariant& v, const RopeCase& c, std::mt19937& rng) {
  SCOPED_TRACE("n=" + std::to_string(c.n) + " hq=" + std::to_string(c.hq) + " hkv=" + std::to_string(c.hkv) +
               " d=" + std::to_string(c.d) + " block=" + std::to_string(c.block_size) + " fused=" + std::to_string(c.fused));
  const int64_t n = c.n, hq = c.hq, hkv = c.hkv, d = c.d, width = (hq + 2 * hkv) * d;
  HostTensor qkv = test::random_tensor(v.act, {n, width}, rng);
  const std::vector<float> qkv_f = test::to_f32(qkv.tensor);
  std::vector<int32_t> pos(static_cast<size_t>(n)), slots(static_cast<size_t>(n));
  const int64_t num_slots = c.num_blocks * c.block_size;
  std::vector<int32_t> perm(static_cast<size_t>(num_slots));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  for (int64_t t = 0; t < n; ++t) {
    pos[static_cast<size_t>(t)] = static_cast<int32_t>(rng() % 131072);
    slots[static_cast<size_t>(t)] = (t % 7 == 3) ? -1 : perm[static_cast<size_t>(t % num_slots)];
  }
  RopeScaling scaling;
  if (c.llama3) { scaling.type = RopeScaling::Type::kLlama3; scaling.factor = 8.f; }
  std::vector<float> inv = rope_inv_freq(d, c.llama3 ? 500000.f : 10000.f, scaling);

  // CPU reference on the same (bf16-valued) inputs in f32, contiguous.
  std::vector<float> q_ref(static_cast<size_t>(n * hq * d)), k_ref(static_cast<size_t>(n * hkv * d)), v_ref(k_ref.size());
  for (int64_t t = 0; t < n; ++t) {
    const float* row = qkv_f.data() + t * width;
    std::copy_n(row, hq * d, q_ref.data() + t * hq * d);
    std::copy_n(row + hq * d, hkv * d, k_ref.data() + t * hkv * d);
    std::copy_n(row + (hq + hkv) * d, hkv * d, v_ref.data() + t * hkv * d);
  }
  const std::vector<float> v_in = v_ref;
  HostTensor kc_ref = HostTensor::zeros(DType::kF32, {c.num_blocks, c.block_size, hkv, d});
  HostTensor vc_ref = HostTensor::zeros(DType::kF32, {c.num_blocks, c.block_size, hkv, d});
  ASSERT_TRUE(rope_kv_write_cpu({Tensor::view(q_ref.data(), DType::kF32, {n, hq, d}),
                                 Tensor::view(k_ref.data(), DType::kF32, {n, hkv, d}),
                                 Tensor::view(v_ref.data(), DType::kF32, {n, hkv, d}),
                                 Tensor::view(pos.data(), DType::kInt32, {n}), Tensor::view(inv.data(), DType::kF32, {d / 2}),
                                 Tensor::view(slots.data(), DType::kInt32, {n}), kc_ref.tensor, vc_ref.tensor}).ok());

  // GPU: either views into the fused buffer, or three contiguous tensors.
  DeviceTensor dqkv = upload(qkv.tensor);
  DeviceTensor dq, dk, dv;
  Tensor q, k, vt;
  if (c.fused) {
    auto* base = static_cast<uint16_t*>(dqkv.tensor.data);
    q = Tensor::view(base, v.act, {n, hq, d}, Device::kCuda);
    k = Tensor::view(base + hq * d, v.act, {n, hkv, d}, Device::kCuda);
    vt = Tensor::view(base + (hq + hkv) * d, v.act, {n, hkv, d}, Device::kCuda);
    q.strides[0] = k.strides[0] = vt.strides[0] = width;
  } else {
    auto split = [&](int64_t off, int64_t heads) {
      HostTensor h = HostTensor::zeros(v.act, {n, heads, d});
      for (int64_t t = 0; t < n; ++t)
        std::copy_n(qkv.tensor.ptr<uint16_t>() + t * width + off, heads * d, h.tensor.ptr<uint16_t>() + t * heads * d);
      return upload(h.tensor);
    };
    dq = split(0, hq); dk = split(hq * d, hkv); dv = split((hq + hkv) * d, hkv);
    q = dq.tensor; k = dk.tensor; vt = dv.tensor;
  }
  DeviceTensor dpos = upload(Tensor::view(pos.data(), DType::kInt32, {n}));
  DeviceTensor dslots = upload(Tensor::view(slots.data(), DType::kInt32, {n}));
  DeviceTensor dinv = upload(Tensor::view(inv.data(), DType::kF32, {d / 2}));
  DeviceTensor dkc = poisoned(v.cache, {c.num_blocks, c.block_size, hkv, d});
  DeviceTensor dvc = poisoned(v.cache, {c.num_blocks, c.block_size, hkv, d});
  const Status st = rope_kv_write_cuda({q, k, vt, dpos.tensor, dinv.tensor, dslots.tensor, dkc.tensor, dvc.tensor}, nullptr);
  ASSERT_TRUE(st.ok()) << st.to_string();

  // Gather the GPU's q and k (from the fused buffer or the separate tensors).
  std::vector<float> q_gpu, k_gpu, v_gpu;
  if (c.fused) {
    const std::vector<float> all = download(dqkv.tensor);
    for (int64_t t = 0; t < n; ++t) {
      q_gpu.insert(q_gpu.end(), all.begin() + t * width, all.begin() + t * width + hq * d);
      k_gpu.insert(k_gpu.end(), all.begin() + t * width + hq * d, all.begin() + t * width + (hq + hkv) * d);
      v_gpu.insert(v_gpu.end(), all.begin() + t * width + (hq + hkv) * d, all.begin() + (t + 1) * width);
    }
  } else {
    q_gpu = download(q); k_gpu = download(k); v_gpu = download(vt);
  }
  EXPECT_LT(scaled_error(q_gpu, q_ref), kBf16Tol);
  EXPECT_LT(scaled_error(k_gpu, k_ref), kBf16Tol);
  EXPECT_EQ(v_gpu, v_in);
  // Written slots hold exactly the GPU's rotated k and the v input; the others stay poisoned.
  const std::vector<float> kc = download(dkc.tensor), vc = download(dvc.tensor);
  std::vector<char> written(static_cast<size_t>(num_slots), 0);
  for (int64_t t = 0; t < n; ++t) {
    const int32_t s = slots[static_cast<size_t>(t)];
    if (s < 0) continue;
    written[static_cast<size_t>(s)] = 1;
    const size_t off = static_cast<size_t>(s) * static_cast<size_t>(hkv * d), src = static_cast<size_t>(t * hkv * d);
    ASSERT_TRUE(std::equal(kc.begin() + off, kc.begin() + off + hkv * d, k_gpu.begin() + src)) << "slot " << s;
    ASSERT_TRUE(std::equal(vc.begin() + off, vc.begin() + off + hkv * d, v_in.begin() + src)) << "slot " << s;
  }
  for (int64_t s = 0; s < num_slots; ++s)
    if (!written[static_cast<size_t>(s)]) ASSERT_TRUE(std::isnan(kc[static_cast<size_t>(s * hkv * d)])) << "slot " << s;
}

TEST(RopeKvWriteCuda, MatchesCpuReference) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(14);
  const RopeCase cases[] = {
      {1, 4, 2, 64, 16, 4, false, false},    {17, 32, 8, 128, 16, 8, true, true},
      {97, 8, 8, 128, 1, 128, false, false}, {2048, 32, 8, 128, 16, 160, true, true},
      {5, 9, 3, 64, 16, 2, true, false},  // SmolLM2-like heads
  };
  for (const auto& v : rope_kv_write_cuda_variants()) {
    if (v.cache != v.act) continue;  // fp8 caches: tests/kernels/rope_cuda_test.cu (bit-exact to the CPU)
    for (const auto& c : cases) check_rope_case(v, c, rng);
  }
}

}  // namespace
}  // namespace kiln
