// ModelRunner: turns a scheduled step into one Model::forward over the paged KV cache it owns (on
// the model's device; token ids, positions, slot mapping from each sequence's block table), and
// returns the logits
// rows the step produced: one per sequence whose uncomputed tokens all ran (it samples next),
// plus every row of a prompt chunk whose sequence asked for prompt logprobs.
#pragma once
#include <cstdint>
#include <vector>

#include "kiln/engine/scheduler.h"
#include "kiln/models/model.h"

namespace kiln {

struct StepLogits {
  Tensor logits;                      // [rows, vocab] f32 (owned by the runner until the next run)
  std::vector<int32_t> sample_row;    // per scheduled sequence: its row to sample from, or -1
  std::vector<int32_t> first_row;     // per scheduled sequence: row of its first token, or -1
  // Sampled on the device (Model::forward_sample): logits is empty and ids[sample_row[i]] is the
  // token drawn for sequence i.
  bool sampled = false;
  std::vector<int32_t> ids;
};

class ModelRunner {
 public:
  ModelRunner(Model& model, KvCacheView cache, int64_t block_size);
  const ModelConfig& config() const { return model_.config(); }
  // Samples on the device when the model can and no sequence of the step needs host logits.
  // eos_ids: banned (with each request's stop_token_ids) while a sequence is below its min_tokens.
  Result<StepLogits> run(const SchedulerOutput& step, const std::vector<int32_t>& eos_ids = {});

 private:
  ForwardBatch build_batch(const SchedulerOutput& step, StepLogits& rows) const;

  Model& model_;
  KvCacheView cache_;
  int64_t block_size_;
  std::vector<float> logits_;
};

}  // namespace kiln
