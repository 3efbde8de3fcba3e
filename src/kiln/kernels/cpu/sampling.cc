// CPU sampling (reference and fast path). Filtering order follows vLLM/HF: temperature, then
// top-k, then top-p (smallest set whose mass reaches p), then min-p (relative to the top token).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kiln/core/thread_pool.h"
#include "kiln/kernels/sampling.h"

namespace kiln {

float sampling_uniform(uint64_t seed, uint64_t step) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + step + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (1.0f / 16777216.0f);  // 24 random bits
}

namespace {

int32_t argmax(const float* l, int64_t v) {
  return static_cast<int32_t>(std::max_element(l, l + v) - l);
}

int32_t sample_row(const float* logits, int64_t vocab, const SamplingParams& p, uint64_t step) {
  if (p.temperature <= 0.f || p.top_k == 1) return argmax(logits, vocab);
  std::vector<int32_t> idx(static_cast<size_t>(vocab));
  std::iota(idx.begin(), idx.end(), 0);
  int64_t keep = (p.top_k > 0 && p.top_k < vocab) ? p.top_k : vocab;
  auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  // by_logit is a strict total order, so a full sort gives the same prefix as partial_sort and
  // is several times faster when nothing is cut (top_k == 0).
  if (keep == vocab) std::sort(idx.begin(), idx.end(), by_logit);
  else std::partial_sort(idx.begin(), idx.begin() + keep, idx.end(), by_logit);
  const float mx = logits[idx[0]];
  std::vector<float> prob(static_cast<size_t>(keep));
  float sum = 0.f;
  for (int64_t i = 0; i < keep; ++i) sum += prob[static_cast<size_t>(i)] = std::exp((logits[idx[static_cast<size_t>(i)]] - mx) / p.temperature);
  for (auto& x : prob) x /= sum;
  if (p.top_p < 1.0f) {
    float cum = 0.f;
    int64_t cut = keep;
    for (int64_t i = 0; i < keep; ++i) {
      cum += prob[static_cast<size_t>(i)];
      if (cum >= p.top_p) { cut = i + 1; break; }
    }
    keep = cut;
  }
  if (p.min_p > 0.f) {
    const float floor_p = p.min_p * prob[0];
    int64_t cut = 1;
    while (cut < keep && prob[static_cast<size_t>(cut)] >= floor_p) ++cut;
    keep = cut;
  }
  float total = 0.f;
  for (int64_t i = 0; i < keep; ++i) total += prob[static_cast<size_t>(i)];
  const float u = sampling_uniform(p.seed, step) * total;
  float cum = 0.f;
  for (int64_t i = 0; i < keep; ++i) {
    cum += prob[static_cast<size_t>(i)];
    if (u < cum) return idx[static_cast<size_t>(i)];
  }
  return idx[static_cast<size_t>(keep - 1)];
}

}  // namespace

Status sample_cpu(const SampleArgs& a) {
  const int64_t batch = a.logits.shape[0], vocab = a.logits.shape[1];
  if (a.logits.dtype != DType::kF32 || static_cast<int64_t>(a.params.size()) != batch ||
      static_cast<int64_t>(a.steps.size()) != batch || a.out_ids.numel() != batch)
    return invalid_argument("sample_cpu: want logits f32 [batch, vocab] and batch params/steps/out_ids");
  for (int64_t b = 0; b < batch; ++b) {
    const SamplingParams& p = a.params[static_cast<size_t>(b)];
    if (p.temperature < 0.f || p.top_p <= 0.f || p.top_p > 1.f || p.min_p < 0.f || p.min_p > 1.f || p.top_k < 0)
      return invalid_argument("sample_cpu: bad sampling parameters for row " + std::to_string(b));
  }
  // Rows with banned tokens are sampled from a masked copy (the logits stay unmodified).
  std::vector<std::vector<float>> masked(static_cast<size_t>(batch));
  for (const auto& [row, token] : a.banned) {
    if (row < 0 || row >= batch || token < 0 || token >= vocab)
      return invalid_argument("sample_cpu: banned (row " + std::to_string(row) + ", token " + std::to_string(token) + ") out of range");
    std::vector<float>& m = masked[static_cast<size_t>(row)];
    if (m.empty()) m.assign(a.logits.ptr<float>() + int64_t{row} * vocab, a.logits.ptr<float>() + (int64_t{row} + 1) * vocab);
    m[static_cast<size_t>(token)] = -INFINITY;
  }
  // Rows are independent: one task per row (each row's result does not depend on the split).
  ThreadPool::global().parallel_for(batch, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const std::vector<float>& m = masked[static_cast<size_t>(b)];
      a.out_ids.ptr<int32_t>()[b] = sample_row(m.empty() ? a.logits.ptr<float>() + b * vocab : m.data(), vocab,
                                               a.params[static_cast<size_t>(b)], a.steps[static_cast<size_t>(b)]);
    }
  });
  return ok_status();
}

}  // namespace kiln
