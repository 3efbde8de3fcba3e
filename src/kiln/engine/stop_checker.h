// StopChecker: decides after each generated token whether a sequence is done (EOS, stop token
// ids, stop strings, max_tokens, the context limit) and which text may be released. A stop
// string can span tokens, so the checker keeps the output text, searches the part a new token
// could complete, and holds back the last (longest stop string - 1) bytes until they can no
// longer start a match.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/engine/request.h"

namespace kiln {

class StopChecker {
 public:
  StopChecker(const GenerationParams& params, std::vector<int32_t> eos_ids, int64_t max_model_len);

  // token: the one just generated, the num_generated-th (1-based); total_tokens: prompt +
  // generated; delta: its text. Returns the finish reason (kNone: go on) and appends to *release
  // the text that can be sent now (all of what is left when finishing).
  FinishReason check(int32_t token, int64_t num_generated, int64_t total_tokens, std::string_view delta,
                     std::string* release);
  const std::string& text() const { return text_; }

 private:
  bool is_stop_token(int32_t token) const;
  void release_up_to(size_t end, std::string* release);

  const GenerationParams& params_;
  std::vector<int32_t> eos_ids_;
  int64_t max_model_len_;
  size_t max_stop_len_ = 0;
  std::string text_;
  size_t released_ = 0;
};

}  // namespace kiln
