// ModelRunner: batch assembly and the forward call.
#include "kiln/engine/model_runner.h"

#include <algorithm>

#include "kiln/engine/sampler.h"

namespace kiln {

ModelRunner::ModelRunner(Model& model, KvCacheView cache, int64_t block_size)
    : model_(model), cache_(std::move(cache)), block_size_(block_size) {}

ForwardBatch ModelRunner::build_batch(const SchedulerOutput& step, StepLogits& rows) const {
  const int64_t bs = block_size_;
  ForwardBatch b;
  b.cu_seqlens_q.push_back(0);
  for (const ScheduledSequence& s : step.seqs)
    b.max_blocks_per_seq = std::max(b.max_blocks_per_seq, static_cast<int32_t>(s.seq->block_table.size()));
  for (const ScheduledSequence& s : step.seqs) {
    const Sequence& seq = *s.seq;
    const int64_t begin = seq.num_computed_tokens, end = begin + s.num_tokens;
    const int32_t row0 = static_cast<int32_t>(b.token_ids.size());
    for (int64_t p = begin; p < end; ++p) {
      b.token_ids.push_back(seq.tokens[static_cast<size_t>(p)]);
      b.positions.push_back(static_cast<int32_t>(p));
      b.slot_mapping.push_back(static_cast<int32_t>(seq.block_table[static_cast<size_t>(p / bs)] * bs + p % bs));
    }
    b.cu_seqlens_q.push_back(static_cast<int32_t>(b.token_ids.size()));
    b.kv_lens.push_back(static_cast<int32_t>(end));
    b.block_tables.insert(b.block_tables.end(), seq.block_table.begin(), seq.block_table.end());
    b.block_tables.resize(b.block_tables.size() + static_cast<size_t>(b.max_blocks_per_seq) - seq.block_table.size(), 0);
    // Rows wanted: the whole chunk for prompt logprobs (position p predicts token p + 1), else the last.
    const bool samples = end == seq.num_tokens();
    const bool prompt_rows = seq.needs_prompt_logprobs() && begin < seq.num_prompt_tokens - 1;
    const int32_t first = static_cast<int32_t>(b.logits_rows.size());
    if (prompt_rows) {
      for (int32_t r = row0; r < row0 + static_cast<int32_t>(s.num_tokens); ++r) b.logits_rows.push_back(r);
    } else if (samples) {
      b.logits_rows.push_back(static_cast<int32_t>(b.token_ids.size()) - 1);
    }
    rows.first_row.push_back(prompt_rows ? first : -1);
    rows.sample_row.push_back(samples ? static_cast<int32_t>(b.logits_rows.size()) - 1 : -1);
  }
  return b;
}

Result<StepLogits> ModelRunner::run(const SchedulerOutput& step, const std::vector<int32_t>& eos_ids) {
  StepLogits out;
  const ForwardBatch batch = build_batch(step, out);
  if (model_.samples_on_device()) {
    bool device = true;
    std::vector<SamplingParams> params;
    std::vector<uint64_t> steps;
    std::vector<std::pair<int32_t, int32_t>> banned;
    for (size_t i = 0; i < step.seqs.size() && device; ++i) {
      const Sequence& seq = *step.seqs[i].seq;
      device = out.first_row[i] < 0 && !needs_host_logits(seq);
      if (out.sample_row[i] < 0) continue;
      const auto row = static_cast<int32_t>(params.size());
      params.push_back(seq.params.sampling);
      steps.push_back(static_cast<uint64_t>(seq.num_generated()));
      if (seq.num_generated() < seq.params.min_tokens) {  // what apply_penalties masks on the host
        for (int32_t id : eos_ids) banned.emplace_back(row, id);
        for (int32_t id : seq.params.stop_token_ids) banned.emplace_back(row, id);
      }
    }
    if (device) {
      out.sampled = true;
      KILN_RETURN_IF_ERROR(model_.forward_sample(batch, cache_, params, steps, banned, &out.ids));
      return out;
    }
  }
  const int64_t rows = static_cast<int64_t>(batch.logits_rows.size()), vocab = model_.config().vocab_size;
  logits_.resize(static_cast<size_t>(std::max<int64_t>(rows, 1) * vocab));
  out.logits = Tensor::view(logits_.data(), DType::kF32, {rows, vocab});
  KILN_RETURN_IF_ERROR(model_.forward(batch, cache_, out.logits));
  return out;
}

}  // namespace kiln
