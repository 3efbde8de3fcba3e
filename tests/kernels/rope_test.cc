// RoPE: rotation against the complex-multiplication form, Llama 3.1 frequency scaling against its
// published piecewise definition, and the paged KV write (f32 cache, and fp8 e4m3 cache quantized
// exactly with core/dtype.h's rounding).
#include "kiln/kernels/rope.h"

#include <gtest/gtest.h>

#include <complex>

#include "kiln/kernels/hadamard.h"

#include "tests/kernels/kernel_test_util.h"

namespace kiln {
namespace {

TEST(RopeCpu, InvFreqLlama3Scaling) {
  RopeScaling s;
  s.type = RopeScaling::Type::kLlama3;
  s.factor = 8.f;
  s.low_freq_factor = 1.f;
  s.high_freq_factor = 4.f;
  s.original_max_position_embeddings = 8192;
  const auto plain = rope_inv_freq(128, 500000.f, RopeScaling{});
  const auto scaled = rope_inv_freq(128, 500000.f, s);
  ASSERT_EQ(scaled.size(), 64u);
  EXPECT_FLOAT_EQ(scaled[0], plain[0]);  // wavelength 2*pi << 8192/4: unchanged
  EXPECT_FLOAT_EQ(scaled[63], plain[63] / 8.f);  // wavelength > 8192: divided by factor
  int blended = 0;
  for (size_t i = 0; i < 64; ++i) {
    const double wl = 2 * M_PI / plain[i];
    if (wl > 2048 && wl < 8192) {
      ++blended;
      EXPECT_LT(scaled[i], plain[i]);
      EXPECT_GT(scaled[i], plain[i] / 8.f);
    }
  }
  EXPECT_GT(blended, 0);
  RopeScaling lin;
  lin.type = RopeScaling::Type::kLinear;
  lin.factor = 4.f;
  EXPECT_FLOAT_EQ(rope_inv_freq(64, 10000.f, lin)[5], plain[5] == 0 ? 0 : rope_inv_freq(64, 10000.f, {})[5] / 4.f);
}

// q_out: the rotated q lands there, q stays as it was, and the result equals the in-place one.
TEST(RopeCpu, QOutLeavesQAlone) {
  std::mt19937 rng(6);
  const int64_t n = 3, hq = 4, hkv = 2, d = 16;
  HostTensor q = test::random_tensor(DType::kF32, {n, hq, d}, rng);
  HostTensor k = test::random_tensor(DType::kF32, {n, hkv, d}, rng);
  HostTensor v = test::random_tensor(DType::kF32, {n, hkv, d}, rng);
  HostTensor q_out = HostTensor::zeros(DType::kF32, {n, hq, d});
  const auto q0 = test::to_f32(q.tensor);
  std::vector<int32_t> pos = {1, 9, 300};
  auto inv = rope_inv_freq(d, 10000.f, {});
  HostTensor kc = HostTensor::zeros(DType::kF32, {1, 4, hkv, d}), vc = HostTensor::zeros(DType::kF32, {1, 4, hkv, d});
  RopeKvWriteArgs a{q.tensor, k.tensor, v.tensor, Tensor::view(pos.data(), DType::kInt32, {n}),
                    Tensor::view(inv.data(), DType::kF32, {d / 2}), {}, kc.tensor, vc.tensor};
  a.q_out = q_out.tensor;
  ASSERT_TRUE(rope_kv_write_cpu(a).ok());
  EXPECT_EQ(test::to_f32(q.tensor), q0);
  a.q_out = {};
  ASSERT_TRUE(rope_kv_write_cpu(a).ok());  // now in place
  EXPECT_EQ(test::to_f32(q.tensor), test::to_f32(q_out.tensor));
  HostTensor wrong = HostTensor::zeros(DType::kF32, {n, hq + 1, d});
  a.q_out = wrong.tensor;
  EXPECT_FALSE(rope_kv_write_cpu(a).ok());
}

TEST(RopeCpu, RotatesAndWritesCache) {
  std::mt19937 rng(5);
  const int64_t n = 5, hq = 4, hkv = 2, d = 16, bs = 4, blocks = 3;
  HostTensor q = test::random_tensor(DType::kF32, {n, hq, d}, rng);
  HostTensor k = test::random_tensor(DType::kF32, {n, hkv, d}, rng);
  HostTensor v = test::random_tensor(DType::kF32, {n, hkv, d}, rng);
  const auto q0 = test::to_f32(q.tensor), k0 = test::to_f32(k.tensor);
  std::vector<int32_t> pos = {0, 3, 7, 100, 2047}, slots = {5, 6, -1, 11, 0};
  auto inv = rope_inv_freq(d, 10000.f, {});
  HostTensor kc = HostTensor::zeros(DType::kF32, {blocks, bs, hkv, d});
  HostTensor vc = HostTensor::zeros(DType::kF32, {blocks, bs, hkv, d});
  ASSERT_TRUE(rope_kv_write_cpu({q.tensor, k.tensor, v.tensor, Tensor::view(pos.data(), DType::kInt32, {n}),
                                 Tensor::view(inv.data(), DType::kF32, {d / 2}), Tensor::view(slots.data(), DType::kInt32, {n}),
                                 kc.tensor, vc.tensor}).ok());
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t h = 0; h < hq; ++h) {
      for (int64_t i = 0; i < d / 2; ++i) {
        const double angle = static_cast<double>(static_cast<float>(pos[static_cast<size_t>(t)]) * inv[static_cast<size_t>(i)]);
        const size_t base = static_cast<size_t>((t * hq + h) * d);
        std::complex<double> z(q0[base + static_cast<size_t>(i)], q0[base + static_cast<size_t>(i + d / 2)]);
        z *= std::polar(1.0, angle);
        EXPECT_NEAR(q.tensor.ptr<float>()[base + static_cast<size_t>(i)], z.real(), 1e-5);
        EXPECT_NEAR(q.tensor.ptr<float>()[base + static_cast<size_t>(i + d / 2)], z.imag(), 1e-5);
      }
    }
    if (slots[static_cast<size_t>(t)] < 0) continue;
    for (int64_t i = 0; i < hkv * d; ++i) {
      EXPECT_EQ(kc.tensor.ptr<float>()[slots[static_cast<size_t>(t)] * hkv * d + i], k.tensor.ptr<float>()[t * hkv * d + i]);
      EXPECT_EQ(vc.tensor.ptr<float>()[slots[static_cast<size_t>(t)] * hkv * d + i], v.tensor.ptr<float>()[t * hkv * d + i]);
    }
  }
  EXPECT_NE(test::max_abs_diff(k0, test::to_f32(k.tensor)), 0.0);
  std::vector<int32_t> bad = {99, 0, 0, 0, 0};
  EXPECT_FALSE(rope_kv_write_cpu({q.tensor, k.tensor, v.tensor, Tensor::view(pos.data(), DType::kInt32, {n}),
                                  Tensor::view(inv.data(), DType::kF32, {d / 2}), Tensor::view(bad.data(), DType::kInt32, {n}),
                                  kc.tensor, vc.tensor}).ok());
}

