// RoPE + paged KV write into an fp8 e4m3 cache on the GPU against rope_kv_write_cpu's fp8 path on
// the same (bf16-valued) inputs: the caches must agree byte for byte (quantization from the f32
// rotated k, round to nearest even, saturating: the small V scale makes some values saturate),
// slots not written stay poisoned, q and k come back rotated within bf16 rounding. Every table row
// whose cache is fp8 is run. Skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>

#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/rope.h"
#include "tests/kernels/device_tensors_cuda.h"
#include "tests/kernels/kernel_test_util.h"

namespace kiln {
namespace {

struct Fp8RopeCase {
  int64_t n, hq, hkv, d, block_size, num_blocks;
  bool fused;
  float k_scale, v_scale;
};

using test::download_bytes;
using test::upload;

std::vector<float> download_f32(const Tensor& device) {
  Result<HostTensor> r = to_host(device, DType::kF32);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() ? test::to_f32(r->tensor) : std::vector<float>{};
}

void check_fp8_case(const RopeKvWriteCudaVariant& v, const Fp8RopeCase& c, std::mt19937& rng) {
  SCOPED_TRACE(std::string(v.hadamard_qk ? "hadamard_qk " : "") + "n=" + std::to_string(c.n) + " hq=" + std::to_string(c.hq) + " hkv=" + std::to_string(c.hkv) +
               " d=" + std::to_string(c.d) + " block=" + std::to_string(c.block_size) +
               " fused=" + std::to_string(c.fused) + " k_scale=" + std::to_string(c.k_scale) +
               " v_scale=" + std::to_string(c.v_scale));
  const int64_t n = c.n, hq = c.hq, hkv = c.hkv, d = c.d, width = (hq + 2 * hkv) * d;
  HostTensor qkv = test::random_tensor(v.act, {n, width}, rng);
  const std::vector<float> qkv_f = test::to_f32(qkv.tensor);
  const int64_t num_slots = c.num_blocks * c.block_size;
  std::vector<int32_t> pos(static_cast<size_t>(n)), slots(static_cast<size_t>(n)), perm(static_cast<size_t>(num_slots));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  for (int64_t t = 0; t < n; ++t) {
    pos[static_cast<size_t>(t)] = static_cast<int32_t>(rng() % 131072);
    slots[static_cast<size_t>(t)] = (t % 5 == 2) ? -1 : perm[static_cast<size_t>(t % num_slots)];
  }
  RopeScaling scaling;
  scaling.type = RopeScaling::Type::kLlama3;
  scaling.factor = 8.f;
  std::vector<float> inv = rope_inv_freq(d, 500000.f, scaling);

  // CPU reference: f32 q/k/v holding the bf16 inputs, fp8 caches.
  std::vector<float> q_ref(static_cast<size_t>(n * hq * d)), k_ref(static_cast<size_t>(n * hkv * d)), v_ref(k_ref.size());
  for (int64_t t = 0; t < n; ++t) {
    const float* row = qkv_f.data() + t * width;
    std::copy_n(row, hq * d, q_ref.data() + t * hq * d);
    std::copy_n(row + hq * d, hkv * d, k_ref.data() + t * hkv * d);
    std::copy_n(row + (hq + hkv) * d, hkv * d, v_ref.data() + t * hkv * d);
  }
  HostTensor kc_ref = HostTensor::zeros(DType::kFp8E4M3, {c.num_blocks, c.block_size, hkv, d});
  HostTensor vc_ref = HostTensor::zeros(DType::kFp8E4M3, {c.num_blocks, c.block_size, hkv, d});
  std::memset(kc_ref.tensor.data, 0x7f, static_cast<size_t>(kc_ref.tensor.numel()));  // e4m3 NaN: "not written"
  std::memset(vc_ref.tensor.data, 0x7f, static_cast<size_t>(vc_ref.tensor.numel()));
  RopeKvWriteArgs cpu{Tensor::view(q_ref.data(), DType::kF32, {n, hq, d}),
                      Tensor::view(k_ref.data(), DType::kF32, {n, hkv, d}),
                      Tensor::view(v_ref.data(), DType::kF32, {n, hkv, d}),
                      Tensor::view(pos.data(), DType::kInt32, {n}),
                      Tensor::view(inv.data(), DType::kF32, {d / 2}),
                      Tensor::view(slots.data(), DType::kInt32, {n}),
                      kc_ref.tensor,
                      vc_ref.tensor,
                      c.k_scale,
                      c.v_scale};
  cpu.hadamard_qk = v.hadamard_qk;
  ASSERT_TRUE(rope_kv_write_cpu(cpu).ok());

  // GPU: views into one fused qkv buffer, or three contiguous tensors.
  DeviceTensor dqkv = upload(qkv.tensor), dq, dk, dv;
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
    dq = split(0, hq);
    dk = split(hq * d, hkv);
    dv = split((hq + hkv) * d, hkv);
    q = dq.tensor;
    k = dk.tensor;
    vt = dv.tensor;
  }
  DeviceTensor dpos = upload(Tensor::view(pos.data(), DType::kInt32, {n}));
  DeviceTensor dslots = upload(Tensor::view(slots.data(), DType::kInt32, {n}));
  DeviceTensor dinv = upload(Tensor::view(inv.data(), DType::kF32, {d / 2}));
  Result<DeviceTensor> dkc = DeviceTensor::empty(v.cache, {c.num_blocks, c.block_size, hkv, d});
  Result<DeviceTensor> dvc = DeviceTensor::empty(v.cache, {c.num_blocks, c.block_size, hkv, d});
  ASSERT_TRUE(dkc.ok() && dvc.ok());
  ASSERT_TRUE(fill_bytes(dkc->tensor, 0x7f).ok());
  ASSERT_TRUE(fill_bytes(dvc->tensor, 0x7f).ok());
  // Fused cases write the rotated q to a dense q_out (the model's layout) and leave qkv's q alone.
  Result<DeviceTensor> dq_out = DeviceTensor::empty(v.act, {n, hq, d});
  ASSERT_TRUE(dq_out.ok());
  RopeKvWriteArgs gpu{q, k, vt, dpos.tensor, dinv.tensor, dslots.tensor, dkc->tensor, dvc->tensor,
                      c.k_scale, c.v_scale, c.fused ? dq_out->tensor : Tensor{}};
  gpu.hadamard_qk = v.hadamard_qk;
  const Status st = rope_kv_write_cuda(gpu, nullptr);
  ASSERT_TRUE(st.ok()) << st.to_string();

