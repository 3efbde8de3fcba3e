// Model defaults: host KV caches for CPU models.
#include "kiln/models/model.h"

#include <new>

#include "kiln/core/host_memory.h"

namespace kiln {

Status check_kv_cache_fits(const ModelConfig& c, DType dtype, int64_t num_blocks, int64_t block_size) {
  const double bytes = 2.0 * static_cast<double>(c.num_layers) * static_cast<double>(num_blocks) *
                       static_cast<double>(block_size) * static_cast<double>(dtype_bytes(dtype, c.num_kv_heads * c.head_dim));
  return check_fits_host_memory(bytes, "a KV cache of " + std::to_string(num_blocks) + " blocks of " +
                                           std::to_string(block_size) + " tokens (" + std::string(dtype_name(dtype)) + ")");
}

Result<KvCacheView> Model::allocate_kv_cache(int64_t num_blocks, int64_t block_size) {
  const ModelConfig& c = config();
  KILN_RETURN_IF_ERROR(check_kv_cache_fits(c, DType::kF32, num_blocks, block_size));
  auto storage = std::make_shared<std::vector<HostTensor>>();
  KvCacheView view;
  try {
    for (int64_t l = 0; l < c.num_layers; ++l) {
      for (int kv = 0; kv < 2; ++kv) {
        storage->push_back(HostTensor::zeros(DType::kF32, {num_blocks, block_size, c.num_kv_heads, c.head_dim}));
        (kv == 0 ? view.k : view.v).push_back(storage->back().tensor);
      }
    }
  } catch (const std::bad_alloc&) {
    return resource_exhausted("out of host memory for a KV cache of " + std::to_string(num_blocks) + " blocks");
  }
  view.owner = storage;
  return view;
}

int64_t Model::kv_block_bytes(int64_t block_size) const {
  const ModelConfig& c = config();
  return 2 * c.num_layers * block_size * c.num_kv_heads * c.head_dim * 4;
}

int64_t Model::max_kv_blocks(int64_t block_size, double memory_fraction) const {
  const int64_t per_block = kv_block_bytes(block_size);
  const double budget = 4.0 * (1ll << 30) * memory_fraction;  // CPU: 4 GiB at fraction 1
  return std::max<int64_t>(1, static_cast<int64_t>(budget / static_cast<double>(per_block)));
}

Status Model::forward_sample(const ForwardBatch&, const KvCacheView&, const std::vector<SamplingParams>&,
                             const std::vector<uint64_t>&, const std::vector<std::pair<int32_t, int32_t>>&,
                             std::vector<int32_t>*) {
  return unimplemented("forward_sample: this model samples on the host (use forward and kernels/sampling)");
}

}  // namespace kiln
