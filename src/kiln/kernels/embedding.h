// Embedding gather: out[t] = table[ids[t]]. Variants (CPU): table f32/f16/bf16 -> out f32.
#pragma once
#include "kiln/core/status.h"
#include "kiln/core/tensor.h"

namespace kiln {

struct EmbeddingArgs {
  Tensor ids;    // [num_tokens] int32
  Tensor table;  // [vocab, hidden] f32 | f16 | bf16
  Tensor out;    // [num_tokens, hidden] f32
};

// Ids outside [0, vocab) are an OutOfRange error (nothing is written for them).
Status embedding_cpu(const EmbeddingArgs& args);

}  // namespace kiln
