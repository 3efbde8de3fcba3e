// KL evaluation of a test model against a baseline over a token stream (`kiln eval kl`): the
// stream is cut into windows of ctx tokens; both models run each window from an empty cache
// (prompt_logits) and, as llama.cpp's perplexity does, only the second half of each window is
// scored (logits at positions [ctx/2, ctx-1) predicting the next token), so every scored token
// has at least ctx/2 tokens of context. score_all scores every position but the last instead.
#pragma once
#include <functional>
#include <vector>

#include "kiln/eval/kl_divergence.h"
#include "kiln/models/model.h"

namespace kiln::eval {

struct KlEvalOptions {
  int64_t ctx = 512;
  int64_t chunks = 0;         // windows to run; 0 = as many as the tokens fill
  bool score_all = false;
  int32_t bos_id = -1;        // >= 0: the first token of every window becomes BOS (llama.cpp)
  int64_t prefill_chunk = 512;
};

// Which logits rows of a window are scored: [first, ctx - 1).
int64_t first_scored(const KlEvalOptions& o);

// progress(windows done, windows total, running summary) after each window.
using KlProgress = std::function<void(int64_t, int64_t, const KlSummary&)>;

Result<KlSummary> run_kl_eval(Model& base, Model& test, const std::vector<int32_t>& tokens, const KlEvalOptions& options,
                              const KlProgress& progress = {});

}  // namespace kiln::eval
