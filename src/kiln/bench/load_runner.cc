// LoadRunner: the measured phase is either paced (an arrival timer re-armed for each scheduled
// send; sends held by --max-concurrency wait in a queue and count as lag) or closed (a completion
// sends the next request). Records live in a deque so in-flight callbacks keep stable pointers.
#include "kiln/bench/load_runner.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <memory>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "kiln/bench/http_client.h"
#include "kiln/bench/openai_stream_reader.h"

namespace kiln::bench {
namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
Clock::duration to_clock(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

class LoadRunner {
 public:
  LoadRunner(const LoadOptions& o, const HttpTarget& target, const std::vector<BenchRequest>& warmups,
             const std::vector<BenchRequest>& requests)
      : o_(o), client_(io_, target, o.api_key, o.request_timeout_s, o.keep_alive), arrival_timer_(io_), progress_timer_(io_),
        schedule_(o.request_rate, o.arrivals, o.burstiness, o.seed), warmups_(warmups), requests_(requests),
        closed_loop_(!std::isfinite(o.request_rate)), tty_(isatty(2) != 0) {}

  Result<LoadResult> run();

 private:
  double elapsed() const { return seconds(Clock::now() - t0_); }
  bool by_duration() const { return o_.duration_s > 0; }
  void post(const BenchRequest& req, RequestRecord* rec, std::function<void()> done);

  void send_warmup();
  void start_measured();
  void on_arrival();
  void arm_arrival();
  void dispatch(int64_t index, double scheduled);
  void send(int64_t index, double scheduled);
  void on_done(const RequestRecord& rec);
  bool closed_loop_has_more() const;
  void maybe_finish();
  void arm_progress();
  void print_progress(bool final);
  PacerStats pacer_stats() const;

  const LoadOptions& o_;
  asio::io_context io_;
  HttpClient client_;
  asio::steady_timer arrival_timer_, progress_timer_;
  ArrivalSchedule schedule_;
  const std::vector<BenchRequest>& warmups_;
  const std::vector<BenchRequest>& requests_;
  const bool closed_loop_, tty_;

  std::deque<RequestRecord> warmup_records_, records_;
  size_t warmups_sent_ = 0, warmups_done_ = 0;
  std::string warmup_error_;
  Clock::time_point t0_;
  int64_t next_index_ = 0;      // next request to schedule (open) or send (closed)
  double next_offset_ = 0;
  bool arrivals_over_ = false, finished_ = false, lag_warned_ = false;
  std::deque<std::pair<int64_t, double>> waiting_;  // scheduled, held by max_concurrency
  int64_t in_flight_ = 0, max_in_flight_ = 0, done_ = 0, errors_ = 0;
  double end_ = 0;
};

void LoadRunner::post(const BenchRequest& req, RequestRecord* rec, std::function<void()> done) {
  auto reader = std::make_shared<OpenAiStreamReader>(rec);
  const Clock::time_point sent = Clock::now();
  HttpCallbacks cb;
  cb.on_status = [reader](int status) { reader->on_status(status); };
  cb.on_body = [reader, sent](std::string_view bytes) { reader->on_body(bytes, seconds(Clock::now() - sent)); };
  cb.on_done = [reader, sent, done = std::move(done)](const Status& s) {
    reader->on_done(s.ok() ? "" : s.message(), seconds(Clock::now() - sent));
    done();
  };
  client_.post(o_.endpoint, req.body, std::move(cb));
}

void LoadRunner::send_warmup() {
  RequestRecord* rec = &warmup_records_.emplace_back();
  const BenchRequest& req = warmups_[warmups_sent_++];
  rec->expected_prompt_tokens = req.prompt_tokens;
  post(req, rec, [this, rec] {
    ++warmups_done_;
    if (!rec->ok && warmup_error_.empty()) warmup_error_ = rec->error;
    if (!warmup_error_.empty()) return;
    if (warmups_sent_ < warmups_.size()) send_warmup();
    else if (warmups_done_ == warmups_.size()) start_measured();
  });
}

void LoadRunner::start_measured() {
  t0_ = Clock::now();
  arm_progress();
  if (closed_loop_) {
    const int64_t width = o_.max_concurrency > 0 ? o_.max_concurrency : o_.num_prompts;
    for (int64_t i = 0; i < width && closed_loop_has_more(); ++i) send(next_index_++, elapsed());
  } else {
    next_offset_ = schedule_.next_offset();
    on_arrival();
  }
}

void LoadRunner::arm_arrival() {
  arrival_timer_.expires_at(t0_ + to_clock(next_offset_));
  arrival_timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) on_arrival();
  });
}

