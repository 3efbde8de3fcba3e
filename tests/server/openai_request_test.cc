// OpenAI request parsing: every field lands where it should, defaults follow OpenAI, errors name
// the field, hostile JSON (deep nesting, wrong types) is refused; plus the response helpers.
#include "kiln/server/openai_request.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "kiln/server/metrics.h"
#include "kiln/server/openai_response.h"

namespace kiln::server {
namespace {

OpenAiRequest ok(Endpoint e, const std::string& body) {
  ParseResult r = parse_openai_request(e, body);
  if (auto* err = std::get_if<ApiError>(&r)) ADD_FAILURE() << body << " -> " << err->message;
  return std::holds_alternative<OpenAiRequest>(r) ? std::get<OpenAiRequest>(r) : OpenAiRequest{};
}

ApiError bad(Endpoint e, const std::string& body) {
  ParseResult r = parse_openai_request(e, body);
  EXPECT_TRUE(std::holds_alternative<ApiError>(r)) << body << " was accepted";
  return std::holds_alternative<ApiError>(r) ? std::get<ApiError>(r) : ApiError{0, ""};
}

TEST(OpenAiRequest, CompletionFields) {
  const OpenAiRequest r = ok(Endpoint::kCompletions, R"({
    "model": "m", "prompt": "hello", "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "top_k": 40,
    "min_p": 0.1, "seed": 123, "n": 2, "stop": ["a", "bc"], "presence_penalty": 0.5,
    "frequency_penalty": -0.5, "repetition_penalty": 1.2, "logprobs": 3, "echo": true,
    "stream": true, "stream_options": {"include_usage": true}, "ignore_eos": true, "min_tokens": 2,
    "stop_token_ids": [5, 6], "logit_bias": {"17": -100}, "user": "u", "unknown_field": {"x": [1]}})");
  EXPECT_EQ(r.model, "m");
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_EQ(r.prompts[0].text, "hello");
  EXPECT_EQ(r.max_tokens.value_or(0), 7);
  EXPECT_FLOAT_EQ(r.params.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.params.sampling.top_p, 0.9f);
  EXPECT_EQ(r.params.sampling.top_k, 40);
  EXPECT_FLOAT_EQ(r.params.sampling.min_p, 0.1f);
  EXPECT_EQ(r.seed.value_or(0), 123u);
  EXPECT_EQ(r.n, 2);
  EXPECT_EQ(r.params.stop, (std::vector<std::string>{"a", "bc"}));
  EXPECT_FLOAT_EQ(r.params.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(r.params.frequency_penalty, -0.5f);
  EXPECT_FLOAT_EQ(r.params.repetition_penalty, 1.2f);
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.top_logprobs, 3);
  EXPECT_TRUE(r.echo && r.stream && r.include_usage && r.params.ignore_eos);
  EXPECT_EQ(r.params.min_tokens, 2);
  EXPECT_EQ(r.params.stop_token_ids, (std::vector<int32_t>{5, 6}));
  ASSERT_EQ(r.params.logit_bias.size(), 1u);
  EXPECT_EQ(r.params.logit_bias[0].first, 17);
}

TEST(OpenAiRequest, DefaultsAndPromptForms) {
  OpenAiRequest r = ok(Endpoint::kCompletions, R"({"prompt": [1, 2, 3], "seed": -1, "top_k": -1, "stop": "x"})");
  EXPECT_FLOAT_EQ(r.params.sampling.temperature, 1.0f);  // OpenAI's default
  EXPECT_FALSE(r.max_tokens.has_value());
  EXPECT_EQ(r.n, 1);
  EXPECT_EQ(r.params.sampling.top_k, 0);
  EXPECT_EQ(r.seed.value_or(0), ~uint64_t{0});
  EXPECT_EQ(r.params.stop, std::vector<std::string>{"x"});
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_TRUE(r.prompts[0].is_ids);
  EXPECT_EQ(r.prompts[0].ids, (std::vector<int32_t>{1, 2, 3}));
  r = ok(Endpoint::kCompletions, R"({"prompt": ["a", [4, 5]], "max_tokens": null, "temperature": null})");
  ASSERT_EQ(r.prompts.size(), 2u);
  EXPECT_EQ(r.prompts[0].text, "a");
  EXPECT_EQ(r.prompts[1].ids, (std::vector<int32_t>{4, 5}));
  EXPECT_FLOAT_EQ(r.params.sampling.temperature, 1.0f);
}

TEST(OpenAiRequest, ChatFields) {
  const OpenAiRequest r = ok(Endpoint::kChat, R"({"messages": [
      {"role": "developer", "content": "be brief"},
      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
      {"role": "assistant", "content": null, "tool_calls": []}],
    "max_tokens": 5, "max_completion_tokens": 9, "logprobs": true, "top_logprobs": 4, "tools": []})");
  ASSERT_EQ(r.messages.size(), 3u);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(r.messages[1].content, "a\nb");
  EXPECT_EQ(r.messages[2].content, "");
  EXPECT_EQ(r.max_tokens.value_or(0), 9);  // max_completion_tokens wins
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.top_logprobs, 4);
}

