// CPU paged attention (reference and fast path): one task per (query token, query head); scores
// in fp32 with a max-subtracted softmax, keys and values read through the block table. Caches are
// f32, or fp8 e4m3 (real value = float(fp8) * k_scale / v_scale, decoded row by row).
#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <vector>

#include "kiln/core/thread_pool.h"
#include "kiln/kernels/attention.h"
#include "kiln/kernels/cpu/simd.h"

namespace kiln {
namespace {

struct Geometry {
  int64_t hq, hkv, d, block_size, max_blocks;
};

// fp8 e4m3 -> f32 for all 256 codes (exact, core/dtype.h).
const float* fp8_e4m3_table() {
  static const auto table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[static_cast<size_t>(i)] = fp8_e4m3_to_f32(static_cast<uint8_t>(i));
    return t;
  }();
  return table.data();
}

// Attention of one query row q [d] of sequence b, absolute position pos, against kv head kvh.
// `row_buf` [d] holds a decoded fp8 row.
void attend_one(const PagedAttentionArgs& a, const Geometry& g, const int32_t* table, int64_t pos,
                int64_t kvh, const float* q, float* out, std::vector<float>& scores, std::vector<float>& row_buf) {
  const int64_t first = a.sliding_window > 0 ? std::max<int64_t>(0, pos - a.sliding_window + 1) : 0;
  const int64_t n = pos + 1 - first;
  scores.resize(static_cast<size_t>(n));
  const bool fp8 = a.k_cache.dtype == DType::kFp8E4M3;
  row_buf.resize(static_cast<size_t>(g.d));
  // Row j of a cache as f32: in place for f32, decoded into row_buf and scaled for fp8.
  auto row = [&](const Tensor& cache, float fp8_scale, int64_t j) -> const float* {
    const int64_t block = table[j / g.block_size];
    const int64_t off = ((block * g.block_size + j % g.block_size) * g.hkv + kvh) * g.d;
    if (!fp8) return cache.ptr<float>() + off;
    const uint8_t* src = cache.ptr<uint8_t>() + off;
    const float* lut = fp8_e4m3_table();
    for (int64_t i = 0; i < g.d; ++i) row_buf[static_cast<size_t>(i)] = lut[src[i]] * fp8_scale;
    return row_buf.data();
  };
  const Tensor &kc = a.k_cache, &vc = a.v_cache;
  float mx = -INFINITY;
  for (int64_t j = 0; j < n; ++j) {
    const float s = cpu::dot(q, row(kc, a.k_scale, first + j), g.d) * a.scale;
    scores[static_cast<size_t>(j)] = s;
    mx = std::max(mx, s);
  }
  float sum = 0.f;
  for (int64_t j = 0; j < n; ++j) {
    const float e = std::exp(scores[static_cast<size_t>(j)] - mx);
    scores[static_cast<size_t>(j)] = e;
    sum += e;
  }
  std::fill_n(out, g.d, 0.f);
  const float inv = 1.0f / sum;
  for (int64_t j = 0; j < n; ++j) cpu::axpy(scores[static_cast<size_t>(j)] * inv, row(vc, a.v_scale, first + j), out, g.d);
}

}  // namespace

Status paged_attention_cpu(const PagedAttentionArgs& a) {
  const Geometry g{a.q.shape[1], a.k_cache.shape[2], a.q.shape[2], a.k_cache.shape[1], a.block_tables.shape[1]};
  const int64_t batch = a.kv_lens.numel();
  const DType cache = a.k_cache.dtype;
  if (a.q.dtype != DType::kF32 || (cache != DType::kF32 && cache != DType::kFp8E4M3) || a.v_cache.dtype != cache ||
      a.out.dtype != DType::kF32 || g.hkv == 0 || g.hq % g.hkv != 0 || a.k_cache.shape[3] != g.d ||
      a.cu_seqlens_q.numel() != batch + 1)
    return invalid_argument("paged_attention_cpu: want f32 q [n, hq, d], f32 or fp8_e4m3 caches [blocks, bs, hkv, d] "
                            "with hq % hkv == 0, cu_seqlens_q [batch+1]; got q " + a.q.shape_string() +
                            ", k_cache " + a.k_cache.shape_string() + " " + std::string(dtype_name(cache)));
  if (cache == DType::kFp8E4M3 && !(a.k_scale > 0.f && a.v_scale > 0.f && std::isfinite(a.k_scale) &&
                                    std::isfinite(a.v_scale)))
    return invalid_argument("paged_attention_cpu: fp8 cache scales must be finite and > 0");
  const int32_t* cu = a.cu_seqlens_q.ptr<int32_t>();
  const int32_t* kv_lens = a.kv_lens.ptr<int32_t>();
  // Map each query row to its sequence (rows are grouped by sequence).
  const int64_t n = a.q.shape[0];
  std::vector<int32_t> seq_of(static_cast<size_t>(n));
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t q_len = cu[b + 1] - cu[b];
    if (q_len < 0 || cu[b + 1] > n || kv_lens[b] < q_len || (kv_lens[b] + g.block_size - 1) / g.block_size > g.max_blocks)
      return invalid_argument("paged_attention_cpu: sequence " + std::to_string(b) + " has bad lengths");
    for (int64_t t = cu[b]; t < cu[b + 1]; ++t) seq_of[static_cast<size_t>(t)] = static_cast<int32_t>(b);
  }
  const int64_t group = g.hq / g.hkv;
  ThreadPool::global().parallel_for(n * g.hq, 4, [&](int64_t i0, int64_t i1) {
    std::vector<float> scores, row_buf;
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t t = i / g.hq, h = i % g.hq, b = seq_of[static_cast<size_t>(t)];
      const int64_t pos = kv_lens[b] - (cu[b + 1] - cu[b]) + (t - cu[b]);
      const int32_t* table = a.block_tables.ptr<int32_t>() + b * a.block_tables.strides[0];
      attend_one(a, g, table, pos, h / group, a.q.ptr<float>() + (t * g.hq + h) * g.d,
                 a.out.ptr<float>() + (t * g.hq + h) * g.d, scores, row_buf);
    }
  });
  return ok_status();
}

}  // namespace kiln
