// Sequence: the engine's state of one request: its tokens (prompt, then generated), how many of
// them have K/V in the cache, its block table, and the per-request output machinery (detokenizer,
// stop checker, stream). A step computes the next uncomputed tokens; when it reaches the end of
// the sequence, one token is sampled and appended. Prefill and decode are the same rule: decode
// is the case of exactly one uncomputed token.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "kiln/engine/detokenizer.h"
#include "kiln/engine/request.h"
#include "kiln/engine/request_stream.h"
#include "kiln/engine/stop_checker.h"

namespace kiln {

enum class SequenceStatus { kWaiting, kRunning, kFinished };

class Sequence {
 public:
  Sequence(int64_t id, Request request, std::shared_ptr<RequestStream> stream, const Tokenizer* tokenizer,
           std::vector<int32_t> eos_ids, int64_t max_model_len, double arrival_time);
  Sequence(const Sequence&) = delete;
  Sequence& operator=(const Sequence&) = delete;

  int64_t num_tokens() const { return static_cast<int64_t>(tokens.size()); }
  int64_t num_generated() const { return num_tokens() - num_prompt_tokens; }
  int64_t num_uncomputed() const { return num_tokens() - num_computed_tokens; }
  bool is_decode() const { return num_uncomputed() == 1; }
  // Prompt logprobs still to compute (they go out with the first output).
  bool needs_prompt_logprobs() const { return params.prompt_logprobs >= 0 && !sent_first_output; }
  // Blocks needed to hold the K/V of the first n tokens.
  static int64_t blocks_for(int64_t n, int64_t block_size) { return (n + block_size - 1) / block_size; }

  const int64_t id;
  const GenerationParams params;
  const int64_t num_prompt_tokens;
  std::vector<int32_t> tokens;
  int64_t num_computed_tokens = 0;   // tokens whose K/V is in the cache
  int64_t num_cached_tokens = 0;     // prompt tokens the prefix cache supplied at first admission
  bool admitted_before = false;
  std::vector<int32_t> block_table;
  std::vector<uint64_t> block_hashes;  // hashes of the leading full blocks (chained)
  SequenceStatus status = SequenceStatus::kWaiting;

  // Outputs.
  std::shared_ptr<RequestStream> stream;
  Detokenizer detokenizer;
  StopChecker stop_checker;
  std::vector<TokenOutput> prompt_logprobs;  // [num_prompt_tokens - 1] when asked for
  bool sent_first_output = false;
  double arrival_time, last_token_time = 0;
};

}  // namespace kiln
