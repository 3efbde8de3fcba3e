// Generator: a single-sequence loop over Model::forward with a private KV cache.
#include "kiln/engine/generator.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <numeric>

namespace kiln {
namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// A batch of one sequence: tokens [begin, begin + ids.size()) of a sequence whose blocks are
// 0, 1, 2, ... in order.
ForwardBatch one_sequence_batch(const std::vector<int32_t>& ids, int64_t begin, int64_t max_blocks, bool all_logits) {
  ForwardBatch b;
  const int64_t n = static_cast<int64_t>(ids.size());
  b.token_ids = ids;
  for (int64_t i = 0; i < n; ++i) {
    b.positions.push_back(static_cast<int32_t>(begin + i));
    b.slot_mapping.push_back(static_cast<int32_t>(begin + i));  // block j holds slots [j*bs, (j+1)*bs)
  }
  b.cu_seqlens_q = {0, static_cast<int32_t>(n)};
  b.kv_lens = {static_cast<int32_t>(begin + n)};
  b.max_blocks_per_seq = static_cast<int32_t>(max_blocks);
  b.block_tables.resize(static_cast<size_t>(max_blocks));
  std::iota(b.block_tables.begin(), b.block_tables.end(), 0);
  if (all_logits) {
    for (int64_t i = 0; i < n; ++i) b.logits_rows.push_back(static_cast<int32_t>(i));
  } else {
    b.logits_rows = {static_cast<int32_t>(n - 1)};
  }
  return b;
}

Status check_length(const Model& model, int64_t total) {
  const int64_t max_len = model.config().max_position_embeddings;
  if (total > max_len)
    return out_of_range("sequence of " + std::to_string(total) + " tokens exceeds the model's context of " +
                        std::to_string(max_len));
  return ok_status();
}

}  // namespace

Result<GenerateResult> generate(Model& model, const std::vector<int32_t>& prompt, const GenerateOptions& o,
                                const std::function<void(int32_t)>& on_token) {
  if (prompt.empty()) return invalid_argument("empty prompt");
  const int64_t total = static_cast<int64_t>(prompt.size()) + o.max_new_tokens;
  KILN_RETURN_IF_ERROR(check_length(model, total));
  const int64_t max_blocks = (total + o.block_size - 1) / o.block_size;
  KILN_ASSIGN_OR_RETURN(KvCacheView cache, model.allocate_kv_cache(max_blocks, o.block_size));
  const int64_t vocab = model.config().vocab_size;
  HostTensor logits = HostTensor::zeros(DType::kF32, {1, vocab});
  GenerateResult r;
  r.prompt_tokens = static_cast<int64_t>(prompt.size());
  double t0 = now_seconds();
  for (int64_t begin = 0; begin < r.prompt_tokens; begin += o.prefill_chunk) {
    const int64_t end = std::min(r.prompt_tokens, begin + o.prefill_chunk);
    std::vector<int32_t> chunk(prompt.begin() + begin, prompt.begin() + end);
    KILN_RETURN_IF_ERROR(model.forward(one_sequence_batch(chunk, begin, max_blocks, false), cache, logits.tensor));
  }
  r.prefill_seconds = now_seconds() - t0;
  t0 = now_seconds();
  HostTensor next = HostTensor::zeros(DType::kInt32, {1});
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    if (step > 0) {
      const std::vector<int32_t> one = {r.tokens.back()};
      KILN_RETURN_IF_ERROR(model.forward(one_sequence_batch(one, r.prompt_tokens + step - 1, max_blocks, false),
                                         cache, logits.tensor));
    }
    KILN_RETURN_IF_ERROR(sample_cpu({logits.tensor, {o.sampling}, {static_cast<uint64_t>(step)}, next.tensor}));
    const int32_t id = next.tensor.ptr<int32_t>()[0];
    r.tokens.push_back(id);
    if (on_token) on_token(id);
    if (std::find(o.stop_ids.begin(), o.stop_ids.end(), id) != o.stop_ids.end()) break;
  }
  r.decode_seconds = now_seconds() - t0;
  return r;
}

Result<HostTensor> prompt_logits(Model& model, const std::vector<int32_t>& prompt, int64_t chunk) {
  const int64_t n = static_cast<int64_t>(prompt.size()), vocab = model.config().vocab_size, bs = 16;
  if (n == 0) return invalid_argument("empty prompt");
  KILN_RETURN_IF_ERROR(check_length(model, n));
  const int64_t max_blocks = (n + bs - 1) / bs;
  KILN_ASSIGN_OR_RETURN(KvCacheView cache, model.allocate_kv_cache(max_blocks, bs));
  HostTensor out = HostTensor::zeros(DType::kF32, {n, vocab});
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const int64_t end = std::min(n, begin + chunk);
    std::vector<int32_t> ids(prompt.begin() + begin, prompt.begin() + end);
    Tensor rows = out.tensor.slice0(begin, end);
    KILN_RETURN_IF_ERROR(model.forward(one_sequence_batch(ids, begin, max_blocks, true), cache, rows));
  }
  return out;
}

}  // namespace kiln
