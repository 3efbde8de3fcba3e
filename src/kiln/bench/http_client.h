// HttpClient: an asynchronous HTTP/1.1 client for benchmarks (Boost.Beast over Asio). Every call
// runs on the caller's io_context, so one thread drives hundreds of concurrent streamed
// responses; body bytes are handed over as they arrive (chunked encoding removed) and finished
// keep-alive connections are reused.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "kiln/core/status.h"

namespace boost::asio {
class io_context;
}

namespace kiln::bench {

struct HttpTarget {
  std::string host, port;   // "127.0.0.1", "8000"
  std::string path_prefix;  // "/v1" of "http://host:8000/v1"; "" when the URL has no path
};

// "http://host[:port][/prefix]"; https is not supported.
Result<HttpTarget> parse_base_url(std::string_view url);
// The path to request for an endpoint like "/v1/completions": "/completions" when the base URL
// already ends in "/v1" (so both vLLM's --base-url http://host:8000 and the OpenAI client's
// http://host:8000/v1 work).
std::string endpoint_path(const HttpTarget& target, const std::string& endpoint);
// A blocking GET of path_prefix + path: the body of a 200 answer, else an error.
Result<std::string> http_get(const HttpTarget& target, const std::string& path, const std::string& api_key,
                             double timeout_s);

struct HttpCallbacks {
  std::function<void(int status)> on_status;          // the response's headers arrived
  std::function<void(std::string_view bytes)> on_body;  // body bytes, as they arrive
  std::function<void(const Status& status)> on_done;  // once, last: ok when the response was read whole
};

class HttpClient {
 public:
  // idle_timeout_s: a call fails when connecting, writing, or waiting for the next bytes takes longer.
  // keep_alive false: "Connection: close" and a new connection per request.
  HttpClient(boost::asio::io_context& io, HttpTarget target, std::string api_key, double idle_timeout_s,
             bool keep_alive = true);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Resolves the host (blocking, once, before any call).
  Status resolve();
  // POSTs a JSON body to path_prefix + path. Only from the io_context's thread.
  void post(const std::string& path, std::string body, HttpCallbacks callbacks);
  // The full URL of path (for messages).
  std::string url(const std::string& path) const;
  int64_t connections_opened() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::bench
