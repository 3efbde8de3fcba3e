// OpenAI request bodies (/v1/completions, /v1/chat/completions) parsed and checked into an
// OpenAiRequest, or an ApiError naming the field. Pure: no engine, no tokenizer, so it can be
// fuzzed on its own. Unknown fields are ignored, as OpenAI's and vLLM's servers do.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "kiln/engine/request.h"
#include "kiln/tokenizer/chat_template.h"

namespace kiln::server {

// An error in OpenAI's format: {"error": {"message", "type", "param", "code"}} with an HTTP status.
struct ApiError {
  ApiError(int status_, std::string message_, std::string type_ = "invalid_request_error", std::string param_ = "",
           std::string code_ = "")
      : status(status_), message(std::move(message_)), type(std::move(type_)), param(std::move(param_)), code(std::move(code_)) {}
  int status;
  std::string message;
  std::string type;
  std::string param;  // "" -> null
  std::string code;   // "" -> null
};

enum class Endpoint { kCompletions, kChat };

struct PromptInput {
  std::string text;          // when !is_ids
  std::vector<int32_t> ids;  // when is_ids
  bool is_ids = false;
};

struct OpenAiRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;                  // "" when not given
  std::vector<PromptInput> prompts;   // completions: one or more
  std::vector<ChatMessage> messages;  // chat
  bool add_generation_prompt = true;  // chat
  std::optional<int64_t> max_tokens;  // max_tokens / max_completion_tokens
  int64_t n = 1;
  bool stream = false, include_usage = false, echo = false;
  std::optional<uint64_t> seed;
  bool logprobs = false;              // completions: "logprobs": k sets this and top_logprobs = k
  int32_t top_logprobs = 0;
  // Sampling, stop conditions and penalties; max_tokens, seed and logprobs are filled per choice.
  GenerationParams params;
};

inline constexpr int64_t kMaxChoices = 64;     // n
inline constexpr int64_t kMaxPrompts = 64;     // prompts in one completions request
inline constexpr int64_t kMaxSequences = 256;  // prompts x n
inline constexpr int kMaxJsonDepth = 32;

using ParseResult = std::variant<OpenAiRequest, ApiError>;
ParseResult parse_openai_request(Endpoint endpoint, std::string_view body);

}  // namespace kiln::server
