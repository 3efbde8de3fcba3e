// Sampler: the next token of each sequence from its logits row. Logprobs are those of the model's
// distribution (log-softmax of the raw logits); the token is drawn after logit bias, min_tokens
// masking and the repetition, frequency and presence penalties, by kernels/sampling (seeded per
// request and position, so batching and preemption never change a sample).
#pragma once
#include <cstdint>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/core/tensor.h"
#include "kiln/engine/sequence.h"

namespace kiln {

// The logprob of token and, best first, the top_k tokens of a raw logits row [vocab].
TokenOutput token_logprobs(const float* logits, int64_t vocab, int32_t token, int32_t top_k);

// Whether sampling seq's next token needs its logits on the host: logprobs, logit bias or
// penalties (min_tokens masking travels as SampleArgs::banned; the filters are kernels/sampling's).
bool needs_host_logits(const Sequence& seq);

// Applies logit bias, min_tokens masking and penalties to one logits row [vocab] in place.
void apply_penalties(float* logits, int64_t vocab, const Sequence& seq, const std::vector<int32_t>& eos_ids);

// logits: [seqs.size(), vocab] f32, modified in place. Appends one TokenOutput per sequence.
Status sample_sequences(Tensor logits, const std::vector<const Sequence*>& seqs, const std::vector<int32_t>& eos_ids,
                        std::vector<TokenOutput>* out);

}  // namespace kiln
