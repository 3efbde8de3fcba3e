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

// ---- CUDA (kernels/cuda/embedding/embedding.cu) --------------------------------------------
// The same gather on device tensors: ids int32, table bf16 -> out bf16; hidden % 8 == 0. The ids
// are not checked on the device (that would need a sync): an id outside [0, vocab) yields a row
// of zeros. Callers hold the ids on the host and check them there.
}  // namespace kiln
#include <span>
struct CUstream_st;  // cudaStream_t, without the CUDA headers
namespace kiln {

struct EmbeddingCudaVariant {
  DType table;
  DType out;
  Status (*launch)(const EmbeddingArgs& args, CUstream_st* stream);
};
std::span<const EmbeddingCudaVariant> embedding_cuda_variants();
Status embedding_cuda(const EmbeddingArgs& args, CUstream_st* stream);

}  // namespace kiln
