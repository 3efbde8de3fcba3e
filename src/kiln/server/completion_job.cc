// CompletionJob: engine outputs -> OpenAI chunks or one response.
#include "kiln/server/completion_job.h"

#include "kiln/tokenizer/tokenizer.h"

namespace kiln::server {

using json = nlohmann::ordered_json;  // responses keep their keys in insertion order (top_logprobs by probability)

namespace {

json finish_json(FinishReason r) {
  return r == FinishReason::kNone ? json(nullptr) : json(finish_reason_name(r));
}

ApiError engine_error(const Status& s) {
  const bool client = s.code() == StatusCode::kInvalidArgument || s.code() == StatusCode::kOutOfRange ||
                      s.code() == StatusCode::kResourceExhausted;
  return client ? ApiError{400, s.message()} : ApiError{500, s.message(), "internal_error"};
}

}  // namespace

CompletionJob::CompletionJob(Engine& engine, const Tokenizer& tokenizer, const OpenAiRequest& request, ResponseMeta meta,
                             std::vector<JobPrompt> prompts, std::shared_ptr<HttpResponder> responder,
                             std::function<void(bool)> on_done)
    : engine_(engine),
      tokenizer_(tokenizer),
      request_(request),
      meta_(std::move(meta)),
      prompts_(std::move(prompts)),
      responder_(std::move(responder)),
      on_done_(std::move(on_done)) {}

std::optional<ApiError> CompletionJob::start(std::vector<JobChoice> choices) {
  choices_.resize(choices.size());
  std::weak_ptr<CompletionJob> weak = weak_from_this();
  for (size_t i = 0; i < choices.size(); ++i) {
    Choice& c = choices_[i];
    c.spec = std::move(choices[i]);
    auto stream = engine_.add_request(c.spec.request, [weak] {
      if (auto job = weak.lock()) job->schedule_pump();
    });
    if (!stream.ok()) {
      for (size_t j = 0; j < i; ++j) engine_.abort(choices_[j].stream->id());
      finished_ = true;
      return engine_error(stream.status());
    }
    c.stream = *stream;
  }
  responder_->on_disconnect([self = shared_from_this()] { self->cancel(); });
  if (request_.stream) {
    responder_->start_stream("text/event-stream");
    if (request_.endpoint == Endpoint::kChat) {  // the role comes first, as OpenAI sends it
      for (const Choice& c : choices_) {
        json chunk = response_envelope(meta_, true);
        chunk["choices"].push_back({{"index", c.spec.index}, {"delta", {{"role", "assistant"}, {"content", ""}}},
                                    {"logprobs", nullptr}, {"finish_reason", nullptr}});
        if (request_.include_usage) chunk["usage"] = nullptr;
        responder_->send(sse_event(chunk));
      }
    }
  }
  // Outputs may already be there, and pumps already posted: they wait for this, which comes after
  // the response head on the strand.
  responder_->post([self = shared_from_this()] {
    self->ready_ = true;
    self->pump();
  });
  return std::nullopt;
}

void CompletionJob::schedule_pump() {
  if (pump_scheduled_.exchange(true)) return;
  responder_->post([self = shared_from_this()] { self->pump(); });
}

void CompletionJob::pump() {
  pump_scheduled_.store(false);
  if (finished_ || !ready_) return;
  bool all_done = true;
  for (Choice& c : choices_) {
    if (c.finish == FinishReason::kNone)
      for (RequestOutput& out : c.stream->take()) on_output(c, out);
    all_done = all_done && c.finish != FinishReason::kNone;
  }
  if (all_done || !error_.ok()) complete();
}

void CompletionJob::on_output(Choice& c, RequestOutput& out) {
  if (out.finish == FinishReason::kError) {
    error_ = out.error.ok() ? Status(StatusCode::kInternal, "generation failed") : out.error;
    c.finish = out.finish;
    return;
  }
  const bool logprobs = request_.logprobs;
  const bool chat = request_.endpoint == Endpoint::kChat;
  std::string text;
  if (!c.started) {
    c.started = true;
    const JobPrompt& p = prompts_[c.spec.prompt];
    if (logprobs && !chat) c.logprobs.emplace(tokenizer_, 0);
    if (request_.echo) {
      text = p.text;
      if (logprobs && !chat) c.logprobs->add_prompt(p.ids, out.prompt_logprobs);
    }
  }
  text += out.text;
  c.text += out.text;
  if (logprobs) {
    for (const TokenOutput& t : out.tokens) {
      if (chat) c.tokens.push_back(t);
      else c.logprobs->add(t);
    }
  }
  if (out.finished()) {
    c.finish = out.finish;
    c.completion_tokens = out.completion_tokens;
    c.cached_tokens = out.cached_tokens;
  }
  if (request_.stream) send_chunk(c, text, out.tokens, out.finish);
}

void CompletionJob::send_chunk(Choice& c, const std::string& text, const std::vector<TokenOutput>& tokens, FinishReason finish) {
  const bool chat = request_.endpoint == Endpoint::kChat;
  if (text.empty() && finish == FinishReason::kNone && !request_.logprobs) return;
  json choice = {{"index", c.spec.index}, {"logprobs", nullptr}, {"finish_reason", finish_json(finish)}};
  if (chat) {
    choice["delta"] = text.empty() ? json::object() : json{{"content", text}};
    if (request_.logprobs) choice["logprobs"] = chat_logprobs(tokenizer_, tokens);
  } else {
    choice["text"] = text;
    if (request_.logprobs) choice["logprobs"] = c.logprobs->take();
  }
  json chunk = response_envelope(meta_, true);
  chunk["choices"].push_back(std::move(choice));
  if (request_.include_usage) chunk["usage"] = nullptr;
  responder_->send(sse_event(chunk));
}

json CompletionJob::usage() const {
  int64_t prompt = 0, completion = 0, cached = 0;
  for (const JobPrompt& p : prompts_) prompt += static_cast<int64_t>(p.ids.size());
  for (const Choice& c : choices_) completion += c.completion_tokens;
  for (size_t i = 0; i < prompts_.size(); ++i) {  // cached prompt tokens, once per prompt
    int64_t most = 0;
    for (const Choice& c : choices_)
      if (c.spec.prompt == i) most = std::max(most, c.cached_tokens);
    cached += most;
  }
  return usage_json(prompt, completion, cached);
}

json CompletionJob::full_response() {
  json r = response_envelope(meta_, false);
  const bool chat = request_.endpoint == Endpoint::kChat;
  for (Choice& c : choices_) {
    json choice = {{"index", c.spec.index}, {"logprobs", nullptr}, {"finish_reason", finish_json(c.finish)}};
    if (chat) {
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
      if (request_.logprobs) choice["logprobs"] = chat_logprobs(tokenizer_, c.tokens);
    } else {
      choice["text"] = (request_.echo ? prompts_[c.spec.prompt].text : "") + c.text;
      if (request_.logprobs && c.logprobs) choice["logprobs"] = c.logprobs->take();
    }
    r["choices"].push_back(std::move(choice));
  }
  r["usage"] = usage();
  return r;
}

void CompletionJob::complete() {
  if (!error_.ok()) {
    for (const Choice& c : choices_)
      if (c.finish == FinishReason::kNone) engine_.abort(c.stream->id());
    const ApiError e = engine_error(error_);
    if (request_.stream) {
      responder_->send("data: " + error_body(e) + "\n\n");
      responder_->send("data: [DONE]\n\n");
      responder_->end_stream();
    } else {
      responder_->reply(e.status, "application/json", error_body(e));
    }
    return done(false);
  }
  if (request_.stream) {
    if (request_.include_usage) {
      json chunk = response_envelope(meta_, true);
      chunk["usage"] = usage();
      responder_->send(sse_event(chunk));
    }
    responder_->send("data: [DONE]\n\n");
    responder_->end_stream();
  } else {
    responder_->reply(200, "application/json", to_json_text(full_response()));
  }
  done(false);
}

void CompletionJob::cancel() {
  if (finished_) return;
  for (const Choice& c : choices_)
    if (c.finish == FinishReason::kNone) engine_.abort(c.stream->id());
  done(true);
}

void CompletionJob::done(bool disconnected) {
  finished_ = true;
  if (on_done_) on_done_(disconnected);
  on_done_ = nullptr;
}

}  // namespace kiln::server
