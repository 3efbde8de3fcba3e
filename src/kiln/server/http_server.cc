// HttpServer on Boost.Beast. One Session per connection, all of its work on one strand:
// read a request (header, 100 Continue if asked for, body) -> hand it to the handler -> write what the responder queues (coalesced) ->
// read the next one (keep-alive). While a request is answered, an async_wait on the socket notices
// the peer closing it (readable with nothing to read).
#include "kiln/server/http_server.h"

#include <sys/socket.h>

#include <cerrno>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <atomic>
#include <deque>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "kiln/core/log.h"

namespace kiln::server {
namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

namespace {

const char* reason_phrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    default: return "Unknown";
  }
}

// The status line and headers; content_length < 0: chunked.
std::string response_head(int status, const std::string& content_type, int64_t content_length, bool keep_alive,
                          const HttpHeaders& extra) {
  std::string h = "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) + "\r\n";
  h += "Content-Type: " + content_type + "\r\n";
  h += content_length < 0 ? std::string("Transfer-Encoding: chunked\r\n")
                          : "Content-Length: " + std::to_string(content_length) + "\r\n";
  h += keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
  for (const auto& [k, v] : extra) h += k + ": " + v + "\r\n";
  return h + "\r\n";
}

// Requests being answered across all sessions, for a stop that lets their last bytes go out.
struct BusyCount {
  std::atomic<int64_t> busy{0};
  std::atomic<bool> stop_when_idle{false};
  std::function<void()> stop;
};

