// OpenAiServer: routing, authentication, prompt preparation, per-choice parameters, draining.
#include "kiln/server/openai_server.h"

#include <chrono>
#include <random>

#include "kiln/core/log.h"
#include "kiln/server/completion_job.h"
#include "kiln/tokenizer/chat_template.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::server {

using json = nlohmann::ordered_json;  // responses keep their keys in insertion order (top_logprobs by probability)

OpenAiServer::OpenAiServer(Engine& engine, const Tokenizer& tokenizer, OpenAiServerOptions options)
    : engine_(engine), tokenizer_(tokenizer), options_(std::move(options)) {
  created_ = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  if (tokenizer_.chat_template().empty()) {
    chat_template_error_ = "this model has no chat template; use /v1/completions";
  } else if (auto t = ChatTemplate::parse(tokenizer_.chat_template()); t.ok()) {
    chat_template_ = std::make_unique<ChatTemplate>(std::move(t).value());
  } else {
    chat_template_error_ = "the model's " + t.status().message();  // "chat template: <what is wrong>"
    log_warn(chat_template_error_);
  }
}

OpenAiServer::~OpenAiServer() = default;

void OpenAiServer::handle(HttpRequest http, std::shared_ptr<HttpResponder> responder) {
  const std::string& path = http.path;
  const bool get = http.method == "GET", post = http.method == "POST";
  if (path == "/health" && get) {
    std::lock_guard<std::mutex> lock(drain_mu_);
    return responder->reply(draining_ ? 503 : 200, "text/plain", draining_ ? "draining" : "");
  }
  if (path == "/metrics" && get)
    return responder->reply(200, "text/plain; version=0.0.4", render_metrics(engine_.stats(), stats(), options_.model_name));
  const bool v1 = path.rfind("/v1/", 0) == 0;
  if (v1 && !options_.api_key.empty() && http.authorization != "Bearer " + options_.api_key)
    return reply_error(responder, {401, "Incorrect or missing API key (send it as 'Authorization: Bearer <key>').",
                                   "invalid_request_error", "", "invalid_api_key"});
  if (path == "/v1/models" && get) return models(responder);
  const bool completions = path == "/v1/completions", chat = path == "/v1/chat/completions";
  if ((completions || chat) && post) return create_completion(chat ? Endpoint::kChat : Endpoint::kCompletions, http, responder);
  if (completions || chat || path == "/v1/models" || path == "/health" || path == "/metrics")
    return reply_error(responder, {405, "method " + http.method + " is not allowed on " + path});
  reply_error(responder, {404, "no route " + http.method + " " + path, "invalid_request_error", "", "not_found"});
}

void OpenAiServer::models(const std::shared_ptr<HttpResponder>& responder) const {
  const json model = {{"id", options_.model_name},         {"object", "model"},
                      {"created", created_},               {"owned_by", "kiln"},
                      {"root", options_.model_name},       {"parent", nullptr},
                      {"max_model_len", engine_.config().max_model_len}};
  responder->reply(200, "application/json", to_json_text({{"object", "list"}, {"data", json::array({model})}}));
}

void OpenAiServer::reply_error(const std::shared_ptr<HttpResponder>& responder, const ApiError& e) {
  if (e.status >= 400 && e.status < 500) ++client_errors_total_;
  responder->reply(e.status, "application/json", error_body(e));
}

std::variant<std::vector<JobPrompt>, ApiError> OpenAiServer::prompts_of(const OpenAiRequest& r) const {
  std::vector<JobPrompt> out;
  if (r.endpoint == Endpoint::kChat) {
    if (!chat_template_) return ApiError{400, chat_template_error_};
    const std::string bos = tokenizer_.bos_id() >= 0 ? tokenizer_.token_piece(tokenizer_.bos_id()) : "";
    const std::string eos = tokenizer_.eos_ids().empty() ? "" : tokenizer_.token_piece(tokenizer_.eos_ids()[0]);
    auto text = chat_template_->render(r.messages, r.add_generation_prompt, bos, eos);
    if (!text.ok()) return ApiError{400, "cannot apply the chat template: " + text.status().message(), "invalid_request_error", "messages"};
    auto ids = tokenizer_.encode(*text, false);
    if (!ids.ok()) return ApiError{400, ids.status().message(), "invalid_request_error", "messages"};
    out.push_back({std::move(ids).value(), ""});
    return out;
  }
  for (const PromptInput& p : r.prompts) {
    if (p.is_ids) {
      out.push_back({p.ids, r.echo ? tokenizer_.decode(p.ids) : ""});
      continue;
    }
    auto ids = tokenizer_.encode(p.text, true);
    if (!ids.ok()) return ApiError{400, ids.status().message(), "invalid_request_error", "prompt"};
    out.push_back({std::move(ids).value(), p.text});
  }
  return out;
}

