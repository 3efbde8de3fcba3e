// RequestStream: a mutex-guarded deque; the callback runs outside the lock.
#include "kiln/engine/request_stream.h"

namespace kiln {

void RequestStream::push(RequestOutput out) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    finished_ = out.finished();
    queue_.push_back(std::move(out));
  }
  cv_.notify_all();
  if (on_output_) on_output_();
}

std::vector<RequestOutput> RequestStream::take() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<RequestOutput> out(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()));
  queue_.clear();
  return out;
}

std::vector<RequestOutput> RequestStream::wait() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !queue_.empty(); });
  std::vector<RequestOutput> out(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()));
  queue_.clear();
  return out;
}

bool RequestStream::finished() const {
  std::lock_guard<std::mutex> lock(mu_);
  return finished_;
}

}  // namespace kiln