class Session : public HttpResponder, public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, const HttpHandler& handler, const HttpServerOptions& options, BusyCount& count)
      : stream_(std::move(socket)), handler_(handler), options_(options), count_(count) {}
  ~Session() override {
    if (busy_) --count_.busy;  // no stop from here: the io_context may be going away
  }

  void start() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->do_read(); });
  }

  void reply(int status, std::string content_type, std::string body, HttpHeaders headers) override {
    post([self = shared_from_this(), status, ct = std::move(content_type), b = std::move(body), h = std::move(headers)]() mutable {
      self->do_reply(status, ct, std::move(b), h);
    });
  }
  void start_stream(std::string content_type) override {
    post([self = shared_from_this(), ct = std::move(content_type)] {
      if (!self->answering()) return;
      self->queue(response_head(200, ct, -1, self->keep_alive_, {{"Cache-Control", "no-cache"}}));
    });
  }
  void send(std::string data) override {
    if (data.empty()) return;
    post([self = shared_from_this(), d = std::move(data)] {
      if (!self->answering()) return;
      char size[32];
      std::snprintf(size, sizeof size, "%zx\r\n", d.size());
      self->queue(size + d + "\r\n");
    });
  }
  void end_stream() override {
    post([self = shared_from_this()] {
      if (!self->answering()) return;
      self->queue("0\r\n\r\n");
      self->end_response();
    });
  }
  void post(std::function<void()> fn) override { net::post(stream_.get_executor(), std::move(fn)); }
  void on_disconnect(std::function<void()> fn) override {
    post([self = shared_from_this(), fn = std::move(fn)]() mutable {
      if (self->disconnected_) fn();
      else if (self->answering()) self->on_disconnect_ = std::move(fn);
    });
  }

 private:
  bool answering() const { return in_response_ && !response_ended_ && !closed_; }

  void set_busy(bool busy) {
    if (busy == busy_) return;
    busy_ = busy;
    if (busy) ++count_.busy;
    else if (--count_.busy == 0 && count_.stop_when_idle) count_.stop();
  }

  void do_read() {
    parser_.emplace();
    parser_->body_limit(static_cast<uint64_t>(options_.max_body_bytes));
    parser_->header_limit(64 * 1024);
    stream_.expires_after(std::chrono::seconds(options_.idle_timeout_seconds));
    http::async_read_header(stream_, buffer_, *parser_, beast::bind_front_handler(&Session::on_header, shared_from_this()));
  }

  // curl sends "Expect: 100-continue" before a large body and waits a second for the go-ahead.
  void on_header(beast::error_code ec, size_t) {
    if (ec) return on_read(ec, 0);
    if (!beast::iequals(parser_->get()[http::field::expect], "100-continue")) return read_body();
    writing_ = "HTTP/1.1 100 Continue\r\n\r\n";
    net::async_write(stream_, net::buffer(writing_), [self = shared_from_this()](beast::error_code e, size_t) {
      if (e) return self->close();
      self->read_body();
    });
  }

  void read_body() {
    http::async_read(stream_, buffer_, *parser_, beast::bind_front_handler(&Session::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, size_t) {
    head_only_ = false;  // (a HEAD before on this connection says nothing about this request)
    if (ec == http::error::body_limit) return reject(413, "request body larger than " + std::to_string(options_.max_body_bytes) + " bytes");
    if (ec && ec.category() == http::make_error_code(http::error::bad_method).category() && ec != http::error::end_of_stream &&
        ec != http::error::partial_message)
      return reject(400, "malformed HTTP request: " + ec.message());
    if (ec) return close();
    auto& req = parser_->get();
    HttpRequest r;
    r.method = std::string(req.method_string());
    head_only_ = req.method() == http::verb::head;  // HEAD: the GET route's status and headers, no body
    if (head_only_) r.method = "GET";
    const std::string target(req.target());
    r.path = target.substr(0, target.find('?'));
    r.body = std::move(req.body());
    r.authorization = std::string(req[http::field::authorization]);
    keep_alive_ = req.keep_alive();
    set_busy(true);
    in_response_ = true;
    response_ended_ = false;
    disconnected_ = false;
    stream_.expires_never();
    watch();
    try {
      handler_(std::move(r), shared_from_this());
    } catch (const std::exception& e) {
      log_error("http handler: ", e.what());
      do_reply(500, "application/json", R"({"error":{"message":"internal error","type":"internal_error","param":null,"code":null}})", {});
    }
  }

  // An error found while reading: answer it and close.
  void reject(int status, const std::string& message) {
    keep_alive_ = false;
    set_busy(true);
    in_response_ = true;
    response_ended_ = false;
    const nlohmann::json body = {{"error", {{"message", message}, {"type", "invalid_request_error"}, {"param", nullptr}, {"code", nullptr}}}};
    do_reply(status, "application/json", body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), {});
  }

  void do_reply(int status, const std::string& content_type, std::string body, const HttpHeaders& headers) {
    if (!answering()) return;
    queue(response_head(status, content_type, static_cast<int64_t>(body.size()), keep_alive_, headers) + (head_only_ ? "" : body));
    end_response();
  }

  void end_response() {
    response_ended_ = true;
    on_disconnect_ = nullptr;
    if (!write_in_flight_) finish_response();
  }

  void queue(std::string bytes) {
    if (closed_) return;
    pending_.push_back(std::move(bytes));
    if (!write_in_flight_) do_write();
  }

  void do_write() {
    writing_.clear();
    for (std::string& s : pending_) writing_ += s;
    pending_.clear();
    write_in_flight_ = true;
    stream_.expires_after(std::chrono::seconds(options_.write_timeout_seconds));
    net::async_write(stream_, net::buffer(writing_), beast::bind_front_handler(&Session::on_write, shared_from_this()));
  }

  void on_write(beast::error_code ec, size_t) {
    write_in_flight_ = false;
    if (ec) return disconnected();
    if (!pending_.empty()) return do_write();
    stream_.expires_never();
    if (response_ended_ && in_response_) finish_response();
  }

  // The response is written: read the next request, after the watch is cancelled.
  void finish_response() {
    if (write_in_flight_ || !pending_.empty() || closed_) return;
    in_response_ = false;
    if (!keep_alive_ || count_.stop_when_idle) return close();
    set_busy(false);
    if (watching_) {
      read_after_watch_ = true;
      beast::error_code ec;
      stream_.socket().cancel(ec);
      return;
    }
    do_read();
  }

  void watch() {
    if (watching_ || closed_) return;
    watching_ = true;
    stream_.socket().async_wait(tcp::socket::wait_read, [self = shared_from_this()](beast::error_code ec) { self->on_watch(ec); });
  }

  void on_watch(beast::error_code ec) {
    watching_ = false;
    if (read_after_watch_) {
      read_after_watch_ = false;
      if (!closed_) do_read();
      return;
    }
    if (closed_ || ec == net::error::operation_aborted || !in_response_) return;
    if (ec) {
      disconnected();
      return;
    }
    // A readable socket is either end-of-stream (the client left), more data (a pipelined
    // request: it stays in the socket for later), or a spurious wake-up on a reused keep-alive
    // connection: peek without blocking to tell them apart, and keep watching in the last case.
    char byte;
    const ssize_t n = ::recv(stream_.socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
      disconnected();
    } else if (n < 0) {
      watch();
    }
  }

  void disconnected() {
    disconnected_ = true;
    if (auto fn = std::move(on_disconnect_)) {
      on_disconnect_ = nullptr;
      fn();
    }
    close();
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    set_busy(false);
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  const HttpHandler& handler_;
  const HttpServerOptions& options_;
  BusyCount& count_;
  bool busy_ = false;
  std::deque<std::string> pending_;
  std::string writing_;
  std::function<void()> on_disconnect_;
  bool write_in_flight_ = false, in_response_ = false, response_ended_ = false, keep_alive_ = true, head_only_ = false;
  bool watching_ = false, read_after_watch_ = false, disconnected_ = false, closed_ = false;
};

}  // namespace

