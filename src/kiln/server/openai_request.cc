// OpenAI request parsing: JSON (after a nesting-depth scan, so a hostile body cannot exhaust the
// stack), then one typed, range-checked read per known field. A FieldError thrown by a reader
// becomes the ApiError; it never leaves this file.
#include "kiln/server/openai_request.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

namespace kiln::server {
namespace {

using nlohmann::json;

struct FieldError {
  std::string param, message;
};

[[noreturn]] void fail(const std::string& param, const std::string& message) { throw FieldError{param, message}; }

// Brackets nest at most max_depth deep (strings skipped).
bool depth_ok(std::string_view s, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

// The field, or nullptr when absent or null (null means "not given", as in OpenAI's API).
const json* field(const json& o, const char* name) {
  auto it = o.find(name);
  return it == o.end() || it->is_null() ? nullptr : &*it;
}

std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}

std::optional<bool> get_bool(const json& o, const char* name) {
  const json* f = field(o, name);
  if (!f) return std::nullopt;
  if (!f->is_boolean()) fail(name, std::string("'") + name + "' must be a boolean");
  return f->get<bool>();
}

std::optional<int64_t> get_int(const json& o, const char* name, int64_t lo, int64_t hi) {
  const json* f = field(o, name);
  if (!f) return std::nullopt;
  const std::string range = " in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]";
  if (!f->is_number_integer()) fail(name, std::string("'") + name + "' must be an integer" + range);
  if (f->is_number_unsigned() && f->get<uint64_t>() > static_cast<uint64_t>(hi))
    fail(name, std::string("'") + name + "' must be" + range);
  const int64_t v = f->get<int64_t>();
  if (v < lo || v > hi) fail(name, std::string("'") + name + "' must be" + range + ", got " + std::to_string(v));
  return v;
}

// A number in [lo, hi] (or (lo, hi] when lo_open).
std::optional<float> get_number(const json& o, const char* name, double lo, double hi, bool lo_open = false) {
  const json* f = field(o, name);
  if (!f) return std::nullopt;
  const std::string range = std::string(lo_open ? " in (" : " in [") + fmt(lo) + ", " + fmt(hi) + "]";
  if (!f->is_number()) fail(name, std::string("'") + name + "' must be a number" + range);
  const double v = f->get<double>();
  if (!std::isfinite(v) || v < lo || v > hi || (lo_open && v == lo))
    fail(name, std::string("'") + name + "' must be" + range + ", got " + fmt(v));
  return static_cast<float>(v);
}

std::optional<std::string> get_string(const json& o, const char* name) {
  const json* f = field(o, name);
  if (!f) return std::nullopt;
  if (!f->is_string()) fail(name, std::string("'") + name + "' must be a string");
  return f->get<std::string>();
}

std::vector<int32_t> token_ids(const json& a, const char* name) {
  std::vector<int32_t> ids;
  for (const json& x : a) {
    if (!x.is_number_integer() || (x.is_number_unsigned() && x.get<uint64_t>() > INT32_MAX) ||
        x.get<int64_t>() < 0 || x.get<int64_t>() > INT32_MAX)
      fail(name, std::string("'") + name + "' token ids must be non-negative integers");
    ids.push_back(static_cast<int32_t>(x.get<int64_t>()));
  }
  return ids;
}

std::vector<PromptInput> parse_prompt(const json& o) {
  const json* p = field(o, "prompt");
  if (!p) fail("prompt", "'prompt' is required");
  if (p->is_string()) {
    if (p->get_ref<const std::string&>().empty()) fail("prompt", "'prompt' must not be empty");
    return {{p->get<std::string>(), {}, false}};
  }
  if (!p->is_array()) fail("prompt", "'prompt' must be a string, an array of strings, or token ids");
  if (p->empty()) fail("prompt", "'prompt' must not be empty");
  if (static_cast<int64_t>(p->size()) > kMaxPrompts && !(*p)[0].is_number())
    fail("prompt", "at most " + std::to_string(kMaxPrompts) + " prompts per request");
  if ((*p)[0].is_number()) return {{"", token_ids(*p, "prompt"), true}};
  std::vector<PromptInput> out;
  for (const json& x : *p) {
    if (x.is_string() && !x.get_ref<const std::string&>().empty()) out.push_back({x.get<std::string>(), {}, false});
    else if (x.is_array() && !x.empty()) out.push_back({"", token_ids(x, "prompt"), true});
    else fail("prompt", "each prompt must be a non-empty string or a non-empty array of token ids");
  }
  return out;
}

std::string message_content(const json& m, const std::string& role, size_t i) {
  const std::string param = "messages[" + std::to_string(i) + "].content";
  const json* c = field(m, "content");
  if (!c) {
    if (role == "assistant" || role == "tool") return "";
    fail(param, "'content' is required for role '" + role + "'");
  }
  if (c->is_string()) return c->get<std::string>();
  if (!c->is_array()) fail(param, "'content' must be a string or an array of text parts");
  std::string text;
  for (const json& part : *c) {
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" || !part.contains("text") || !part["text"].is_string())
      fail(param, "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported");
    if (!text.empty()) text += "\n";
    text += part["text"].get<std::string>();
  }
  return text;
}

std::vector<ChatMessage> parse_messages(const json& o) {
  const json* ms = field(o, "messages");
  if (!ms) fail("messages", "'messages' is required");
  if (!ms->is_array() || ms->empty()) fail("messages", "'messages' must be a non-empty array");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < ms->size(); ++i) {
    const json& m = (*ms)[i];
    const std::string param = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) fail(param, "each message must be an object");
    const json* role = field(m, "role");
    if (!role || !role->is_string()) fail(param + ".role", "each message needs a string 'role'");
    const std::string r = role->get<std::string>();
    if (r != "system" && r != "user" && r != "assistant" && r != "developer" && r != "tool")
      fail(param + ".role", "unknown role '" + r + "' (system, developer, user, assistant, tool)");
    out.push_back({r == "developer" ? "system" : r, message_content(m, r, i)});
  }
  return out;
}

