// CudaLlamaModel: the LlamaModel decoder on the GPU. Weights bf16 on the device (from a
// checkpoint or random for --load-format dummy), activations bf16 with f32 math inside kernels,
// the paged KV cache bf16 [num_blocks, block_size, num_kv_heads, head_dim] per layer.
// Only built with KILN_CUDA; create_cuda_model() returns Unimplemented otherwise.
#pragma once
#include <memory>

#include "kiln/models/decoder_weights.h"
#include "kiln/models/model.h"

namespace kiln {

// Takes the host checkpoint (any float dtype; uploaded as bf16), or with options.dummy_weights
// only loaded.config (random weights made on the device).
Result<std::unique_ptr<Model>> create_cuda_model(LoadedModel&& loaded, const ModelOptions& options);

}  // namespace kiln