// Sends every request whose time has come (several when the timer fired late), then re-arms.
void LoadRunner::on_arrival() {
  const double now = elapsed();
  while (!arrivals_over_ && next_offset_ <= now) {
    dispatch(next_index_++, next_offset_);
    next_offset_ = schedule_.next_offset();
    arrivals_over_ = by_duration() ? next_offset_ >= o_.duration_s : next_index_ >= o_.num_prompts;
  }
  if (!arrivals_over_) arm_arrival();
  maybe_finish();
}

void LoadRunner::dispatch(int64_t index, double scheduled) {
  if (o_.max_concurrency > 0 && in_flight_ >= o_.max_concurrency) waiting_.emplace_back(index, scheduled);
  else send(index, scheduled);
}

void LoadRunner::send(int64_t index, double scheduled) {
  const BenchRequest& req = requests_[static_cast<size_t>(index) % requests_.size()];
  RequestRecord* rec = &records_.emplace_back();
  rec->index = index;
  rec->scheduled_time = scheduled;
  rec->send_time = elapsed();
  rec->expected_prompt_tokens = req.prompt_tokens;
  rec->expected_output_tokens = req.output_tokens;
  const double lag = rec->send_time - scheduled;
  if (!closed_loop_ && lag > PacerStats::kLagTolerance && !lag_warned_) {
    lag_warned_ = true;
    std::fprintf(stderr, "%skiln bench: warning: sends are falling behind schedule (%.0f ms late%s)\n", tty_ ? "\n" : "",
                 lag * 1e3, o_.max_concurrency > 0 ? ", held by --max-concurrency" : "; the client cannot keep up");
  }
  max_in_flight_ = std::max(max_in_flight_, ++in_flight_);
  post(req, rec, [this, rec] { on_done(*rec); });
}

bool LoadRunner::closed_loop_has_more() const {
  return by_duration() ? elapsed() < o_.duration_s : next_index_ < o_.num_prompts;
}

void LoadRunner::on_done(const RequestRecord& rec) {
  --in_flight_;
  ++done_;
  end_ = std::max(end_, elapsed());
  if (!rec.ok && ++errors_ <= 3)
    std::fprintf(stderr, "%skiln bench: request %lld failed: %s\n", tty_ ? "\n" : "", static_cast<long long>(rec.index),
                 rec.error.c_str());
  if (closed_loop_) {
    if (closed_loop_has_more()) send(next_index_++, elapsed());
  } else if (!waiting_.empty()) {
    if (by_duration() && elapsed() >= o_.duration_s) {
      waiting_.clear();
    } else {
      const auto [index, scheduled] = waiting_.front();
      waiting_.pop_front();
      send(index, scheduled);
    }
  }
  maybe_finish();
}

void LoadRunner::maybe_finish() {
  if (finished_ || in_flight_ > 0) return;
  if (closed_loop_ ? closed_loop_has_more() : (!arrivals_over_ || !waiting_.empty())) return;
  finished_ = true;
  arrival_timer_.cancel();
  progress_timer_.cancel();
  print_progress(true);
}

void LoadRunner::arm_progress() {
  if (o_.progress_interval_s <= 0) return;
  progress_timer_.expires_after(to_clock(o_.progress_interval_s));
  progress_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec || finished_) return;
    print_progress(false);
    arm_progress();
  });
}