std::vector<std::string> parse_stop(const json& o) {
  const json* s = field(o, "stop");
  if (!s) return {};
  std::vector<std::string> out;
  if (s->is_string()) out.push_back(s->get<std::string>());
  else if (s->is_array()) {
    if (s->size() > 16) fail("stop", "at most 16 stop strings");
    for (const json& x : *s) {
      if (!x.is_string()) fail("stop", "'stop' must be a string or an array of strings");
      out.push_back(x.get<std::string>());
    }
  } else {
    fail("stop", "'stop' must be a string or an array of strings");
  }
  for (const std::string& x : out)
    if (x.empty() || x.size() > 1024) fail("stop", "stop strings must be 1 to 1024 bytes long");
  return out;
}

std::vector<std::pair<int32_t, float>> parse_logit_bias(const json& o) {
  const json* b = field(o, "logit_bias");
  if (!b) return {};
  if (!b->is_object() || b->size() > 1024) fail("logit_bias", "'logit_bias' must be an object of at most 1024 token ids");
  std::vector<std::pair<int32_t, float>> out;
  for (auto it = b->begin(); it != b->end(); ++it) {
    const std::string& key = it.key();
    char* end = nullptr;
    const long id = std::strtol(key.c_str(), &end, 10);
    if (key.empty() || *end != '\0' || id < 0 || id > INT32_MAX) fail("logit_bias", "logit_bias keys must be token ids");
    if (!it->is_number() || !std::isfinite(it->get<double>()) || std::fabs(it->get<double>()) > 100)
      fail("logit_bias", "logit_bias values must be numbers in [-100, 100]");
    out.emplace_back(static_cast<int32_t>(id), it->get<float>());
  }
  return out;
}