TEST(RopeCpu, WritesFp8Cache) {
  std::mt19937 rng(6);
  const int64_t n = 6, hq = 4, hkv = 2, d = 32, bs = 4, blocks = 3;
  const float k_scale = 0.05f, v_scale = 0.004f;  // |v| > 1.79 saturates at +-448
  HostTensor q = test::random_tensor(DType::kF32, {n, hq, d}, rng);
  HostTensor k = test::random_tensor(DType::kF32, {n, hkv, d}, rng);
  HostTensor v = test::random_tensor(DType::kF32, {n, hkv, d}, rng);
  const auto q0 = test::to_f32(q.tensor);
  std::vector<int32_t> pos = {0, 3, 7, 100, 2047, 9}, slots = {5, 6, -1, 11, 0, 2};
  auto inv = rope_inv_freq(d, 10000.f, {});
  HostTensor kc = HostTensor::zeros(DType::kFp8E4M3, {blocks, bs, hkv, d});
  HostTensor vc = HostTensor::zeros(DType::kFp8E4M3, {blocks, bs, hkv, d});
  std::fill_n(kc.tensor.ptr<uint8_t>(), kc.tensor.numel(), uint8_t{0x7f});
  std::fill_n(vc.tensor.ptr<uint8_t>(), vc.tensor.numel(), uint8_t{0x7f});
  RopeKvWriteArgs a{q.tensor, k.tensor, v.tensor, Tensor::view(pos.data(), DType::kInt32, {n}),
                    Tensor::view(inv.data(), DType::kF32, {d / 2}), Tensor::view(slots.data(), DType::kInt32, {n}),
                    kc.tensor, vc.tensor, k_scale, v_scale};
  ASSERT_TRUE(rope_kv_write_cpu(a).ok());
  std::vector<char> written(static_cast<size_t>(blocks * bs), 0);
  int saturated = 0;
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < hq * d; ++i) {  // q rotated (the fp8 path's fma form is within 1e-5 too)
      const int64_t h = i / d, j = i % d, half = d / 2, p0 = j % half;
      const double angle = static_cast<double>(static_cast<float>(pos[static_cast<size_t>(t)]) * inv[static_cast<size_t>(p0)]);
      const size_t base = static_cast<size_t>((t * hq + h) * d);
      std::complex<double> z(q0[base + static_cast<size_t>(p0)], q0[base + static_cast<size_t>(p0 + half)]);
      z *= std::polar(1.0, angle);
      EXPECT_NEAR(q.tensor.ptr<float>()[base + static_cast<size_t>(j)], j < half ? z.real() : z.imag(), 1e-5);
    }
    const int32_t s = slots[static_cast<size_t>(t)];
    if (s < 0) continue;
    written[static_cast<size_t>(s)] = 1;
    for (int64_t i = 0; i < hkv * d; ++i) {  // the cache holds fp8(rotated k / k_scale), fp8(v / v_scale)
      const uint8_t kq = kc.tensor.ptr<uint8_t>()[s * hkv * d + i], vq = vc.tensor.ptr<uint8_t>()[s * hkv * d + i];
      EXPECT_EQ(kq, f32_to_fp8_e4m3(k.tensor.ptr<float>()[t * hkv * d + i] / k_scale));
      EXPECT_EQ(vq, f32_to_fp8_e4m3(v.tensor.ptr<float>()[t * hkv * d + i] / v_scale));
      saturated += (vq & 0x7f) == 0x7e;
    }
  }
  EXPECT_GT(saturated, 0);
  for (int64_t s = 0; s < blocks * bs; ++s)
    if (!written[static_cast<size_t>(s)]) EXPECT_EQ(kc.tensor.ptr<uint8_t>()[s * hkv * d], 0x7f) << "slot " << s;
  a.v_scale = 0.f;
  EXPECT_FALSE(rope_kv_write_cpu(a).ok());
}

