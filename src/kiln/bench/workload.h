// Workload: the requests a serving benchmark sends. Synthetic prompts of an exact token length
// (random words that are one token each under the model's tokenizer, so no two prompts share a
// prefix unless a shared prefix is asked for), or prompts from a JSONL file; output lengths
// fixed (ignore_eos + min_tokens) or uniform around a mean; completions or chat bodies, streamed
// with usage.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kiln/core/status.h"

namespace kiln {
class Tokenizer;
}

namespace kiln::bench {

struct BenchRequest {
  std::string body;             // the JSON request body
  int64_t prompt_tokens = 0;    // by the tokenizer (0: unknown); chat: the user message alone
  int64_t output_tokens = 0;    // max_tokens asked for
};

struct WorkloadOptions {
  std::string dataset = "random";  // random | jsonl
  std::string dataset_path;        // jsonl: one {"prompt": ...} or {"messages": [...]} per line,
                                   // optional "output_tokens" (or "max_tokens")
  std::string model;               // the "model" field
  bool chat = false;               // /v1/chat/completions bodies
  int64_t input_len = 1024, output_len = 128;
  double range_ratio = 0;          // lengths uniform in [len * (1 - r), len * (1 + r)]
  int64_t shared_prefix_len = 0;   // tokens every synthetic prompt starts with
  bool ignore_eos = true;          // fixed output length: ignore_eos and min_tokens = max_tokens
  uint64_t seed = 0;
  std::optional<double> temperature;
  std::string extra_body;          // a JSON object merged into every body
};

// count requests (a JSONL file is cycled through when shorter). tokenizer: needed by "random";
// may be null for "jsonl" (prompt lengths then come from the server's usage alone).
Result<std::vector<BenchRequest>> build_workload(const WorkloadOptions& options, const Tokenizer* tokenizer,
                                                 int64_t count);

// Words of the vocabulary that encode, alone and after each other, to exactly one token each
// (" the", " house", ...): the bricks of synthetic prompts.
std::vector<std::string> single_token_words(const Tokenizer& tokenizer);

}  // namespace kiln::bench