TEST(OpenAiRequest, WhatIsAcceptedOfStructuredOutputAndTools) {
  const OpenAiRequest a = ok(Endpoint::kChat, R"({"messages": [{"role": "user", "content": "hi"}],
    "response_format": {"type": "text"}, "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none"})");
  EXPECT_EQ(a.messages.size(), 1u);
  (void)ok(Endpoint::kChat, R"({"messages": [{"role": "user", "content": "hi"}], "tool_choice": "auto"})");
  const OpenAiRequest b = ok(Endpoint::kCompletions, R"({"prompt": "x", "stop": ".", "include_stop_str_in_output": true})");
  EXPECT_TRUE(b.params.include_stop_str_in_output);
}

TEST(OpenAiRequest, ErrorsNameTheField) {
  EXPECT_EQ(bad(Endpoint::kCompletions, R"({"prompt": "x", "temperature": "hot"})").param, "temperature");
  EXPECT_EQ(bad(Endpoint::kCompletions, R"({"prompt": "x", "max_tokens": 0})").param, "max_tokens");
  EXPECT_EQ(bad(Endpoint::kCompletions, R"({"prompt": "x", "n": 65})").param, "n");
  EXPECT_EQ(bad(Endpoint::kCompletions, R"({"prompt": ""})").param, "prompt");
  EXPECT_EQ(bad(Endpoint::kCompletions, R"({"prompt": "x", "stream_options": {}})").param, "stream_options");
  EXPECT_EQ(bad(Endpoint::kChat, R"({"messages": [{"role": "user", "content": 3}]})").param, "messages[0].content");
  EXPECT_EQ(bad(Endpoint::kChat, R"({"messages": [{"role": "x", "content": ""}]})").param, "messages[0].role");
  EXPECT_EQ(bad(Endpoint::kChat, R"({"messages": [], "logprobs": true})").param, "messages");
  EXPECT_EQ(bad(Endpoint::kChat, R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})").param, "top_logprobs");
  EXPECT_EQ(bad(Endpoint::kCompletions, R"({"prompt": "x", "min_tokens": 9, "max_tokens": 3})").param, "min_tokens");
  EXPECT_EQ(bad(Endpoint::kCompletions, R"({"prompt": "x", "n": 64, "best_of": 2})").param, "best_of");
  EXPECT_EQ(bad(Endpoint::kCompletions, std::string(R"({"prompt": )") + std::string(40, '[') + "1" + std::string(40, ']') + "}").status, 400);
  EXPECT_EQ(bad(Endpoint::kCompletions, std::string(100000, '[')).status, 400);
  EXPECT_EQ(bad(Endpoint::kCompletions, "").status, 400);
  EXPECT_EQ(bad(Endpoint::kCompletions, "[1]").status, 400);
  EXPECT_EQ(bad(Endpoint::kCompletions, "{\"prompt\": \"\xff\"}").status, 400);
  // Structured output and tool calls: a clear error, never a silently unconstrained answer.
  const std::string hi = R"("messages": [{"role": "user", "content": "hi"}])";
  EXPECT_EQ(bad(Endpoint::kChat, "{" + hi + R"(, "response_format": {"type": "json_object"}})").param, "response_format");
  EXPECT_EQ(bad(Endpoint::kChat, "{" + hi + R"(, "response_format": {"type": "json_schema", "json_schema": {}}})").param,
            "response_format");
  EXPECT_EQ(bad(Endpoint::kCompletions, R"({"prompt": "x", "response_format": "json"})").param, "response_format");
  EXPECT_EQ(bad(Endpoint::kCompletions, R"({"prompt": "x", "guided_choice": ["a", "b"]})").param, "guided_choice");
  const std::string tool = R"("tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}])";
  EXPECT_EQ(bad(Endpoint::kChat, "{" + hi + ", " + tool + "}").param, "tools");
  EXPECT_EQ(bad(Endpoint::kChat, "{" + hi + ", " + tool + R"(, "tool_choice": "required"})").param, "tools");
  EXPECT_EQ(bad(Endpoint::kChat, "{" + hi + R"(, "tool_choice": {"type": "function", "function": {"name": "f"}}})").param,
            "tool_choice");
  EXPECT_EQ(bad(Endpoint::kChat, "{" + hi + R"(, "functions": [{"name": "f"}]})").param, "functions");
  // 64 prompts x n 5 exceeds the sequence limit.
  std::string many = R"({"n": 5, "prompt": [)";
  for (int i = 0; i < 64; ++i) many += std::string(i ? "," : "") + "\"p\"";
  EXPECT_EQ(bad(Endpoint::kCompletions, many + "]}").param, "n");
}