TEST(RopeCpu, HadamardKeepsScoresAndSpreadsOutliers) {
  // hadamard_inplace against the explicit Sylvester matrix H[i][j] = (-1)^popcount(i & j) / sqrt(d).
  std::mt19937 rng(7);
  for (int64_t d : {2, 8, 64, 128}) {
    std::vector<float> x(static_cast<size_t>(d)), y;
    for (float& e : x) e = std::normal_distribution<float>()(rng);
    y = x;
    hadamard_inplace(y.data(), d);
    for (int64_t i = 0; i < d; ++i) {
      double want = 0;
      for (int64_t j = 0; j < d; ++j) want += (__builtin_popcountll(static_cast<uint64_t>(i & j)) % 2 ? -1.0 : 1.0) * x[static_cast<size_t>(j)];
      EXPECT_NEAR(y[static_cast<size_t>(i)], want / std::sqrt(static_cast<double>(d)), 1e-5) << d << " " << i;
    }
  }
  // RoPE with hadamard_qk: every q . k equals the plain RoPE's (scores unchanged), a key with one
  // huge channel comes out spread, and the fp8 cache holds the transformed k.
  const int64_t n = 3, hq = 4, hkv = 2, d = 64;
  HostTensor q = test::random_tensor(DType::kF32, {n, hq, d}, rng), k = test::random_tensor(DType::kF32, {n, hkv, d}, rng);
  HostTensor v = test::random_tensor(DType::kF32, {n, hkv, d}, rng);
  k.tensor.ptr<float>()[5] = 40.0f;  // token 0, kv head 0, channel 5
  HostTensor q2 = test::random_tensor(DType::kF32, {n, hq, d}, rng), k2 = test::random_tensor(DType::kF32, {n, hkv, d}, rng);
  std::copy_n(q.tensor.ptr<float>(), n * hq * d, q2.tensor.ptr<float>());
  std::copy_n(k.tensor.ptr<float>(), n * hkv * d, k2.tensor.ptr<float>());
  std::vector<int32_t> pos = {0, 17, 300}, slots = {0, 1, 2};
  auto inv = rope_inv_freq(d, 10000.f, {});
  HostTensor kc = HostTensor::zeros(DType::kFp8E4M3, {1, 4, hkv, d}), vc = HostTensor::zeros(DType::kFp8E4M3, {1, 4, hkv, d});
  RopeKvWriteArgs plain{q.tensor, k.tensor, v.tensor, Tensor::view(pos.data(), DType::kInt32, {n}),
                        Tensor::view(inv.data(), DType::kF32, {d / 2}), Tensor::view(slots.data(), DType::kInt32, {n}),
                        kc.tensor, vc.tensor, 1.0f, 1.0f};
  RopeKvWriteArgs had = plain;
  had.q = q2.tensor;
  had.k = k2.tensor;
  had.hadamard_qk = true;
  ASSERT_TRUE(rope_kv_write_cpu(plain).ok());
  ASSERT_TRUE(rope_kv_write_cpu(had).ok());
  for (int64_t tq = 0; tq < n; ++tq)
    for (int64_t h = 0; h < hq; ++h)
      for (int64_t tk = 0; tk < n; ++tk) {
        const int64_t kh = h / (hq / hkv);
        double a = 0, b = 0;
        for (int64_t i = 0; i < d; ++i) {
          a += double(q.tensor.ptr<float>()[(tq * hq + h) * d + i]) * k.tensor.ptr<float>()[(tk * hkv + kh) * d + i];
          b += double(q2.tensor.ptr<float>()[(tq * hq + h) * d + i]) * k2.tensor.ptr<float>()[(tk * hkv + kh) * d + i];
        }
        EXPECT_NEAR(a, b, 1e-4 * (1 + std::fabs(a)));
      }
  float max_plain = 0, max_had = 0;
  for (int64_t i = 0; i < d; ++i) {
    max_plain = std::max(max_plain, std::fabs(k.tensor.ptr<float>()[i]));
    max_had = std::max(max_had, std::fabs(k2.tensor.ptr<float>()[i]));
  }
  EXPECT_GT(max_plain, 39.0f);
  EXPECT_LT(max_had, 8.0f);  // 40 / sqrt(64) = 5 plus the rest
  for (int64_t i = 0; i < n * hkv * d; ++i) EXPECT_EQ(kc.tensor.ptr<uint8_t>()[i], f32_to_fp8_e4m3(k2.tensor.ptr<float>()[i]));
  HostTensor q3 = test::random_tensor(DType::kF32, {n, hq, 48}, rng), k3 = test::random_tensor(DType::kF32, {n, hkv, 48}, rng);
  auto inv48 = rope_inv_freq(48, 10000.f, {});
  HostTensor c48 = HostTensor::zeros(DType::kF32, {1, 4, hkv, 48});
  RopeKvWriteArgs odd{q3.tensor, k3.tensor, k3.tensor, Tensor::view(pos.data(), DType::kInt32, {n}), Tensor::view(inv48.data(), DType::kF32, {24}),
                      Tensor::view(slots.data(), DType::kInt32, {n}), c48.tensor, c48.tensor};
  odd.hadamard_qk = true;
  EXPECT_EQ(rope_kv_write_cpu(odd).code(), StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace kiln
