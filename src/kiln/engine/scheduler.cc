// Scheduler: one pass over the running sequences, then admission from the waiting queue.
#include "kiln/engine/scheduler.h"

#include <algorithm>

namespace kiln {

Scheduler::Scheduler(SchedulerConfig config, BlockManager& block_manager) : config_(config), blocks_(block_manager) {}

void Scheduler::add(Sequence* seq) {
  seq->status = SequenceStatus::kWaiting;
  waiting_.push_back(seq);
}

SchedulerOutput Scheduler::schedule() {
  SchedulerOutput out;
  int64_t budget = config_.max_num_batched_tokens;
  // Decodes first; preemption takes from the back, so unfinished prefills go before decodes.
  std::stable_partition(running_.begin(), running_.end(), [](const Sequence* s) { return s->is_decode(); });
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Sequence* seq = running_[i];
    const int64_t n = std::min(seq->num_uncomputed(), budget);
    if (!make_room(seq, n, out)) break;  // seq was the last one left to preempt
    blocks_.allocate(*seq, n);
    out.seqs.push_back({seq, n});
    budget -= n;
    ++i;
  }
  // A step that had to preempt admits nobody: the pool is short.
  if (out.num_preempted == 0) admit_waiting(budget, out);
  for (const ScheduledSequence& s : out.seqs) out.num_tokens += s.num_tokens;
  return out;
}

bool Scheduler::make_room(Sequence* seq, int64_t n, SchedulerOutput& out) {
  while (!blocks_.can_allocate(*seq, n)) {
    Sequence* victim = running_.back();  // not scheduled yet this step (or seq itself)
    running_.pop_back();
    preempt(victim);
    ++out.num_preempted;
    if (victim == seq) return false;
  }
  return true;
}

void Scheduler::preempt(Sequence* seq) {
  blocks_.free(*seq);
  seq->status = SequenceStatus::kWaiting;
  waiting_.push_front(seq);
}

void Scheduler::admit_waiting(int64_t budget, SchedulerOutput& out) {
  while (!waiting_.empty() && budget > 0 && num_running() < config_.max_num_seqs) {
    Sequence* seq = waiting_.front();
    blocks_.allocate_cached_prefix(*seq);
    const int64_t n = std::min(seq->num_uncomputed(), budget);
    if (!blocks_.can_allocate(*seq, n)) {
      blocks_.free(*seq);  // give the prefix back; try again next step
      break;
    }
    if (!seq->admitted_before) seq->num_cached_tokens = seq->num_computed_tokens;
    seq->admitted_before = true;
    blocks_.allocate(*seq, n);
    waiting_.pop_front();
    seq->status = SequenceStatus::kRunning;
    running_.push_back(seq);
    out.seqs.push_back({seq, n});
    budget -= n;
  }
}

void Scheduler::remove(Sequence* seq) {
  if (auto it = std::find(running_.begin(), running_.end(), seq); it != running_.end()) running_.erase(it);
  if (auto it = std::find(waiting_.begin(), waiting_.end(), seq); it != waiting_.end()) waiting_.erase(it);
  blocks_.free(*seq);
  seq->status = SequenceStatus::kFinished;
}

}  // namespace kiln