TEST(OpenAiResponse, ErrorBodyAndInvalidUtf8) {
  const auto j = nlohmann::json::parse(error_body({404, "no \"such\" model", "invalid_request_error", "model", "model_not_found"}));
  EXPECT_EQ(j["error"]["message"], "no \"such\" model");
  EXPECT_EQ(j["error"]["param"], "model");
  EXPECT_EQ(j["error"]["code"], "model_not_found");
  EXPECT_TRUE(nlohmann::json::parse(error_body({400, "x"}))["error"]["param"].is_null());
  const std::string text = to_json_text({{"text", std::string("a\xe2\x82")}});  // half a character
  EXPECT_EQ(nlohmann::json::parse(text)["text"], "a\xef\xbf\xbd");
}

TEST(Metrics, PrometheusText) {
  EngineStats e;
  e.num_running = 3;
  e.num_blocks = 10;
  e.num_free_blocks = 4;
  e.time_to_first_token.observe(0.02);
  e.time_to_first_token.observe(3.0);
  e.time_to_first_token.observe(1000.0);
  const std::string t = render_metrics(e, ServerStats{}, "m");
  EXPECT_NE(t.find("# TYPE kiln_num_requests_running gauge\nkiln_num_requests_running{model_name=\"m\"} 3\n"), std::string::npos);
  EXPECT_NE(t.find("kiln_kv_cache_usage_perc{model_name=\"m\"} 0.6\n"), std::string::npos);
  EXPECT_NE(t.find("kiln_kv_cache_free_blocks{model_name=\"m\"} 4\n"), std::string::npos);
  EXPECT_NE(t.find("kiln_time_to_first_token_seconds_bucket{model_name=\"m\",le=\"0.01\"} 0\n"), std::string::npos);
  EXPECT_NE(t.find("kiln_time_to_first_token_seconds_bucket{model_name=\"m\",le=\"0.025\"} 1\n"), std::string::npos);
  EXPECT_NE(t.find("kiln_time_to_first_token_seconds_bucket{model_name=\"m\",le=\"5\"} 2\n"), std::string::npos);
  EXPECT_NE(t.find("kiln_time_to_first_token_seconds_bucket{model_name=\"m\",le=\"+Inf\"} 3\n"), std::string::npos);
  EXPECT_NE(t.find("kiln_time_to_first_token_seconds_count{model_name=\"m\"} 3\n"), std::string::npos);
}

}  // namespace
}  // namespace kiln::server
