// HttpClient: one HttpCall per request (connect or reuse -> write -> read header -> read body
// piecewise through a buffer_body parser), an idle-connection pool, and a retry on a fresh
// connection when a reused one turns out to have been closed by the server.
#include "kiln/bench/http_client.h"

#include <array>
#include <chrono>
#include <limits>
#include <optional>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace kiln::bench {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;

}  // namespace

struct HttpClient::Impl {
  asio::io_context& io;
  HttpTarget target;
  std::string api_key;
  std::chrono::steady_clock::duration timeout;
  bool keep_alive;
  tcp::resolver::results_type endpoints;
  std::vector<std::unique_ptr<beast::tcp_stream>> idle;
  int64_t opened = 0;
};

namespace {

class HttpCall : public std::enable_shared_from_this<HttpCall> {
 public:
  HttpCall(HttpClient::Impl& client, http::request<http::string_body> request, HttpCallbacks callbacks)
      : c_(client), request_(std::move(request)), cb_(std::move(callbacks)) {}

  void start() {
    if (c_.idle.empty()) return connect();
    stream_ = std::move(c_.idle.back());
    c_.idle.pop_back();
    reused_ = true;
    write();
  }

 private:
  void connect() {
    reused_ = false;
    buffer_.clear();
    stream_ = std::make_unique<beast::tcp_stream>(c_.io);
    ++c_.opened;
    stream_->expires_after(c_.timeout);
    stream_->async_connect(c_.endpoints, [self = shared_from_this()](error_code ec, const tcp::endpoint&) {
      if (ec) return self->fail("connect", ec);
      error_code ignored;
      self->stream_->socket().set_option(tcp::no_delay(true), ignored);
      self->write();
    });
  }

  void write() {
    stream_->expires_after(c_.timeout);
    http::async_write(*stream_, request_, [self = shared_from_this()](error_code ec, size_t) {
      if (ec) return self->retry_or_fail("write", ec);
      self->read_header();
    });
  }

  void read_header() {
    parser_.emplace();
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());  // not boost::none: Beast 1.74 compares it wrongly
    stream_->expires_after(c_.timeout);
    http::async_read_header(*stream_, buffer_, *parser_, [self = shared_from_this()](error_code ec, size_t) {
      if (ec) return self->retry_or_fail("read", ec);
      if (self->cb_.on_status) self->cb_.on_status(self->parser_->get().result_int());
      self->read_body();
    });
  }

  void read_body() {
    if (parser_->is_done()) return finish();
    parser_->get().body().data = chunk_.data();
    parser_->get().body().size = chunk_.size();
    stream_->expires_after(c_.timeout);
    http::async_read_some(*stream_, buffer_, *parser_, [self = shared_from_this()](error_code ec, size_t) {
      if (ec == http::error::need_buffer) ec = {};
      const size_t got = self->chunk_.size() - self->parser_->get().body().size;
      if (got > 0 && self->cb_.on_body) self->cb_.on_body(std::string_view(self->chunk_.data(), got));
      if (ec == http::error::end_of_stream && self->parser_->is_done()) ec = {};
      if (ec) return self->fail("read", ec);
      self->read_body();
    });
  }

  void finish() {
    if (c_.keep_alive && parser_->keep_alive() && buffer_.size() == 0) {
      stream_->expires_never();
      c_.idle.push_back(std::move(stream_));
    } else {
      error_code ignored;
      stream_->socket().shutdown(tcp::socket::shutdown_both, ignored);
    }
    done(ok_status());
  }

  // A reused keep-alive connection may have been closed by the server while idle: try once more
  // on a new one, as long as nothing of the response arrived.
  void retry_or_fail(const char* what, error_code ec) {
    const bool closed = ec == http::error::end_of_stream || ec == asio::error::eof ||
                        ec == asio::error::connection_reset || ec == asio::error::broken_pipe;
    if (reused_ && closed) return connect();
    fail(what, ec);
  }

  void fail(const char* what, error_code ec) {
    if (stream_) {
      error_code ignored;
      stream_->socket().close(ignored);
    }
    const bool timeout = ec == beast::error::timeout;
    done(Status(StatusCode::kUnavailable, std::string(what) + " " + c_.target.host + ":" + c_.target.port + ": " +
                                              (timeout ? "timed out" : ec.message())));
  }

  void done(const Status& s) {
    if (finished_) return;
    finished_ = true;
    if (cb_.on_done) cb_.on_done(s);
  }

  HttpClient::Impl& c_;
  http::request<http::string_body> request_;
  HttpCallbacks cb_;
  std::unique_ptr<beast::tcp_stream> stream_;
  beast::flat_buffer buffer_;
  std::optional<http::response_parser<http::buffer_body>> parser_;
  std::array<char, 16384> chunk_{};
  bool reused_ = false, finished_ = false;
};

}  // namespace