  // Caches: byte for byte, written slots and poisoned ones alike.
  const std::vector<uint8_t> kc = download_bytes(dkc->tensor), vc = download_bytes(dvc->tensor);
  const uint8_t* kr = kc_ref.tensor.ptr<uint8_t>();
  const uint8_t* vr = vc_ref.tensor.ptr<uint8_t>();
  ASSERT_EQ(kc.size(), static_cast<size_t>(kc_ref.tensor.numel()));
  int64_t k_mismatch = 0, v_mismatch = 0, saturated = 0;
  for (size_t i = 0; i < kc.size(); ++i) {
    k_mismatch += kc[i] != kr[i];
    v_mismatch += vc[i] != vr[i];
    saturated += (vr[i] & 0x7f) == 0x7e;  // +-448
  }
  EXPECT_EQ(k_mismatch, 0) << "of " << kc.size() << " K cache bytes";
  EXPECT_EQ(v_mismatch, 0) << "of " << vc.size() << " V cache bytes";
  if (c.v_scale < 0.01f) EXPECT_GT(saturated, 0) << "the case meant to saturate did not";

  // q (into q_out for fused cases) and k rotated in place (bf16), v untouched.
  std::vector<float> q_gpu, k_gpu;
  if (c.fused) {
    const std::vector<float> all = download_f32(dqkv.tensor);
    q_gpu = download_f32(dq_out->tensor);
    int64_t q_changed = 0;
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = 0; i < hq * d; ++i) q_changed += all[static_cast<size_t>(t * width + i)] != qkv_f[static_cast<size_t>(t * width + i)];
      k_gpu.insert(k_gpu.end(), all.begin() + t * width + hq * d, all.begin() + t * width + (hq + hkv) * d);
    }
    EXPECT_EQ(q_changed, 0) << "q_out given: q itself must stay as it was";
  } else {
    q_gpu = download_f32(q);
    k_gpu = download_f32(k);
  }
  EXPECT_LT(test::scaled_error(q_gpu, q_ref), 1e-2);
  EXPECT_LT(test::scaled_error(k_gpu, k_ref), 1e-2);
}

