// Scheduler: continuous batching. Each step gets a budget of tokens. Running sequences come
// first, decodes (one token each) before unfinished prefills; whatever budget is left admits
// waiting sequences in arrival order, a long prompt taking only a chunk of it (chunked prefill).
// When the KV pool runs out, the most recently admitted running sequence is preempted: its blocks
// are freed and it goes back to the head of the queue, to be recomputed later (the prefix cache
// usually gives most of it back).
#pragma once
#include <cstdint>
#include <deque>
#include <vector>

#include "kiln/engine/block_manager.h"
#include "kiln/engine/sequence.h"

namespace kiln {

struct SchedulerConfig {
  int64_t max_num_seqs = 64;             // running sequences at most
  int64_t max_num_batched_tokens = 512;  // tokens per step at most
};

struct ScheduledSequence {
  Sequence* seq;
  int64_t num_tokens;  // tokens [seq->num_computed_tokens, + num_tokens) run this step
};

struct SchedulerOutput {
  std::vector<ScheduledSequence> seqs;
  int64_t num_tokens = 0;
  int64_t num_preempted = 0;
  bool empty() const { return seqs.empty(); }
};

class Scheduler {
 public:
  Scheduler(SchedulerConfig config, BlockManager& block_manager);

  void add(Sequence* seq);  // queues a new sequence
  SchedulerOutput schedule();
  // Takes a sequence out (finished or aborted) and frees its blocks.
  void remove(Sequence* seq);

  int64_t num_running() const { return static_cast<int64_t>(running_.size()); }
  int64_t num_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  bool has_unfinished() const { return !running_.empty() || !waiting_.empty(); }

 private:
  // Frees blocks for seq's next num_tokens by preempting from the back of running_; false when
  // seq itself had to go.
  bool make_room(Sequence* seq, int64_t num_tokens, SchedulerOutput& out);
  void preempt(Sequence* seq);
  void admit_waiting(int64_t budget, SchedulerOutput& out);

  SchedulerConfig config_;
  BlockManager& blocks_;
  std::deque<Sequence*> waiting_;
  std::vector<Sequence*> running_;  // admission order
};

}  // namespace kiln
