// Request parameter checks.
#include "kiln/engine/request.h"

namespace kiln {

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kNone: return "";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kAbort: return "abort";
    case FinishReason::kError: return "error";
  }
  return "";
}

Status validate_generation_params(const GenerationParams& p, int64_t vocab_size) {
  const SamplingParams& s = p.sampling;
  auto bad = [](const std::string& m) { return invalid_argument(m); };
  if (!(s.temperature >= 0.f && s.temperature <= 100.f)) return bad("temperature must be in [0, 100]");
  if (!(s.top_p > 0.f && s.top_p <= 1.f)) return bad("top_p must be in (0, 1]");
  if (!(s.min_p >= 0.f && s.min_p <= 1.f)) return bad("min_p must be in [0, 1]");
  if (s.top_k < 0) return bad("top_k must be >= 0 (0 = off)");
  if (p.max_tokens < 1) return bad("max_tokens must be at least 1");
  if (p.min_tokens < 0 || p.min_tokens > p.max_tokens) return bad("min_tokens must be in [0, max_tokens]");
  if (!(p.presence_penalty >= -2.f && p.presence_penalty <= 2.f)) return bad("presence_penalty must be in [-2, 2]");
  if (!(p.frequency_penalty >= -2.f && p.frequency_penalty <= 2.f)) return bad("frequency_penalty must be in [-2, 2]");
  if (!(p.repetition_penalty > 0.f && p.repetition_penalty <= 10.f)) return bad("repetition_penalty must be in (0, 10]");
  if (p.logprobs > 20 || p.prompt_logprobs > 20) return bad("at most 20 logprobs per token");
  for (const std::string& stop : p.stop)
    if (stop.empty()) return bad("stop strings must not be empty");
  for (int32_t id : p.stop_token_ids)
    if (id < 0 || id >= vocab_size) return bad("stop token id " + std::to_string(id) + " is outside the vocabulary");
  for (const auto& [id, bias] : p.logit_bias) {
    if (id < 0 || id >= vocab_size) return bad("logit_bias token id " + std::to_string(id) + " is outside the vocabulary");
    if (!(bias >= -100.f && bias <= 100.f)) return bad("logit_bias values must be in [-100, 100]");
  }
  return ok_status();
}

}  // namespace kiln
