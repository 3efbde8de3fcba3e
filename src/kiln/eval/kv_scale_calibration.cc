// calibrate_kv_scales: prefill one sequence in chunks, then scan the written cache slots.
#include "kiln/eval/kv_scale_calibration.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kiln/kernels/hadamard.h"

namespace kiln::eval {

Result<KvScales> calibrate_kv_scales(Model& model, const std::vector<int32_t>& tokens, int64_t chunk) {
  const ModelConfig& c = model.config();
  const int64_t n = static_cast<int64_t>(tokens.size()), bs = 16;
  if (n == 0) return invalid_argument("kv scale calibration: no tokens");
  if (n > c.max_position_embeddings) return out_of_range("kv scale calibration: more tokens than the model's context");
  const int64_t blocks = (n + bs - 1) / bs;
  KILN_ASSIGN_OR_RETURN(KvCacheView kv, model.allocate_kv_cache(blocks, bs));
  if (kv.k.empty() || kv.k[0].device != Device::kCpu || kv.k[0].dtype != DType::kF32)
    return unimplemented("kv scale calibration needs a CPU model with an f32 KV cache");
  HostTensor logits = HostTensor::zeros(DType::kF32, {1, c.vocab_size});
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const int64_t end = std::min(n, begin + chunk), len = end - begin;
    ForwardBatch b;
    b.token_ids.assign(tokens.begin() + begin, tokens.begin() + end);
    for (int64_t i = 0; i < len; ++i) {
      b.positions.push_back(static_cast<int32_t>(begin + i));
      b.slot_mapping.push_back(static_cast<int32_t>(begin + i));
    }
    b.cu_seqlens_q = {0, static_cast<int32_t>(len)};
    b.kv_lens = {static_cast<int32_t>(end)};
    b.max_blocks_per_seq = static_cast<int32_t>(blocks);
    b.block_tables.resize(static_cast<size_t>(blocks));
    std::iota(b.block_tables.begin(), b.block_tables.end(), 0);
    b.logits_rows = {static_cast<int32_t>(len - 1)};
    KILN_RETURN_IF_ERROR(model.forward(b, kv, logits.tensor));
  }
  // Slots [0, n) hold the sequence: blocks are 0, 1, ... in order, so they are the first n rows.
  const int64_t row = c.num_kv_heads * c.head_dim;
  // keys: the larger of the plain and the Hadamard-rotated amax (an fp8 cache rotates keys by
  // default, ModelOptions::fp8_kv_hadamard; the scale must hold for either).
  auto scale_of = [&](const Tensor& cache, bool rotated_too) {
    float amax = 0.0f;
    const float* p = cache.ptr<float>();
    for (int64_t i = 0; i < n * row; ++i) amax = std::max(amax, std::fabs(p[i]));
    if (rotated_too && is_power_of_two(c.head_dim)) {
      std::vector<float> head(static_cast<size_t>(c.head_dim));
      for (int64_t i = 0; i < n * row; i += c.head_dim) {
        std::copy_n(p + i, c.head_dim, head.data());
        hadamard_inplace(head.data(), c.head_dim);
        for (float x : head) amax = std::max(amax, std::fabs(x));
      }
    }
    return amax > 0.0f ? amax / kFp8E4M3Max : 1.0f;
  };
  KvScales s;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    s.k.push_back(scale_of(kv.k[static_cast<size_t>(l)], true));
    s.v.push_back(scale_of(kv.v[static_cast<size_t>(l)], false));
  }
  return s;
}

}  // namespace kiln::eval
