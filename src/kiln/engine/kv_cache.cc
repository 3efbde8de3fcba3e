// KvCache allocation.
#include "kiln/engine/kv_cache.h"

namespace kiln {

KvCache::KvCache(const ModelConfig& c, int64_t num_blocks, int64_t block_size)
    : num_blocks_(num_blocks), block_size_(block_size) {
  for (int64_t l = 0; l < c.num_layers; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      storage_.push_back(HostTensor::zeros(DType::kF32, {num_blocks, block_size, c.num_kv_heads, c.head_dim}));
      (kv == 0 ? view_.k : view_.v).push_back(storage_.back().tensor);
    }
  }
}

int64_t KvCache::bytes_per_block(const ModelConfig& c, int64_t block_size) {
  return 2 * c.num_layers * block_size * c.num_kv_heads * c.head_dim * 4;
}

}  // namespace kiln
