// OpenAI response bodies.
#include "kiln/server/openai_response.h"

#include <chrono>
#include <cmath>
#include <random>

#include "kiln/tokenizer/tokenizer.h"
#include "kiln/tokenizer/utf8.h"

namespace kiln::server {

using json = nlohmann::ordered_json;  // responses keep their keys in insertion order (top_logprobs by probability)

std::string to_json_text(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string error_body(const ApiError& e) {
  json err = {{"message", e.message}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}};
  if (!e.param.empty()) err["param"] = e.param;
  if (!e.code.empty()) err["code"] = e.code;
  return to_json_text({{"error", err}});
}

std::string sse_event(const json& j) { return "data: " + to_json_text(j) + "\n\n"; }

json usage_json(int64_t prompt_tokens, int64_t completion_tokens, int64_t cached_tokens) {
  json u = {{"prompt_tokens", prompt_tokens},
            {"completion_tokens", completion_tokens},
            {"total_tokens", prompt_tokens + completion_tokens}};
  if (cached_tokens > 0) u["prompt_tokens_details"] = {{"cached_tokens", cached_tokens}};
  return u;
}

ResponseMeta new_response_meta(Endpoint endpoint, const std::string& model) {
  thread_local std::mt19937_64 rng(std::random_device{}());
  char hex[33];
  std::snprintf(hex, sizeof hex, "%016llx%016llx", static_cast<unsigned long long>(rng()), static_cast<unsigned long long>(rng()));
  ResponseMeta m;
  m.endpoint = endpoint;
  m.id = (endpoint == Endpoint::kChat ? "chatcmpl-" : "cmpl-") + std::string(hex);
  m.model = model;
  m.created = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  return m;
}

json response_envelope(const ResponseMeta& meta, bool chunk) {
  const char* object = meta.endpoint == Endpoint::kChat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion";
  return {{"id", meta.id}, {"object", object}, {"created", meta.created}, {"model", meta.model}, {"choices", json::array()}};
}

std::string token_text(const Tokenizer& tokenizer, int32_t id) { return utf8::repair(tokenizer.token_piece(id)); }

namespace {

json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

// -inf (a masked token) is not JSON; OpenAI clients expect a number.
double finite(float lp) { return std::isfinite(lp) ? lp : -9999.0; }

}  // namespace

void CompletionLogprobs::add_entry(int32_t id, const TokenOutput* t) {
  const std::string text = token_text(tokenizer_, id);
  tokens_.push_back(text);
  text_offset_.push_back(offset_);
  offset_ += static_cast<int64_t>(text.size());
  if (t == nullptr) {
    token_logprobs_.push_back(nullptr);
    top_logprobs_.push_back(nullptr);
    return;
  }
  token_logprobs_.push_back(finite(t->logprob));
  json top = json::object();
  for (const TokenLogprob& alt : t->top) {
    const std::string alt_text = token_text(tokenizer_, alt.id);
    if (!top.contains(alt_text)) top[alt_text] = finite(alt.logprob);
  }
  if (!top.contains(text)) top[text] = finite(t->logprob);  // the chosen token is always listed (as vLLM)
  top_logprobs_.push_back(std::move(top));
}

void CompletionLogprobs::add_prompt(const std::vector<int32_t>& prompt, const std::vector<TokenOutput>& logprobs) {
  for (size_t i = 0; i < prompt.size(); ++i) add_entry(prompt[i], i == 0 || i - 1 >= logprobs.size() ? nullptr : &logprobs[i - 1]);
}

void CompletionLogprobs::add(const TokenOutput& t) { add_entry(t.id, &t); }

json CompletionLogprobs::take() {
  json out = {{"tokens", std::move(tokens_)},
              {"token_logprobs", std::move(token_logprobs_)},
              {"top_logprobs", std::move(top_logprobs_)},
              {"text_offset", std::move(text_offset_)}};
  tokens_ = token_logprobs_ = top_logprobs_ = text_offset_ = json::array();
  return out;
}

json chat_logprobs(const Tokenizer& tokenizer, const std::vector<TokenOutput>& tokens) {
  json content = json::array();
  for (const TokenOutput& t : tokens) {
    const std::string piece = tokenizer.token_piece(t.id);
    json top = json::array();
    for (const TokenLogprob& alt : t.top) {
      const std::string alt_piece = tokenizer.token_piece(alt.id);
      top.push_back({{"token", utf8::repair(alt_piece)}, {"logprob", finite(alt.logprob)}, {"bytes", bytes_of(alt_piece)}});
    }
    content.push_back({{"token", utf8::repair(piece)}, {"logprob", finite(t.logprob)}, {"bytes", bytes_of(piece)}, {"top_logprobs", top}});
  }
  return {{"content", content}};
}

}  // namespace kiln::server
