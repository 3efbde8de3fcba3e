// Generator: a single-sequence loop over Model::forward with a private KV cache.
#include "kiln/engine/generator.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <numeric>

#include "kiln/engine/request.h"

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

// Every id in [0, vocab): the embedding lookup reads row id.
Status check_prompt_ids(const Model& model, const std::vector<int32_t>& prompt) {
  if (prompt.empty()) return invalid_argument("empty prompt");
  const int64_t vocab = model.config().vocab_size;
  for (int32_t id : prompt)
    if (id < 0 || id >= vocab)
      return invalid_argument("prompt token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                              std::to_string(vocab) + ")");
  return ok_status();
}

}  // namespace

Result<GenerateResult> generate(Model& model, const std::vector<int32_t>& prompt, const GenerateOptions& o,
                                const std::function<void(int32_t)>& on_token) {
  KILN_RETURN_IF_ERROR(check_prompt_ids(model, prompt));
  GenerationParams params_check;
  params_check.sampling = o.sampling;
  params_check.max_tokens = std::max<int64_t>(1, o.max_new_tokens);
  KILN_RETURN_IF_ERROR(validate_generation_params(params_check, model.config().vocab_size));
  const int64_t total = static_cast<int64_t>(prompt.size()) + o.max_new_tokens;
  KILN_RETURN_IF_ERROR(check_length(model, total));
  const int64_t max_blocks = (total + o.block_size - 1) / o.block_size;
  KILN_ASSIGN_OR_RETURN(KvCacheView cache, model.allocate_kv_cache(max_blocks, o.block_size));
  const int64_t vocab = model.config().vocab_size;
  HostTensor logits = HostTensor::zeros(DType::kF32, {1, vocab});
  GenerateResult r;
  r.prompt_tokens = static_cast<int64_t>(prompt.size());
  // GPU models sample on the device (Model::forward_sample: the ids sample_cpu would pick from the
  // same logits, params and step): only the id comes back, not the [vocab] f32 logits row (513 KB
  // for Llama-3) to be sampled on the host. The first token is then drawn by the last prefill step.
  const bool on_device = model.samples_on_device();
  const std::vector<SamplingParams> params = {o.sampling};
  std::vector<int32_t> ids;
  auto emit = [&](int32_t id) {
    r.tokens.push_back(id);
    if (on_token) on_token(id);
    return std::find(o.stop_ids.begin(), o.stop_ids.end(), id) != o.stop_ids.end();  // stop
  };
  double t0 = now_seconds();
  for (int64_t begin = 0; begin < r.prompt_tokens; begin += o.prefill_chunk) {
    const int64_t end = std::min(r.prompt_tokens, begin + o.prefill_chunk);
    std::vector<int32_t> chunk(prompt.begin() + begin, prompt.begin() + end);
    const ForwardBatch b = one_sequence_batch(chunk, begin, max_blocks, false);
    if (on_device && o.max_new_tokens > 0) {  // (earlier chunks' ids are dropped: no logits copy there either)
      KILN_RETURN_IF_ERROR(model.forward_sample(b, cache, params, {0}, {}, &ids));
    } else {
      KILN_RETURN_IF_ERROR(model.forward(b, cache, logits.tensor));
    }
  }
  r.prefill_seconds = now_seconds() - t0;
  t0 = now_seconds();
  HostTensor next = HostTensor::zeros(DType::kInt32, {1});
  for (int64_t step = 0; step < o.max_new_tokens; ++step) {
    if (on_device) {
      if (step > 0) {
        const std::vector<int32_t> one = {r.tokens.back()};
        KILN_RETURN_IF_ERROR(model.forward_sample(one_sequence_batch(one, r.prompt_tokens + step - 1, max_blocks, false), cache,
                                                  params, {static_cast<uint64_t>(step)}, {}, &ids));
      }
      if (ids.size() != 1)
        return internal_error("generate: forward_sample gave " + std::to_string(ids.size()) + " ids for one row");
      if (emit(ids[0])) break;
      continue;
    }
    if (step > 0) {
      const std::vector<int32_t> one = {r.tokens.back()};
      KILN_RETURN_IF_ERROR(model.forward(one_sequence_batch(one, r.prompt_tokens + step - 1, max_blocks, false),
                                         cache, logits.tensor));
    }
    KILN_RETURN_IF_ERROR(sample_cpu({logits.tensor, {o.sampling}, {static_cast<uint64_t>(step)}, next.tensor, {}}));
    if (emit(next.tensor.ptr<int32_t>()[0])) break;
  }
  r.decode_seconds = now_seconds() - t0;
  return r;
}

Result<HostTensor> prompt_logits(Model& model, const std::vector<int32_t>& prompt, int64_t chunk) {
  const int64_t n = static_cast<int64_t>(prompt.size()), vocab = model.config().vocab_size, bs = 16;
  KILN_RETURN_IF_ERROR(check_prompt_ids(model, prompt));
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
