// OpenAiServer: the OpenAI-compatible routes over an Engine: POST /v1/completions and
// /v1/chat/completions (a CompletionJob each), GET /v1/models, /health and /metrics. Checks the
// API key, turns prompts and chat messages into token ids, and drains on shutdown: new requests
// get 503 and on_drained runs once the last one in flight is answered.
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kiln/engine/engine.h"
#include "kiln/server/completion_job.h"
#include "kiln/server/http_server.h"
#include "kiln/server/metrics.h"
#include "kiln/server/openai_request.h"

namespace kiln::server {

struct OpenAiServerOptions {
  std::string model_name;                  // what /v1/models lists
  std::vector<std::string> model_aliases;  // also accepted as "model" (the path, say)
  std::string api_key;                     // "" = no authentication
};

class OpenAiServer {
 public:
  // engine and tokenizer must outlive the server.
  OpenAiServer(Engine& engine, const Tokenizer& tokenizer, OpenAiServerOptions options);
  ~OpenAiServer();

  void handle(HttpRequest request, std::shared_ptr<HttpResponder> responder);  // an HttpHandler
  void drain(std::function<void()> on_drained);                                // thread-safe
  ServerStats stats() const;

 private:
  void create_completion(Endpoint endpoint, const HttpRequest& http, const std::shared_ptr<HttpResponder>& responder);
  // Everything up to a running job; an error means nothing was started or sent.
  std::optional<ApiError> start_completion(Endpoint endpoint, const HttpRequest& http,
                                           const std::shared_ptr<HttpResponder>& responder);
  std::variant<std::vector<JobPrompt>, ApiError> prompts_of(const OpenAiRequest& r) const;
  std::variant<std::vector<JobChoice>, ApiError> choices_of(const OpenAiRequest& r, const std::vector<JobPrompt>& prompts) const;
  void reply_error(const std::shared_ptr<HttpResponder>& responder, const ApiError& e);
  void models(const std::shared_ptr<HttpResponder>& responder) const;
  void request_done(bool disconnected);

  Engine& engine_;
  const Tokenizer& tokenizer_;
  OpenAiServerOptions options_;
  std::unique_ptr<ChatTemplate> chat_template_;
  std::string chat_template_error_;
  int64_t created_;

  std::atomic<int64_t> in_flight_{0}, requests_total_{0}, client_errors_total_{0}, disconnects_total_{0};
  std::mutex drain_mu_;
  bool draining_ = false;
  std::function<void()> on_drained_;
};

}  // namespace kiln::server