Result<HttpTarget> parse_base_url(std::string_view url) {
  const std::string_view scheme = "http://";
  if (url.substr(0, 8) == "https://") return unimplemented("--base-url " + std::string(url) + ": https is not supported");
  if (url.substr(0, scheme.size()) != scheme) return invalid_argument("--base-url " + std::string(url) + ": expected http://HOST[:PORT][/PATH]");
  std::string_view rest = url.substr(scheme.size());
  HttpTarget t;
  const size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  if (slash != std::string_view::npos) t.path_prefix = std::string(rest.substr(slash));
  while (!t.path_prefix.empty() && t.path_prefix.back() == '/') t.path_prefix.pop_back();
  const size_t colon = authority.rfind(':');
  if (colon != std::string_view::npos && authority.find(']') == std::string_view::npos) {
    t.host = std::string(authority.substr(0, colon));
    t.port = std::string(authority.substr(colon + 1));
  } else {
    t.host = std::string(authority);
    t.port = "80";
  }
  if (t.host.empty() || t.port.empty() || t.port.find_first_not_of("0123456789") != std::string::npos)
    return invalid_argument("--base-url " + std::string(url) + ": expected http://HOST[:PORT][/PATH]");
  return t;
}

std::string endpoint_path(const HttpTarget& target, const std::string& endpoint) {
  const std::string& prefix = target.path_prefix;
  if (prefix.size() >= 3 && prefix.compare(prefix.size() - 3, 3, "/v1") == 0 && endpoint.rfind("/v1/", 0) == 0)
    return endpoint.substr(3);
  return endpoint;
}

Result<std::string> http_get(const HttpTarget& target, const std::string& path, const std::string& api_key,
                             double timeout_s) {
  asio::io_context io;
  beast::tcp_stream stream(io);
  error_code ec;
  tcp::resolver resolver(io);
  auto endpoints = resolver.resolve(target.host, target.port, ec);
  const std::string where = "GET http://" + target.host + ":" + target.port + target.path_prefix + path + ": ";
  if (ec) return Status(StatusCode::kUnavailable, where + ec.message());
  stream.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(timeout_s)));
  stream.connect(endpoints, ec);
  if (ec) return Status(StatusCode::kUnavailable, where + ec.message());
  http::request<http::empty_body> req{http::verb::get, target.path_prefix + path, 11};
  req.set(http::field::host, target.host + ":" + target.port);
  req.set(http::field::user_agent, "kiln-bench");
  if (!api_key.empty()) req.set(http::field::authorization, "Bearer " + api_key);
  http::write(stream, req, ec);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  if (!ec) http::read(stream, buffer, res, ec);
  if (ec) return Status(StatusCode::kUnavailable, where + ec.message());
  stream.socket().shutdown(tcp::socket::shutdown_both, ec);
  if (res.result_int() != 200) return Status(StatusCode::kUnavailable, where + "HTTP " + std::to_string(res.result_int()));
  return std::move(res.body());
}

HttpClient::HttpClient(asio::io_context& io, HttpTarget target, std::string api_key, double idle_timeout_s,
                       bool keep_alive)
    : impl_(new Impl{io, std::move(target), std::move(api_key),
                     std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                         std::chrono::duration<double>(idle_timeout_s)),
                     keep_alive, {}, {}, 0}) {}

HttpClient::~HttpClient() = default;

Status HttpClient::resolve() {
  error_code ec;
  tcp::resolver resolver(impl_->io);
  impl_->endpoints = resolver.resolve(impl_->target.host, impl_->target.port, ec);
  if (ec) return Status(StatusCode::kUnavailable, "resolve " + impl_->target.host + ": " + ec.message());
  return ok_status();
}

void HttpClient::post(const std::string& path, std::string body, HttpCallbacks callbacks) {
  http::request<http::string_body> req{http::verb::post, impl_->target.path_prefix + path, 11};
  req.set(http::field::host, impl_->target.host + ":" + impl_->target.port);
  req.set(http::field::user_agent, "kiln-bench");
  req.set(http::field::content_type, "application/json");
  req.set(http::field::accept, "text/event-stream, application/json");
  if (!impl_->api_key.empty()) req.set(http::field::authorization, "Bearer " + impl_->api_key);
  req.keep_alive(impl_->keep_alive);
  req.body() = std::move(body);
  req.prepare_payload();
  std::make_shared<HttpCall>(*impl_, std::move(req), std::move(callbacks))->start();
}

std::string HttpClient::url(const std::string& path) const {
  return "http://" + impl_->target.host + ":" + impl_->target.port + impl_->target.path_prefix + path;
}

int64_t HttpClient::connections_opened() const { return impl_->opened; }

}  // namespace kiln::bench