void parse_sampling(const json& o, OpenAiRequest& r) {
  GenerationParams& p = r.params;
  if (auto v = get_number(o, "temperature", 0, 2)) p.sampling.temperature = *v;
  if (auto v = get_number(o, "top_p", 0, 1, true)) p.sampling.top_p = *v;
  if (auto v = get_int(o, "top_k", -1, 1 << 30)) p.sampling.top_k = *v <= 0 ? 0 : static_cast<int32_t>(*v);
  if (auto v = get_number(o, "min_p", 0, 1)) p.sampling.min_p = *v;
  if (const json* s = field(o, "seed")) {
    if (!s->is_number_integer()) fail("seed", "'seed' must be an integer");
    r.seed = s->is_number_unsigned() ? s->get<uint64_t>() : static_cast<uint64_t>(s->get<int64_t>());
  }
  if (auto v = get_number(o, "presence_penalty", -2, 2)) p.presence_penalty = *v;
  if (auto v = get_number(o, "frequency_penalty", -2, 2)) p.frequency_penalty = *v;
  if (auto v = get_number(o, "repetition_penalty", 0, 10, true)) p.repetition_penalty = *v;
  p.logit_bias = parse_logit_bias(o);
}

void parse_limits(const json& o, OpenAiRequest& r) {
  GenerationParams& p = r.params;
  constexpr int64_t kMaxTokens = int64_t{1} << 30;
  r.max_tokens = get_int(o, "max_tokens", 1, kMaxTokens);
  if (r.endpoint == Endpoint::kChat)
    if (auto v = get_int(o, "max_completion_tokens", 1, kMaxTokens)) r.max_tokens = v;
  if (auto v = get_int(o, "min_tokens", 0, kMaxTokens)) p.min_tokens = *v;
  if (r.max_tokens && p.min_tokens > *r.max_tokens) fail("min_tokens", "'min_tokens' must not exceed 'max_tokens'");
  if (auto v = get_bool(o, "ignore_eos")) p.ignore_eos = *v;
  if (auto v = get_bool(o, "skip_special_tokens")) p.skip_special_tokens = *v;
  if (auto v = get_bool(o, "include_stop_str_in_output")) p.include_stop_str_in_output = *v;
  p.stop = parse_stop(o);
  if (const json* s = field(o, "stop_token_ids")) {
    if (!s->is_array() || s->size() > 64) fail("stop_token_ids", "'stop_token_ids' must be an array of at most 64 token ids");
    p.stop_token_ids = token_ids(*s, "stop_token_ids");
  }
}

// Requests kiln cannot honour get a 400 naming the field, never a silently unconstrained answer:
// structured output (response_format other than text, vLLM's guided_* fields: no constrained
// decoding) and tool calling (no tool-call parser: tools are accepted only with tool_choice
// "none", where the model may not call them, as vLLM without --enable-auto-tool-choice).
void reject_unsupported(const json& o, Endpoint endpoint) {
  if (const json* f = field(o, "response_format")) {
    if (!f->is_object()) fail("response_format", "'response_format' must be an object");
    const json* type = field(*f, "type");
    if (!type || !type->is_string()) fail("response_format", "'response_format' needs a string 'type'");
    if (type->get<std::string>() != "text")
      fail("response_format", "response_format type '" + type->get<std::string>() +
                                  "' is not supported (kiln has no constrained decoding); use type 'text' or leave it out");
  }
  for (const char* guided : {"guided_json", "guided_regex", "guided_choice", "guided_grammar"})
    if (field(o, guided)) fail(guided, std::string("'") + guided + "' is not supported (kiln has no constrained decoding)");
  if (endpoint != Endpoint::kChat) return;
  const json* choice = field(o, "tool_choice");
  const bool none = choice && choice->is_string() && choice->get<std::string>() == "none";
  if (choice && !choice->is_string() && !choice->is_object()) fail("tool_choice", "'tool_choice' must be a string or an object");
  if (const json* tools = field(o, "tools")) {
    if (!tools->is_array()) fail("tools", "'tools' must be an array");
    if (!tools->empty() && !none)
      fail("tools", "tool calling is not supported (kiln parses no tool calls from the model's output); "
                    "send tool_choice 'none' or leave 'tools' out");
  } else if (choice && !none && !(choice->is_string() && choice->get<std::string>() == "auto")) {
    fail("tool_choice", "tool calling is not supported; without tools 'tool_choice' may only be 'none' or 'auto'");
  }
  if (const json* fc = field(o, "functions"); fc && !(fc->is_array() && fc->empty()))
    fail("functions", "function calling is not supported");
  if (const json* fc = field(o, "function_call"); fc && !(fc->is_string() && fc->get<std::string>() == "none"))
    fail("function_call", "function calling is not supported; 'function_call' may only be 'none'");
}

