// CompletionJob: one /v1/completions or /v1/chat/completions request in flight: its engine
// requests (one per prompt and choice) and the conversion of their outputs into a JSON response,
// or into SSE chunks as they come. All of its work runs on the connection's strand: the engine
// thread only schedules a pump. The job lives as long as the connection waits on it; if the client
// goes away it aborts its engine requests, which frees their KV blocks.
#pragma once
#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kiln/engine/engine.h"
#include "kiln/server/http_server.h"
#include "kiln/server/openai_request.h"
#include "kiln/server/openai_response.h"

namespace kiln::server {

struct JobChoice {
  int64_t index = 0;   // the "index" of the choice in the response
  size_t prompt = 0;   // which prompt it continues
  Request request;
};

struct JobPrompt {
  std::vector<int32_t> ids;
  std::string text;    // echoed before the completion when the request asks for echo
};

class CompletionJob : public std::enable_shared_from_this<CompletionJob> {
 public:
  // on_done(disconnected) runs once, when the answer has been queued or the client has gone.
  CompletionJob(Engine& engine, const Tokenizer& tokenizer, const OpenAiRequest& request, ResponseMeta meta,
                std::vector<JobPrompt> prompts, std::shared_ptr<HttpResponder> responder,
                std::function<void(bool)> on_done);

  // Queues every choice in the engine and starts the response. On error nothing is left in the
  // engine and nothing has been sent: the caller answers with the error.
  std::optional<ApiError> start(std::vector<JobChoice> choices);

 private:
  struct Choice {
    JobChoice spec;
    std::shared_ptr<RequestStream> stream;
    std::string text;
    std::vector<TokenOutput> tokens;            // chat logprobs (non-streamed)
    std::optional<CompletionLogprobs> logprobs;  // completions logprobs
    FinishReason finish = FinishReason::kNone;
    bool started = false;
    int64_t completion_tokens = 0, cached_tokens = 0;
  };

  void schedule_pump();
  void pump();
  void on_output(Choice& c, RequestOutput& out);
  void send_chunk(Choice& c, const std::string& text, const std::vector<TokenOutput>& tokens, FinishReason finish);
  void complete();
  void cancel();
  nlohmann::ordered_json full_response();
  nlohmann::ordered_json usage() const;
  void done(bool disconnected);

  Engine& engine_;
  const Tokenizer& tokenizer_;
  const OpenAiRequest request_;
  ResponseMeta meta_;
  std::vector<JobPrompt> prompts_;
  std::shared_ptr<HttpResponder> responder_;
  std::function<void(bool)> on_done_;
  std::vector<Choice> choices_;
  std::atomic<bool> pump_scheduled_{false};
  Status error_;
  bool finished_ = false;
  bool ready_ = false;  // the response has started: chunks may follow
};

}  // namespace kiln::server
