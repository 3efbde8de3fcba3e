// Sampler: logprobs from the raw rows, then penalties, then kernels/sampling.
#include "kiln/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>

#include "kiln/kernels/sampling.h"

namespace kiln {

TokenOutput token_logprobs(const float* logits, int64_t vocab, int32_t token, int32_t top_k) {
  const float mx = *std::max_element(logits, logits + vocab);
  double sum = 0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - mx));
  const float lse = mx + static_cast<float>(std::log(sum));
  TokenOutput t;
  t.id = token;
  t.logprob = logits[token] - lse;
  if (top_k > 0) {
    const int64_t k = std::min<int64_t>(top_k, vocab);
    std::vector<int32_t> idx(static_cast<size_t>(vocab));
    std::iota(idx.begin(), idx.end(), 0);
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    for (int64_t i = 0; i < k; ++i) t.top.push_back({idx[static_cast<size_t>(i)], logits[idx[static_cast<size_t>(i)]] - lse});
  }
  return t;
}

bool needs_host_logits(const Sequence& seq) {
  const GenerationParams& p = seq.params;
  return p.logprobs >= 0 || !p.logit_bias.empty() || p.repetition_penalty != 1.f ||
         p.frequency_penalty != 0.f || p.presence_penalty != 0.f;
}

void apply_penalties(float* logits, int64_t vocab, const Sequence& seq, const std::vector<int32_t>& eos_ids) {
  const GenerationParams& p = seq.params;
  for (const auto& [id, bias] : p.logit_bias) logits[id] += bias;
  if (seq.num_generated() < p.min_tokens) {
    for (int32_t id : eos_ids) logits[id] = -INFINITY;
    for (int32_t id : p.stop_token_ids) logits[id] = -INFINITY;
  }
  if (p.repetition_penalty != 1.f) {
    std::vector<bool> seen(static_cast<size_t>(vocab), false);
    for (int32_t id : seq.tokens) {
      if (id < 0 || id >= vocab || seen[static_cast<size_t>(id)]) continue;
      seen[static_cast<size_t>(id)] = true;
      float& l = logits[id];
      l = l > 0 ? l / p.repetition_penalty : l * p.repetition_penalty;
    }
  }
  if (p.frequency_penalty != 0.f || p.presence_penalty != 0.f) {
    std::unordered_map<int32_t, int32_t> counts;
    for (auto it = seq.tokens.begin() + seq.num_prompt_tokens; it != seq.tokens.end(); ++it) ++counts[*it];
    for (const auto& [id, count] : counts) {
      if (id < 0 || id >= vocab) continue;
      logits[id] -= p.frequency_penalty * static_cast<float>(count) + p.presence_penalty;
    }
  }
}

Status sample_sequences(Tensor logits, const std::vector<const Sequence*>& seqs, const std::vector<int32_t>& eos_ids,
                        std::vector<TokenOutput>* out) {
  const int64_t rows = static_cast<int64_t>(seqs.size()), vocab = logits.shape[1];
  if (rows == 0) return ok_status();
  SampleArgs args;
  args.logits = logits;
  std::vector<std::vector<float>> raw(static_cast<size_t>(rows));  // rows that want logprobs
  for (int64_t r = 0; r < rows; ++r) {
    const Sequence& seq = *seqs[static_cast<size_t>(r)];
    float* row = logits.ptr<float>() + r * vocab;
    if (seq.params.logprobs >= 0) raw[static_cast<size_t>(r)].assign(row, row + vocab);
    apply_penalties(row, vocab, seq, eos_ids);
    args.params.push_back(seq.params.sampling);
    args.steps.push_back(static_cast<uint64_t>(seq.num_generated()));
  }
  std::vector<int32_t> ids(static_cast<size_t>(rows));
  args.out_ids = Tensor::view(ids.data(), DType::kInt32, {rows});
  KILN_RETURN_IF_ERROR(sample_cpu(args));
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t id = ids[static_cast<size_t>(r)];
    const std::vector<float>& row = raw[static_cast<size_t>(r)];
    TokenOutput t;
    t.id = id;
    if (!row.empty()) t = token_logprobs(row.data(), vocab, id, seqs[static_cast<size_t>(r)]->params.logprobs);
    out->push_back(std::move(t));
  }
  return ok_status();
}

}  // namespace kiln
