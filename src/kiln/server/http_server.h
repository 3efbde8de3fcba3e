// HttpServer: an event-driven HTTP/1.1 server (Boost.Beast over Asio; a few threads serve every
// connection, none is blocked per client). Each request goes to one handler with an HttpResponder,
// which the handler keeps for as long as it answers: a whole reply, or a stream of chunks (SSE).
// While a request is being answered the connection is watched, so a client that goes away is
// noticed at once (the responder's on_disconnect) and not only at the next write.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kiln/core/status.h"

namespace kiln::server {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // the target without its query string
  std::string body;
  std::string authorization;
};

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

// Every method may be called from any thread; the work runs on the connection's strand, in order.
class HttpResponder {
 public:
  virtual ~HttpResponder() = default;
  // A complete response.
  virtual void reply(int status, std::string content_type, std::string body, HttpHeaders headers = {}) = 0;
  // A 200 streamed response (chunked transfer encoding): start, any number of sends, end.
  virtual void start_stream(std::string content_type) = 0;
  virtual void send(std::string data) = 0;
  virtual void end_stream() = 0;
  // Runs fn on the connection's strand.
  virtual void post(std::function<void()> fn) = 0;
  // fn runs on the strand if the client disconnects before the response has ended.
  virtual void on_disconnect(std::function<void()> fn) = 0;
};

using HttpHandler = std::function<void(HttpRequest, std::shared_ptr<HttpResponder>)>;

struct HttpServerOptions {
  int num_threads = 2;
  int64_t max_body_bytes = int64_t{16} << 20;
  int idle_timeout_seconds = 120;   // reading a request (and keep-alive idle time)
  int write_timeout_seconds = 300;  // one write to a client that does not read
};

class HttpServer {
 public:
  HttpServer(HttpHandler handler, HttpServerOptions options = {});
  ~HttpServer();

  // Binds and starts accepting (port 0: any free port, see port()).
  Status listen(const std::string& host, int port);
  int port() const;
  // fn(signal) runs on a server thread at SIGINT or SIGTERM.
  void on_signal(std::function<void(int)> fn);
  // Serves on options.num_threads threads (the caller's included) until stop().
  void run();
  void stop_accepting();
  void stop();            // now
  void stop_when_idle();  // once every request being answered has been written out

 private:
  void wait_signal();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln::server
