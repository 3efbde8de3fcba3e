// Model: the decoder forward pass over a batch of sequences and a paged KV cache, plus the
// registry that builds the right model for a loaded checkpoint.
#pragma once
#include <memory>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/core/tensor.h"
#include "kiln/io/model_loader.h"
#include "kiln/models/model_config.h"

namespace kiln {

// One step's worth of tokens from several sequences, grouped by sequence.
struct ForwardBatch {
  std::vector<int32_t> token_ids;      // [num_tokens]
  std::vector<int32_t> positions;      // [num_tokens]
  std::vector<int32_t> cu_seqlens_q;   // [batch + 1]
  std::vector<int32_t> kv_lens;        // [batch]: cached tokens after this step (new ones included)
  std::vector<int32_t> block_tables;   // [batch, max_blocks_per_seq]
  int32_t max_blocks_per_seq = 0;
  std::vector<int32_t> slot_mapping;   // [num_tokens]: where each token's K/V goes
  std::vector<int32_t> logits_rows;    // token rows whose logits are wanted (e.g. last of each seq)
};

// Per-layer K and V caches: [num_blocks, block_size, num_kv_heads, head_dim].
struct KvCacheView {
  std::vector<Tensor> k, v;
};

class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelConfig& config() const = 0;
  // logits: [batch.logits_rows.size(), vocab] f32.
  virtual Status forward(const ForwardBatch& batch, const KvCacheView& kv, Tensor logits) = 0;
};

// Options applied when the model is built.
struct ModelOptions {
  int64_t moe_top_k = 0;  // > 0: route each token to this many experts instead of the config's
};

// Builds the CPU model for loaded.config.arch; takes ownership of the weights.
Result<std::unique_ptr<Model>> create_model(LoadedModel&& loaded, const ModelOptions& options = {});

}  // namespace kiln