struct HttpServer::Impl {
  Impl(HttpHandler h, HttpServerOptions o) : handler(std::move(h)), options(o) {
    count.stop = [this] { ioc.stop(); };
  }

  void accept() {
    acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
      if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
      if (ec) {
        log_warn("http accept: ", ec.message());
        retry.expires_after(std::chrono::milliseconds(50));
        retry.async_wait([this](beast::error_code e) { if (!e && acceptor.is_open()) accept(); });
        return;
      }
      std::make_shared<Session>(std::move(socket), handler, options, count)->start();
      accept();
    });
  }

  HttpHandler handler;
  HttpServerOptions options;
  BusyCount count;  // before ioc: sessions destroyed with it still count
  net::io_context ioc;
  tcp::acceptor acceptor{ioc};
  net::steady_timer retry{ioc};
  net::signal_set signals{ioc};
  std::function<void(int)> on_signal;
};

HttpServer::HttpServer(HttpHandler handler, HttpServerOptions options)
    : impl_(std::make_unique<Impl>(std::move(handler), options)) {}

HttpServer::~HttpServer() = default;

Status HttpServer::listen(const std::string& host, int port) {
  beast::error_code ec;
  const auto address = net::ip::make_address(host, ec);
  if (ec) return invalid_argument("--host " + host + ": not an IP address (" + ec.message() + ")");
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(port));
  tcp::acceptor& a = impl_->acceptor;
  a.open(endpoint.protocol(), ec);
  if (!ec) a.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(endpoint, ec);
  if (!ec) a.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return Status(StatusCode::kUnavailable, "cannot listen on " + host + ":" + std::to_string(port) + ": " + ec.message());
  impl_->accept();
  return ok_status();
}

int HttpServer::port() const {
  beast::error_code ec;
  const auto ep = impl_->acceptor.local_endpoint(ec);
  return ec ? -1 : ep.port();
}

void HttpServer::on_signal(std::function<void(int)> fn) {
  impl_->on_signal = std::move(fn);
  impl_->signals.add(SIGINT);
  impl_->signals.add(SIGTERM);
  wait_signal();
}

void HttpServer::wait_signal() {
  impl_->signals.async_wait([this](beast::error_code ec, int sig) {
    if (ec) return;
    if (impl_->on_signal) impl_->on_signal(sig);
    wait_signal();  // a second signal is reported too
  });
}

void HttpServer::run() {
  std::vector<std::thread> threads;
  for (int i = 1; i < impl_->options.num_threads; ++i) threads.emplace_back([this] { impl_->ioc.run(); });
  impl_->ioc.run();
  for (auto& t : threads) t.join();
}

void HttpServer::stop_accepting() {
  net::post(impl_->ioc, [this] {
    beast::error_code ec;
    impl_->acceptor.close(ec);
    impl_->retry.cancel();
  });
}

void HttpServer::stop() { impl_->ioc.stop(); }

void HttpServer::stop_when_idle() {
  impl_->count.stop_when_idle = true;
  if (impl_->count.busy == 0) stop();
}

}  // namespace kiln::server
