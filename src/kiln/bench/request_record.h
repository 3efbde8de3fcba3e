// RequestRecord: what one benchmark request measured (times in seconds), and the per-token
// latencies derived from it under their two common definitions.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kiln::bench {

struct RequestRecord {
  int64_t index = 0;               // order in the workload
  bool ok = false;
  std::string error;               // why, when !ok
  double scheduled_time = 0;       // when the pacer meant to send it (s from the run's start)
  double send_time = 0;            // when it was sent
  double ttft = 0;                 // send -> first chunk with output text
  double e2e = 0;                  // send -> end of the response
  std::vector<double> itl;         // gaps between consecutive output chunks
  int64_t prompt_tokens = 0;       // from the server's usage (else the workload's count)
  int64_t output_tokens = 0;       // from the server's usage (else the number of output chunks)
  bool usage_reported = false;
  int64_t expected_prompt_tokens = 0, expected_output_tokens = 0;  // what the workload asked for

  // vLLM's time per output token: (e2e - ttft) / (output_tokens - 1); none below 2 tokens.
  std::optional<double> tpot() const {
    if (output_tokens < 2) return std::nullopt;
    return (e2e - ttft) / static_cast<double>(output_tokens - 1);
  }
  // Fireworks' latency per token: (end - first token) / output_tokens; none without tokens.
  std::optional<double> lpt() const {
    if (output_tokens < 1) return std::nullopt;
    return (e2e - ttft) / static_cast<double>(output_tokens);
  }
  double end_time() const { return send_time + e2e; }
};

}  // namespace kiln::bench
