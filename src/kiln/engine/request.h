// Request: what a caller asks the engine for (prompt ids + generation parameters), and
// RequestOutput, one increment of its answer (new tokens, new text, finish) on its stream.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/kernels/sampling.h"

namespace kiln {

enum class FinishReason { kNone, kStop, kLength, kAbort, kError };
// "stop", "length", "abort", "error" ("" for kNone).
const char* finish_reason_name(FinishReason reason);

struct GenerationParams {
  SamplingParams sampling;  // temperature, top_k, top_p, min_p, seed
  int64_t max_tokens = 16;
  int64_t min_tokens = 0;            // EOS and stop conditions are ignored before this many tokens
  bool ignore_eos = false;
  std::vector<std::string> stop;     // stop strings; the output ends before the first match
  bool include_stop_str_in_output = false;  // (vLLM) ... or with it, after the matched stop string
  std::vector<int32_t> stop_token_ids;
  float presence_penalty = 0.f;      // OpenAI: minus once per token present in the output
  float frequency_penalty = 0.f;     // OpenAI: minus per occurrence in the output
  float repetition_penalty = 1.f;    // CTRL/HF: over prompt and output, divides positive logits
  std::vector<std::pair<int32_t, float>> logit_bias;
  int32_t logprobs = -1;             // -1: none; k >= 0: the chosen token's logprob and the top k
  int32_t prompt_logprobs = -1;      // -1: none; k >= 0: the same for every prompt token but the first
  bool skip_special_tokens = true;   // in the output text
};

// Checks ranges (vocab_size bounds token ids); the message names the field.
Status validate_generation_params(const GenerationParams& p, int64_t vocab_size);

struct Request {
  std::vector<int32_t> prompt;
  GenerationParams params;
};

struct TokenLogprob {
  int32_t id = -1;
  float logprob = NAN;
};

// One token with, when asked for, its logprob and the top alternatives.
struct TokenOutput {
  int32_t id = -1;
  float logprob = NAN;
  std::vector<TokenLogprob> top;  // best first
};

struct RequestOutput {
  std::vector<TokenOutput> tokens;  // tokens generated since the previous output
  std::string text;                 // text they released (a possible stop-string prefix is held back)
  FinishReason finish = FinishReason::kNone;
  Status error;                     // with kError: why
  // Prompt logprobs (position 1 on; empty unless asked for), on the first output only.
  std::vector<TokenOutput> prompt_logprobs;
  // Set on the final output.
  int64_t prompt_tokens = 0, completion_tokens = 0, cached_tokens = 0;

  bool finished() const { return finish != FinishReason::kNone; }
};

}  // namespace kiln