void parse_output_options(const json& o, OpenAiRequest& r) {
  reject_unsupported(o, r.endpoint);
  if (auto v = get_int(o, "n", 1, kMaxChoices)) r.n = *v;
  if (auto v = get_int(o, "best_of", 1, kMaxChoices); v && *v != r.n) fail("best_of", "'best_of' other than n is not supported");
  if (auto v = get_bool(o, "stream")) r.stream = *v;
  if (const json* so = field(o, "stream_options")) {
    if (!so->is_object()) fail("stream_options", "'stream_options' must be an object");
    if (!r.stream) fail("stream_options", "'stream_options' is only allowed when 'stream' is true");
    if (auto v = get_bool(*so, "include_usage")) r.include_usage = *v;
  }
  if (r.endpoint == Endpoint::kCompletions) {
    if (auto v = get_int(o, "logprobs", 0, 20)) r.logprobs = true, r.top_logprobs = static_cast<int32_t>(*v);
    if (auto v = get_bool(o, "echo")) r.echo = *v;
    if (get_string(o, "suffix")) fail("suffix", "'suffix' is not supported");
  } else {
    if (auto v = get_bool(o, "logprobs")) r.logprobs = *v;
    if (auto v = get_int(o, "top_logprobs", 0, 20)) {
      if (!r.logprobs && *v > 0) fail("top_logprobs", "'top_logprobs' needs 'logprobs' to be true");
      r.top_logprobs = static_cast<int32_t>(*v);
    }
    if (auto v = get_bool(o, "add_generation_prompt")) r.add_generation_prompt = *v;
  }
  (void)get_string(o, "user");
}

}  // namespace

ParseResult parse_openai_request(Endpoint endpoint, std::string_view body) {
  if (body.empty()) return ApiError{400, "the request body is empty; expected a JSON object"};
  if (!depth_ok(body, kMaxJsonDepth)) return ApiError{400, "the JSON body nests deeper than " + std::to_string(kMaxJsonDepth) + " levels"};
  const json o = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (o.is_discarded()) return ApiError{400, "the request body is not valid JSON"};
  if (!o.is_object()) return ApiError{400, "the request body must be a JSON object"};
  OpenAiRequest r;
  r.endpoint = endpoint;
  r.params.sampling.temperature = 1.f;  // OpenAI's default
  try {
    if (auto m = get_string(o, "model")) r.model = *m;
    if (endpoint == Endpoint::kCompletions) r.prompts = parse_prompt(o);
    else r.messages = parse_messages(o);
    parse_sampling(o, r);
    parse_limits(o, r);
    parse_output_options(o, r);
    if (static_cast<int64_t>(std::max<size_t>(r.prompts.size(), 1)) * r.n > kMaxSequences)
      fail("n", "prompts x n must be at most " + std::to_string(kMaxSequences));
  } catch (const FieldError& e) {
    return ApiError{400, e.message, "invalid_request_error", e.param};
  } catch (const json::exception& e) {  // a type the checks above missed
    return ApiError{400, std::string("invalid request: ") + e.what()};
  }
  return r;
}

}  // namespace kiln::server
