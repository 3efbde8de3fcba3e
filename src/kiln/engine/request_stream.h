// RequestStream: the queue of one request's outputs, filled by the engine thread and drained by
// whoever asked (an HTTP connection, a test). The engine calls on_output after every push, so an
// event loop can be woken without a thread blocked per request.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <vector>

#include "kiln/engine/request.h"

namespace kiln {

class RequestStream {
 public:
  RequestStream(int64_t id, std::function<void()> on_output) : id_(id), on_output_(std::move(on_output)) {}
  int64_t id() const { return id_; }

  // Engine side. After a finished output nothing more is pushed.
  void push(RequestOutput out);

  // Consumer side: every output pushed since the last call, without blocking.
  std::vector<RequestOutput> take();
  // Blocks until at least one output is there, then takes them all.
  std::vector<RequestOutput> wait();
  bool finished() const;

 private:
  const int64_t id_;
  const std::function<void()> on_output_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<RequestOutput> queue_;
  bool finished_ = false;
};

}  // namespace kiln
