// Generator: runs one sequence to completion on a Model (prefill in chunks, then decode with
// sampling), reporting prompt and generation speed. `kiln generate` and the golden tests use it;
// the serving engine batches many sequences instead.
#pragma once
#include <functional>
#include <vector>

#include "kiln/kernels/sampling.h"
#include "kiln/models/model.h"

namespace kiln {

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  SamplingParams sampling;
  std::vector<int32_t> stop_ids;   // generation ends after emitting one of these
  int64_t prefill_chunk = 256;     // tokens per prefill step
  int64_t block_size = 16;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids (a stop id, if hit, included)
  double prefill_seconds = 0, decode_seconds = 0;
  int64_t prompt_tokens = 0;
};

// on_token(id) is called as each token is sampled (for streaming output).
Result<GenerateResult> generate(Model& model, const std::vector<int32_t>& prompt, const GenerateOptions& options,
                                const std::function<void(int32_t)>& on_token = {});

// Logits of every prompt position (for golden tests and evaluation): [prompt.size(), vocab].
Result<HostTensor> prompt_logits(Model& model, const std::vector<int32_t>& prompt, int64_t chunk = 256);

}  // namespace kiln