std::variant<std::vector<JobChoice>, ApiError> OpenAiServer::choices_of(const OpenAiRequest& r,
                                                                       const std::vector<JobPrompt>& prompts) const {
  thread_local std::mt19937_64 rng(std::random_device{}());
  std::vector<JobChoice> out;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const int64_t prompt_len = static_cast<int64_t>(prompts[i].ids.size());
    if (prompt_len == 0) return ApiError{400, "the prompt is empty", "invalid_request_error", "prompt"};
    const int64_t room = engine_.max_total_tokens() - prompt_len;
    if (room < 1)
      return ApiError{400, "the prompt has " + std::to_string(prompt_len) + " tokens, which leaves no room to generate (this server's limit is " +
                               std::to_string(engine_.max_total_tokens()) + " tokens of prompt and completion)",
                      "invalid_request_error", r.endpoint == Endpoint::kChat ? "messages" : "prompt"};
    GenerationParams p = r.params;
    p.max_tokens = r.max_tokens ? *r.max_tokens : r.endpoint == Endpoint::kChat ? room : 16;
    if (p.min_tokens > p.max_tokens) return ApiError{400, "'min_tokens' must not exceed 'max_tokens'", "invalid_request_error", "min_tokens"};
    p.logprobs = r.logprobs ? r.top_logprobs : -1;
    p.prompt_logprobs = r.logprobs && r.echo ? r.top_logprobs : -1;
    for (int64_t j = 0; j < r.n; ++j) {
      JobChoice c;
      c.index = static_cast<int64_t>(i) * r.n + j;
      c.prompt = i;
      c.request.prompt = prompts[i].ids;
      c.request.params = p;
      // A seeded request with n > 1 gives each choice its own (reproducible) stream.
      c.request.params.sampling.seed = r.seed ? *r.seed + static_cast<uint64_t>(j) : rng();
      out.push_back(std::move(c));
    }
  }
  return out;
}

void OpenAiServer::create_completion(Endpoint endpoint, const HttpRequest& http, const std::shared_ptr<HttpResponder>& responder) {
  ++requests_total_;
  {
    std::lock_guard<std::mutex> lock(drain_mu_);
    if (draining_) return reply_error(responder, {503, "the server is shutting down", "service_unavailable"});
    ++in_flight_;  // counted from here, so a drain cannot miss it
  }
  if (std::optional<ApiError> e = start_completion(endpoint, http, responder)) {
    reply_error(responder, *e);
    request_done(false);
  }
}

std::optional<ApiError> OpenAiServer::start_completion(Endpoint endpoint, const HttpRequest& http,
                                                       const std::shared_ptr<HttpResponder>& responder) {
  ParseResult parsed = parse_openai_request(endpoint, http.body);
  if (auto* e = std::get_if<ApiError>(&parsed)) return *e;
  const OpenAiRequest& r = std::get<OpenAiRequest>(parsed);
  if (!r.model.empty() && r.model != options_.model_name &&
      std::find(options_.model_aliases.begin(), options_.model_aliases.end(), r.model) == options_.model_aliases.end())
    return ApiError{404, "The model '" + r.model + "' does not exist (this server serves '" + options_.model_name + "').",
                    "invalid_request_error", "model", "model_not_found"};
  auto prompts = prompts_of(r);
  if (auto* e = std::get_if<ApiError>(&prompts)) return *e;
  auto choices = choices_of(r, std::get<std::vector<JobPrompt>>(prompts));
  if (auto* e = std::get_if<ApiError>(&choices)) return *e;
  auto job = std::make_shared<CompletionJob>(engine_, tokenizer_, r, new_response_meta(endpoint, options_.model_name),
                                             std::move(std::get<std::vector<JobPrompt>>(prompts)), responder,
                                             [this](bool disconnected) { request_done(disconnected); });
  return job->start(std::move(std::get<std::vector<JobChoice>>(choices)));
}

void OpenAiServer::request_done(bool disconnected) {
  if (disconnected) ++disconnects_total_;
  std::function<void()> drained;
  {
    std::lock_guard<std::mutex> lock(drain_mu_);
    if (--in_flight_ == 0 && draining_) drained = std::move(on_drained_);
    if (drained) on_drained_ = nullptr;
  }
  if (drained) drained();
}

void OpenAiServer::drain(std::function<void()> on_drained) {
  {
    std::lock_guard<std::mutex> lock(drain_mu_);
    draining_ = true;
    if (in_flight_ > 0) {
      on_drained_ = std::move(on_drained);
      return;
    }
  }
  on_drained();
}

ServerStats OpenAiServer::stats() const {
  ServerStats s;
  s.in_flight_requests = in_flight_.load();
  s.requests_total = requests_total_.load();
  s.client_errors_total = client_errors_total_.load();
  s.disconnects_total = disconnects_total_.load();
  return s;
}

}  // namespace kiln::server
