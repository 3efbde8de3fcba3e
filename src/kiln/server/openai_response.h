// OpenAI response bodies: errors, usage, completion and chat objects and their streamed chunks,
// and the two logprobs layouts (completions: parallel arrays; chat: a list of entries).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/engine/request.h"
#include "kiln/server/openai_request.h"

namespace kiln {
class Tokenizer;
}

namespace kiln::server {

// JSON text with invalid UTF-8 (a token that is part of a character) replaced by U+FFFD.
std::string to_json_text(const nlohmann::ordered_json& j);
std::string error_body(const ApiError& e);
// "data: <json>\n\n"
std::string sse_event(const nlohmann::ordered_json& j);

nlohmann::ordered_json usage_json(int64_t prompt_tokens, int64_t completion_tokens, int64_t cached_tokens);

// Identity of one response: id ("cmpl-..." / "chatcmpl-..."), creation time, model name.
struct ResponseMeta {
  std::string id, model;
  int64_t created = 0;
  Endpoint endpoint = Endpoint::kCompletions;
};
ResponseMeta new_response_meta(Endpoint endpoint, const std::string& model);

// The envelope of a response or chunk: {"id", "object", "created", "model", "choices": [...]}.
nlohmann::ordered_json response_envelope(const ResponseMeta& meta, bool chunk);

// Completions logprobs, built up token by token.
class CompletionLogprobs {
 public:
  CompletionLogprobs(const Tokenizer& tokenizer, int64_t text_offset) : tokenizer_(tokenizer), offset_(text_offset) {}
  // The prompt's tokens (echo): the first has no logprob.
  void add_prompt(const std::vector<int32_t>& prompt, const std::vector<TokenOutput>& logprobs);
  void add(const TokenOutput& t);
  nlohmann::ordered_json take();  // the accumulated object; starts over
  bool empty() const { return tokens_.empty(); }

 private:
  void add_entry(int32_t id, const TokenOutput* t);
  const Tokenizer& tokenizer_;
  int64_t offset_;
  nlohmann::ordered_json tokens_ = nlohmann::ordered_json::array(), token_logprobs_ = nlohmann::ordered_json::array();
  nlohmann::ordered_json top_logprobs_ = nlohmann::ordered_json::array(), text_offset_ = nlohmann::ordered_json::array();
};

// Chat logprobs entries {"token", "logprob", "bytes", "top_logprobs": [...]} for tokens.
nlohmann::ordered_json chat_logprobs(const Tokenizer& tokenizer, const std::vector<TokenOutput>& tokens);

// The text of one token for logprobs ("" for special tokens is not applied: they show as text).
std::string token_text(const Tokenizer& tokenizer, int32_t id);

}  // namespace kiln::server
