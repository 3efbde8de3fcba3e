// paged_attention_cpu against a naive contiguous attention (the paged-vs-contiguous oracle):
// random block tables, block sizes 1 and 16, lengths 1, 17, 97, GQA groups, prefill over a cached
// prefix, decode, and a sliding window; f32 caches and fp8 e4m3 caches with K/V scales (the oracle
// then sees the dequantized values fp8 * scale).
#include "kiln/kernels/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "tests/kernels/kernel_test_util.h"

namespace kiln {
namespace {

struct Seq { int32_t q_len, kv_len; };

// Naive attention for one sequence with contiguous K/V [kv_len, hkv, d].
void naive(const float* q, const float* k, const float* v, int64_t q_len, int64_t kv_len, int64_t hq, int64_t hkv,
           int64_t d, int64_t window, float* out) {
  for (int64_t t = 0; t < q_len; ++t) {
    const int64_t pos = kv_len - q_len + t;
    for (int64_t h = 0; h < hq; ++h) {
      const int64_t kh = h / (hq / hkv);
      std::vector<double> s;
      const int64_t first = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
      for (int64_t j = first; j <= pos; ++j) {
        double dot = 0;
        for (int64_t i = 0; i < d; ++i) dot += static_cast<double>(q[(t * hq + h) * d + i]) * k[(j * hkv + kh) * d + i];
        s.push_back(dot / std::sqrt(static_cast<double>(d)));
      }
      const double mx = *std::max_element(s.begin(), s.end());
      double sum = 0;
      for (auto& x : s) sum += (x = std::exp(x - mx));
      for (int64_t i = 0; i < d; ++i) {
        double acc = 0;
        for (size_t j = 0; j < s.size(); ++j) acc += s[j] / sum * v[((first + static_cast<int64_t>(j)) * hkv + kh) * d + i];
        out[(t * hq + h) * d + i] = static_cast<float>(acc);
      }
    }
  }
}

// fp8: caches in e4m3 with scales k_scale / v_scale (0: f32 caches).
void run_case(const std::vector<Seq>& seqs, int64_t hq, int64_t hkv, int64_t d, int64_t bs, int64_t window, std::mt19937& rng,
              float k_scale = 0.f, float v_scale = 0.f) {
  const bool fp8 = k_scale > 0.f;
  const int64_t batch = static_cast<int64_t>(seqs.size());
  int64_t max_blocks = 0, total_blocks = 0, n = 0;
  for (auto s : seqs) {
    max_blocks = std::max<int64_t>(max_blocks, (s.kv_len + bs - 1) / bs);
    total_blocks += (s.kv_len + bs - 1) / bs;
    n += s.q_len;
  }
  HostTensor kc = HostTensor::zeros(DType::kF32, {total_blocks, bs, hkv, d});
  HostTensor vc = HostTensor::zeros(DType::kF32, {total_blocks, bs, hkv, d});
  HostTensor kc8 = HostTensor::zeros(DType::kFp8E4M3, {total_blocks, bs, hkv, d});
  HostTensor vc8 = HostTensor::zeros(DType::kFp8E4M3, {total_blocks, bs, hkv, d});
  std::vector<int32_t> perm(static_cast<size_t>(total_blocks));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int32_t> tables(static_cast<size_t>(batch * max_blocks), 0), cu = {0}, kv_lens;
  HostTensor q = test::random_tensor(DType::kF32, {n, hq, d}, rng);
  HostTensor out = HostTensor::zeros(DType::kF32, {n, hq, d});
  std::vector<float> expect(static_cast<size_t>(n * hq * d));
  int64_t next_block = 0;
  for (int64_t b = 0; b < batch; ++b) {
    const Seq s = seqs[static_cast<size_t>(b)];
    HostTensor k = test::random_tensor(DType::kF32, {s.kv_len, hkv, d}, rng);
    HostTensor v = test::random_tensor(DType::kF32, {s.kv_len, hkv, d}, rng);
    std::vector<uint8_t> k8(static_cast<size_t>(s.kv_len * hkv * d)), v8(k8.size());
    if (fp8) {  // the oracle sees what the cache holds: fp8(x / scale) * scale
      for (size_t i = 0; i < k8.size(); ++i) {
        float& kx = k.tensor.ptr<float>()[i];
        float& vx = v.tensor.ptr<float>()[i];
        k8[i] = f32_to_fp8_e4m3(kx / k_scale);
        v8[i] = f32_to_fp8_e4m3(vx / v_scale);
        kx = fp8_e4m3_to_f32(k8[i]) * k_scale;
        vx = fp8_e4m3_to_f32(v8[i]) * v_scale;
      }
    }
    for (int64_t j = 0; j < (s.kv_len + bs - 1) / bs; ++j) tables[static_cast<size_t>(b * max_blocks + j)] = perm[static_cast<size_t>(next_block++)];
    for (int64_t j = 0; j < s.kv_len; ++j) {
      const int64_t slot = tables[static_cast<size_t>(b * max_blocks + j / bs)] * bs + j % bs;
      std::copy_n(k.tensor.ptr<float>() + j * hkv * d, hkv * d, kc.tensor.ptr<float>() + slot * hkv * d);
      std::copy_n(v.tensor.ptr<float>() + j * hkv * d, hkv * d, vc.tensor.ptr<float>() + slot * hkv * d);
      std::copy_n(k8.data() + j * hkv * d, hkv * d, kc8.tensor.ptr<uint8_t>() + slot * hkv * d);
      std::copy_n(v8.data() + j * hkv * d, hkv * d, vc8.tensor.ptr<uint8_t>() + slot * hkv * d);
    }
    naive(q.tensor.ptr<float>() + cu.back() * hq * d, k.tensor.ptr<float>(), v.tensor.ptr<float>(), s.q_len, s.kv_len,
          hq, hkv, d, window, expect.data() + cu.back() * hq * d);
    cu.push_back(cu.back() + s.q_len);
    kv_lens.push_back(s.kv_len);
  }
  PagedAttentionArgs a{q.tensor, fp8 ? kc8.tensor : kc.tensor, fp8 ? vc8.tensor : vc.tensor,
                       Tensor::view(cu.data(), DType::kInt32, {batch + 1}),
                       Tensor::view(kv_lens.data(), DType::kInt32, {batch}),
                       Tensor::view(tables.data(), DType::kInt32, {batch, max_blocks}), out.tensor,
                       1.0f / std::sqrt(static_cast<float>(d)), window, fp8 ? k_scale : 1.f, fp8 ? v_scale : 1.f};
  ASSERT_TRUE(paged_attention_cpu(a).ok());
  EXPECT_LT(test::max_abs_diff(test::to_f32(out.tensor), expect), 2e-5 * (fp8 ? std::max(1.f, v_scale * 64) : 1.f))
      << "bs=" << bs << " hq=" << hq << " hkv=" << hkv << " d=" << d << " window=" << window << " fp8=" << fp8;
}

TEST(PagedAttentionCpu, MatchesContiguousReference) {
  std::mt19937 rng(99);
  for (int64_t bs : {1, 16}) {
    for (int64_t len : {1, 17, 97}) {
      run_case({{static_cast<int32_t>(len), static_cast<int32_t>(len)}}, 4, 4, 64, bs, 0, rng);  // MHA prefill
      run_case({{1, static_cast<int32_t>(len)}, {3, static_cast<int32_t>(len + 5)}}, 9, 3, 64, bs, 0, rng);  // decode + prefix
      run_case({{static_cast<int32_t>(len), static_cast<int32_t>(len)}, {1, 40}}, 8, 1, 128, bs, 0, rng);  // MQA
    }
  }
  run_case({{20, 50}, {1, 33}}, 4, 2, 64, 16, 8, rng);  // sliding window
}

TEST(PagedAttentionCpu, Fp8CacheMatchesDequantizedReference) {
  std::mt19937 rng(101);
  for (int64_t bs : {1, 16}) {
    for (int64_t len : {1, 17, 97}) {
      const auto n = static_cast<int32_t>(len);
      run_case({{n, n}}, 4, 4, 64, bs, 0, rng, 0.02f, 0.5f);                // MHA prefill
      run_case({{1, n}, {3, n + 5}}, 9, 3, 64, bs, 0, rng, 0.01f, 0.004f);  // decode + prefix; V saturates
      run_case({{n, n}, {1, 40}}, 8, 1, 128, bs, 0, rng, 1.0f, 1.0f);       // MQA, unit scales
    }
  }
  run_case({{20, 50}, {1, 33}}, 4, 2, 64, 16, 8, rng, 0.05f, 0.05f);  // sliding window
}

TEST(PagedAttentionCpu, Fp8CacheRejectsBadScales) {
  HostTensor q = HostTensor::zeros(DType::kF32, {1, 2, 16});
  HostTensor kc = HostTensor::zeros(DType::kFp8E4M3, {1, 16, 2, 16});
  HostTensor out = HostTensor::zeros(DType::kF32, {1, 2, 16});
  std::vector<int32_t> cu = {0, 1}, kv = {1}, table = {0};
  PagedAttentionArgs a{q.tensor, kc.tensor, kc.tensor, Tensor::view(cu.data(), DType::kInt32, {2}),
                       Tensor::view(kv.data(), DType::kInt32, {1}), Tensor::view(table.data(), DType::kInt32, {1, 1}),
                       out.tensor, 0.25f, 0, 0.f, 1.f};
  EXPECT_FALSE(paged_attention_cpu(a).ok());
  a.k_scale = 1.f;
  EXPECT_TRUE(paged_attention_cpu(a).ok());
}

TEST(PagedAttentionCpu, RejectsBadLengths) {
  HostTensor q = HostTensor::zeros(DType::kF32, {2, 4, 16});
  HostTensor kc = HostTensor::zeros(DType::kF32, {1, 16, 2, 16});
  HostTensor out = HostTensor::zeros(DType::kF32, {2, 4, 16});
  std::vector<int32_t> cu = {0, 2}, kv = {1}, table = {0};  // kv_len < q_len
  PagedAttentionArgs a{q.tensor, kc.tensor, kc.tensor, Tensor::view(cu.data(), DType::kInt32, {2}),
                       Tensor::view(kv.data(), DType::kInt32, {1}), Tensor::view(table.data(), DType::kInt32, {1, 1}),
                       out.tensor, 0.25f, 0};
  EXPECT_FALSE(paged_attention_cpu(a).ok());
}

}  // namespace
}  // namespace kiln
