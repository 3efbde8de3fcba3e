// SseParser: server-sent events read incrementally from byte chunks cut anywhere (mid-line, mid
// "\r\n"). Yields each event's data lines joined by '\n', as the WHATWG EventSource spec reads
// them; comments (":...") and fields other than "data" are skipped.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace kiln::bench {

class SseParser {
 public:
  // The data of every event that `bytes` completes, in order.
  std::vector<std::string> feed(std::string_view bytes);

 private:
  void end_line(std::vector<std::string>& events);

  std::string line_;      // the line read so far
  std::string data_;      // data of the event being read
  bool has_data_ = false;
  bool after_cr_ = false;  // the last byte was '\r': a following '\n' belongs to it
};

}  // namespace kiln::bench