TEST(RopeKvWriteFp8Cuda, CacheBitExactToCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(41);
  const Fp8RopeCase cases[] = {
      {1, 4, 2, 64, 16, 4, false, 1.0f, 1.0f},
      {17, 32, 8, 128, 16, 8, true, 0.02f, 0.5f},
      {97, 8, 8, 128, 1, 128, false, 0.1f, 0.004f},  // V saturates at +-448 for |v| > 1.79
      {2048, 32, 8, 128, 16, 160, true, 0.05f, 0.05f},  // Hadamard row: one block per token, looping over the heads
      {300, 32, 8, 128, 16, 24, false, 0.05f, 0.05f},   // Hadamard row: 4 blocks per token, 2 or 1 passes each
      {1100, 21, 5, 16, 16, 70, true, 0.2f, 0.2f},       // Hadamard row, head_dim 16: 31 heads in 2 passes, the second
                                                          // partial (half warps of one warp end after 1 or 2 heads)
      {5, 9, 3, 64, 16, 2, true, 0.3f, 0.003f},
      {3, 96, 8, 128, 16, 2, true, 0.05f, 0.5f},
      {7, 5, 1, 16, 16, 1, true, 0.2f, 0.2f},  // head_dim 16: half a warp per head (Hadamard row)
      {4, 3, 3, 32, 16, 1, false, 1.0f, 1.0f},
      {4, 6, 2, 256, 16, 1, false, 0.5f, 0.5f},
  };
  int rows = 0;
  for (const RopeKvWriteCudaVariant& v : rope_kv_write_cuda_variants()) {
    if (v.cache != DType::kFp8E4M3) continue;
    ++rows;
    for (const Fp8RopeCase& c : cases) check_fp8_case(v, c, rng);
  }
  EXPECT_GT(rows, 0) << "no fp8 row in rope_kv_write_cuda_variants()";
}

TEST(RopeKvWriteFp8Cuda, HadamardNeedsAPowerOfTwoHeadDim) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(44);
  HostTensor x = test::random_tensor(DType::kBF16, {2, 2, 80}, rng);
  DeviceTensor dq = upload(x.tensor), dk = upload(x.tensor), dv = upload(x.tensor);
  std::vector<int32_t> pos = {0, 1}, slots = {0, 1};
  std::vector<float> inv = rope_inv_freq(80, 10000.f, {});
  DeviceTensor dpos = upload(Tensor::view(pos.data(), DType::kInt32, {2}));
  DeviceTensor dslots = upload(Tensor::view(slots.data(), DType::kInt32, {2}));
  DeviceTensor dinv = upload(Tensor::view(inv.data(), DType::kF32, {40}));
  Result<DeviceTensor> kc = DeviceTensor::empty(DType::kFp8E4M3, {1, 16, 2, 80});
  Result<DeviceTensor> vc = DeviceTensor::empty(DType::kFp8E4M3, {1, 16, 2, 80});
  ASSERT_TRUE(kc.ok() && vc.ok());
  RopeKvWriteArgs a{dq.tensor, dk.tensor, dv.tensor, dpos.tensor, dinv.tensor, dslots.tensor, kc->tensor, vc->tensor, 1.f, 1.f};
  a.hadamard_qk = true;
  const Status st = rope_kv_write_cuda(a, nullptr);
  EXPECT_EQ(st.code(), StatusCode::kUnimplemented) << st.to_string();
  a.k_cache = a.v_cache = Tensor{};  // bf16 path: no Hadamard row
  a.slot_mapping = Tensor{};
  EXPECT_EQ(rope_kv_write_cuda(a, nullptr).code(), StatusCode::kUnimplemented);
}

TEST(RopeKvWriteFp8Cuda, RejectsBadScales) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  std::mt19937 rng(43);
  HostTensor x = test::random_tensor(DType::kBF16, {2, 2, 64}, rng);
  DeviceTensor dq = upload(x.tensor), dk = upload(x.tensor), dv = upload(x.tensor);
  std::vector<int32_t> pos = {0, 1}, slots = {0, 1};
  std::vector<float> inv = rope_inv_freq(64, 10000.f, {});
  DeviceTensor dpos = upload(Tensor::view(pos.data(), DType::kInt32, {2}));
  DeviceTensor dslots = upload(Tensor::view(slots.data(), DType::kInt32, {2}));
  DeviceTensor dinv = upload(Tensor::view(inv.data(), DType::kF32, {32}));
  Result<DeviceTensor> kc = DeviceTensor::empty(DType::kFp8E4M3, {1, 16, 2, 64});
  ASSERT_TRUE(kc.ok());
  const Status st = rope_kv_write_cuda(
      {dq.tensor, dk.tensor, dv.tensor, dpos.tensor, dinv.tensor, dslots.tensor, kc->tensor, kc->tensor, 0.f, 1.f},
      nullptr);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.to_string();
}

}  // namespace
}  // namespace kiln
