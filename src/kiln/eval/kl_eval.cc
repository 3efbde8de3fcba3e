// run_kl_eval: windows of the token stream through both models, scored with KlAccumulator.
#include "kiln/eval/kl_eval.h"

#include "kiln/engine/generator.h"

namespace kiln::eval {

int64_t first_scored(const KlEvalOptions& o) { return o.score_all ? 0 : o.ctx / 2; }

Result<KlSummary> run_kl_eval(Model& base, Model& test, const std::vector<int32_t>& tokens, const KlEvalOptions& o,
                              const KlProgress& progress) {
  const int64_t vocab = base.config().vocab_size;
  if (test.config().vocab_size != vocab)
    return invalid_argument("eval kl: the models' vocabularies differ (" + std::to_string(vocab) + " vs " +
                            std::to_string(test.config().vocab_size) + ")");
  if (o.ctx < 4) return invalid_argument("eval kl: --ctx must be at least 4");
  const int64_t available = static_cast<int64_t>(tokens.size()) / o.ctx;
  if (available == 0)
    return invalid_argument("eval kl: " + std::to_string(tokens.size()) + " tokens do not fill one window of " +
                            std::to_string(o.ctx));
  const int64_t windows = o.chunks > 0 ? std::min(o.chunks, available) : available;
  KlAccumulator acc;
  for (int64_t w = 0; w < windows; ++w) {
    std::vector<int32_t> ids(tokens.begin() + w * o.ctx, tokens.begin() + (w + 1) * o.ctx);
    if (o.bos_id >= 0) ids[0] = o.bos_id;
    KILN_ASSIGN_OR_RETURN(HostTensor lb, prompt_logits(base, ids, o.prefill_chunk));
    KILN_ASSIGN_OR_RETURN(HostTensor lt, prompt_logits(test, ids, o.prefill_chunk));
    for (int64_t j = first_scored(o); j < o.ctx - 1; ++j) {
      acc.add(compare_logits(lb.tensor.ptr<float>() + j * vocab, lt.tensor.ptr<float>() + j * vocab, vocab,
                             ids[static_cast<size_t>(j + 1)]));
    }
    if (progress) progress(w + 1, windows, acc.summary());
  }
  return acc.summary();
}

}  // namespace kiln::eval
