// OpenAiStreamReader: SSE events -> token timestamps and usage. A chunk counts as output when its
// first choice carries text ("text" for completions, "delta.content" for chat): the role-only
// first chunk of a chat stream is not a token.
#include "kiln/bench/openai_stream_reader.h"

#include <nlohmann/json.hpp>

namespace kiln::bench {

using nlohmann::json;

namespace {

// The output text of a chunk's first choice ("" when there is none).
std::string chunk_text(const json& chunk) {
  const auto choices = chunk.find("choices");
  if (choices == chunk.end() || !choices->is_array() || choices->empty()) return "";
  const json& c = (*choices)[0];
  if (auto t = c.find("text"); t != c.end() && t->is_string()) return t->get<std::string>();
  if (auto d = c.find("delta"); d != c.end() && d->is_object())
    if (auto t = d->find("content"); t != d->end() && t->is_string()) return t->get<std::string>();
  return "";
}

}  // namespace

void OpenAiStreamReader::on_body(std::string_view bytes, double elapsed) {
  if (status_ != 200) {
    if (error_body_.size() < 4096) error_body_.append(bytes.substr(0, 4096 - error_body_.size()));
    return;
  }
  for (const std::string& data : sse_.feed(bytes)) on_event(data, elapsed);
}

void OpenAiStreamReader::on_event(const std::string& data, double elapsed) {
  if (!error_.empty()) return;
  if (data == "[DONE]") {
    got_done_ = true;
    return;
  }
  json chunk = json::parse(data, nullptr, false);
  if (chunk.is_discarded() || !chunk.is_object()) return fail("bad event in the stream: " + data.substr(0, 200));
  if (auto e = chunk.find("error"); e != chunk.end()) {
    const json& m = e->is_object() && e->contains("message") ? (*e)["message"] : *e;
    return fail("error event: " + (m.is_string() ? m.get<std::string>() : m.dump()));
  }
  if (auto u = chunk.find("usage"); u != chunk.end() && u->is_object()) {
    r_->prompt_tokens = u->value("prompt_tokens", int64_t{0});
    r_->output_tokens = u->value("completion_tokens", int64_t{0});
    r_->usage_reported = true;
  }
  if (chunk_text(chunk).empty()) return;
  ++chunks_;
  if (!got_token_) {
    got_token_ = true;
    r_->ttft = elapsed;
  } else {
    r_->itl.push_back(elapsed - last_token_);
  }
  last_token_ = elapsed;
}

void OpenAiStreamReader::fail(std::string message) {
  if (error_.empty()) error_ = std::move(message);
}

void OpenAiStreamReader::on_done(const std::string& transport_error, double elapsed) {
  r_->e2e = elapsed;
  if (!transport_error.empty()) fail(transport_error);
  if (status_ != 200 && status_ != 0) {
    json body = json::parse(error_body_, nullptr, false);
    std::string message = error_body_;
    if (body.is_object() && body.contains("error") && body["error"].is_object())
      message = body["error"].value("message", error_body_);
    fail("HTTP " + std::to_string(status_) + ": " + message.substr(0, 300));
  }
  if (error_.empty() && !got_done_) fail("the stream ended without 'data: [DONE]'");
  if (!got_token_) r_->ttft = elapsed;  // no output text at all (e.g. EOS first): the whole wait
  if (!r_->usage_reported) {
    r_->prompt_tokens = r_->expected_prompt_tokens;
    r_->output_tokens = chunks_;
  }
  r_->ok = error_.empty();
  r_->error = error_;
}

}  // namespace kiln::bench
