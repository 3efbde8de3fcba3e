// StopChecker: stop tokens first, then stop strings in the new text, then the length limits.
#include "kiln/engine/stop_checker.h"

#include <algorithm>

#include "kiln/engine/detokenizer.h"

namespace kiln {

StopChecker::StopChecker(const GenerationParams& params, std::vector<int32_t> eos_ids, int64_t max_model_len)
    : params_(params), eos_ids_(std::move(eos_ids)), max_model_len_(max_model_len) {
  for (const std::string& s : params_.stop) max_stop_len_ = std::max(max_stop_len_, s.size());
}

bool StopChecker::is_stop_token(int32_t token) const {
  const auto& ids = params_.stop_token_ids;
  if (std::find(ids.begin(), ids.end(), token) != ids.end()) return true;
  return !params_.ignore_eos && std::find(eos_ids_.begin(), eos_ids_.end(), token) != eos_ids_.end();
}

void StopChecker::release_up_to(size_t end, std::string* release) {
  end = utf8_complete_prefix(text_, end);
  if (end > released_) {
    release->append(text_, released_, end - released_);
    released_ = end;
  }
}

FinishReason StopChecker::check(int32_t token, int64_t num_generated, int64_t total_tokens, std::string_view delta,
                                std::string* release) {
  const bool may_stop = num_generated >= params_.min_tokens;
  if (may_stop && is_stop_token(token)) {  // the stop token's own text is not part of the output
    release_up_to(text_.size(), release);
    return FinishReason::kStop;
  }
  const size_t old_size = text_.size();
  text_.append(delta);
  if (may_stop && max_stop_len_ > 0 && !delta.empty()) {
    // A match must end inside the new text, so it starts at most max_stop_len - 1 bytes earlier.
    const size_t from = old_size >= max_stop_len_ - 1 ? old_size - (max_stop_len_ - 1) : 0;
    size_t best = std::string::npos, best_len = 0;  // the earliest match; of those starting there, the longest
    for (const std::string& s : params_.stop) {
      const size_t at = text_.find(s, from);
      if (at < best || (at == best && at != std::string::npos && s.size() > best_len)) best = at, best_len = s.size();
    }
    if (best != std::string::npos) {
      text_.resize(best + (params_.include_stop_str_in_output ? best_len : 0));
      release_up_to(text_.size(), release);
      return FinishReason::kStop;
    }
  }
  if (num_generated >= params_.max_tokens || total_tokens >= max_model_len_) {
    release_up_to(text_.size(), release);
    return FinishReason::kLength;
  }
  const size_t hold = max_stop_len_ > 0 ? max_stop_len_ - 1 : 0;
  release_up_to(text_.size() >= hold ? text_.size() - hold : 0, release);
  return FinishReason::kNone;
}

}  // namespace kiln