void LoadRunner::print_progress(bool final) {
  if (o_.progress_interval_s <= 0) return;
  const double t = final ? end_ : elapsed();
  std::string total = by_duration() ? "" : "/" + std::to_string(o_.num_prompts);
  std::string behind;
  if (!closed_loop_ && !waiting_.empty()) {
    char b[64];
    std::snprintf(b, sizeof b, " | sends %.0f ms behind", (elapsed() - waiting_.front().second) * 1e3);
    behind = b;
  }
  std::fprintf(stderr, "%s[bench %6.1fs] done %lld%s | in flight %lld | %.2f req/s | errors %lld%s%s", tty_ ? "\r" : "",
               t, static_cast<long long>(done_), total.c_str(), static_cast<long long>(in_flight_),
               t > 0 ? static_cast<double>(done_) / t : 0.0, static_cast<long long>(errors_), behind.c_str(),
               tty_ && !final ? "   " : "\n");
  std::fflush(stderr);
}

PacerStats LoadRunner::pacer_stats() const {
  PacerStats p;
  p.open_loop = !closed_loop_;
  if (closed_loop_ || records_.empty()) return p;
  p.target_rate = o_.request_rate;
  std::vector<double> lags;
  double first_send = records_.front().send_time, last_send = first_send, last_scheduled = 0;
  for (const RequestRecord& r : records_) {
    lags.push_back(r.send_time - r.scheduled_time);
    first_send = std::min(first_send, r.send_time);
    last_send = std::max(last_send, r.send_time);
    last_scheduled = std::max(last_scheduled, r.scheduled_time);
  }
  const double n1 = static_cast<double>(records_.size() - 1);
  if (records_.size() > 1 && last_scheduled > 0) p.scheduled_rate = n1 / last_scheduled;
  if (records_.size() > 1 && last_send > first_send) p.achieved_send_rate = n1 / (last_send - first_send);
  std::sort(lags.begin(), lags.end());
  for (double l : lags) p.lag_mean_s += l / static_cast<double>(lags.size());
  p.lag_p99_s = lags[std::min(lags.size() - 1, static_cast<size_t>(std::ceil(0.99 * static_cast<double>(lags.size()))) - 1)];
  p.lag_max_s = lags.back();
  p.late_sends = std::count_if(lags.begin(), lags.end(), [](double l) { return l > PacerStats::kLagTolerance; });
  p.fell_behind = p.late_sends > 0 || (p.scheduled_rate > 0 && p.achieved_send_rate < 0.95 * p.scheduled_rate);
  return p;
}

Result<LoadResult> LoadRunner::run() {
  KILN_RETURN_IF_ERROR(client_.resolve());
  if (warmups_.empty()) {
    start_measured();
  } else {
    const size_t width = o_.max_concurrency > 0 ? std::min<size_t>(o_.max_concurrency, warmups_.size()) : warmups_.size();
    for (size_t i = 0; i < width; ++i) send_warmup();
  }
  io_.run();
  if (!warmup_error_.empty()) return Status(StatusCode::kUnavailable, "warm-up request failed: " + warmup_error_);
  LoadResult r;
  r.records.assign(records_.begin(), records_.end());
  r.duration_s = end_;
  r.pacer = pacer_stats();
  r.warmup_requests = static_cast<int64_t>(warmups_.size());
  r.max_in_flight = max_in_flight_;
  r.connections_opened = client_.connections_opened();
  r.prompts_reused = next_index_ > static_cast<int64_t>(requests_.size());
  return r;
}

}  // namespace

Result<LoadResult> run_load(const LoadOptions& o, const std::vector<BenchRequest>& warmups,
                            const std::vector<BenchRequest>& requests) {
  if (requests.empty()) return invalid_argument("no requests to send");
  if (!(o.request_rate > 0)) return invalid_argument("--request-rate must be positive (inf: all at once)");
  if (!std::isfinite(o.request_rate) && o.duration_s > 0 && o.max_concurrency <= 0)
    return invalid_argument("--duration with an infinite --request-rate needs --max-concurrency");
  KILN_ASSIGN_OR_RETURN(HttpTarget target, parse_base_url(o.base_url));
  LoadOptions options = o;
  options.endpoint = endpoint_path(target, o.endpoint);
  LoadRunner runner(options, target, warmups, requests);
  return runner.run();
}

}  // namespace kiln::bench
