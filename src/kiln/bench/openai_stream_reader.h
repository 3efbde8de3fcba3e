// OpenAiStreamReader: turns one streamed OpenAI response (completions or chat, SSE) into a
// RequestRecord: time to first token, gaps between output chunks, usage (asked for with
// stream_options.include_usage), and errors (HTTP status, an error event, a stream cut short).
#pragma once
#include <string>
#include <string_view>

#include "kiln/bench/request_record.h"
#include "kiln/bench/sse_parser.h"

namespace kiln::bench {

class OpenAiStreamReader {
 public:
  explicit OpenAiStreamReader(RequestRecord* record) : r_(record) {}

  void on_status(int status) { status_ = status; }
  // Body bytes that arrived `elapsed` seconds after the request was sent.
  void on_body(std::string_view bytes, double elapsed);
  // The response ended (transport ok or not) `elapsed` seconds after sending; fills the record.
  void on_done(const std::string& transport_error, double elapsed);

 private:
  void on_event(const std::string& data, double elapsed);
  void fail(std::string message);

  RequestRecord* r_;
  SseParser sse_;
  int status_ = 0;
  std::string error_body_;  // a non-200 response's body
  std::string error_;
  bool got_done_ = false, got_token_ = false;
  double last_token_ = 0;
  int64_t chunks_ = 0;
};

}  // namespace kiln::bench
