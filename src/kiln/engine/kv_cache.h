// KvCache: the host memory of the paged K/V cache, one [num_blocks, block_size, num_kv_heads,
// head_dim] tensor pair per layer. Which blocks belong to which sequence is the block manager's
// business; this only owns the memory.
#pragma once
#include <vector>

#include "kiln/core/tensor.h"
#include "kiln/models/model.h"

namespace kiln {

class KvCache {
 public:
  KvCache(const ModelConfig& c, int64_t num_blocks, int64_t block_size);
  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return block_size_; }
  const KvCacheView& view() const { return view_; }
  static int64_t bytes_per_block(const ModelConfig& c, int64_t block_size);

 private:
  int64_t num_blocks_, block_size_;
  std::vector<HostTensor> storage_;
  KvCacheView view_;
};

}  // namespace kiln
