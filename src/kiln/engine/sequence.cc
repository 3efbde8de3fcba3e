// Sequence construction.
#include "kiln/engine/sequence.h"

namespace kiln {

Sequence::Sequence(int64_t id_, Request request, std::shared_ptr<RequestStream> stream_, const Tokenizer* tokenizer,
                   std::vector<int32_t> eos_ids, int64_t max_model_len, double arrival)
    : id(id_),
      params(std::move(request.params)),
      num_prompt_tokens(static_cast<int64_t>(request.prompt.size())),
      tokens(std::move(request.prompt)),
      stream(std::move(stream_)),
      detokenizer(tokenizer, tokens, params.skip_special_tokens),
      stop_checker(params, std::move(eos_ids), max_model_len),
      arrival_time(arrival) {
  if (params.prompt_logprobs >= 0 && num_prompt_tokens > 1)
    prompt_logprobs.resize(static_cast<size_t>(num_prompt_tokens - 1));
}

}  // namespace kiln
