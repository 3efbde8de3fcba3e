// Token sampling from logits: greedy, or temperature with top-k, top-p and min-p filtering,
// drawing one uniform number per (seed, step) from a counter-based hash, so a request's
// samples depend only on its seed and position, never on batching or the backend.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/core/tensor.h"

namespace kiln {

struct SamplingParams {
  float temperature = 0.0f;  // 0 = greedy
  int32_t top_k = 0;         // 0 = all
  float top_p = 1.0f;
  float min_p = 0.0f;
  uint64_t seed = 0;
};

struct SampleArgs {
  Tensor logits;                       // [batch, vocab] f32 (not modified)
  std::vector<SamplingParams> params;  // [batch]
  std::vector<uint64_t> steps;         // [batch] counter per request (tokens generated so far)
  Tensor out_ids;                      // [batch] int32
  // (row, token) pairs whose logits count as -inf (min_tokens keeping EOS and stop ids out).
  std::vector<std::pair<int32_t, int32_t>> banned;
};

// Uniform in [0, 1) from (seed, step): splitmix64 of a mix of both.
float sampling_uniform(uint64_t seed, uint64_t step);

Status sample_cpu(const SampleArgs& args);

}  // namespace kiln
