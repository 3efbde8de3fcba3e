// Scheduler: token budget and chunked prefill, decode priority, max_num_seqs, and preemption
// (newest first, back to the head of the queue, blocks freed) when the pool runs out.
#include "kiln/engine/scheduler.h"

#include <gtest/gtest.h>

namespace kiln {
namespace {

std::unique_ptr<Sequence> make_seq(int64_t id, int n) {
  Request r;
  r.prompt.assign(static_cast<size_t>(n), static_cast<int32_t>(10 + id));
  return std::make_unique<Sequence>(id, std::move(r), nullptr, nullptr, std::vector<int32_t>{}, 1 << 20, 0.0);
}

// What the engine does after running a step: mark tokens computed, sample where the end was reached.
void complete(const SchedulerOutput& out) {
  for (const ScheduledSequence& s : out.seqs) {
    s.seq->num_computed_tokens += s.num_tokens;
    if (s.seq->num_computed_tokens == s.seq->num_tokens()) s.seq->tokens.push_back(1);
  }
}

int64_t tokens_of(const SchedulerOutput& out, const Sequence* seq) {
  for (const ScheduledSequence& s : out.seqs)
    if (s.seq == seq) return s.num_tokens;
  return 0;
}

TEST(Scheduler, ChunkedPrefillUnderTheBudget) {
  BlockManager bm(64, 4, false);
  Scheduler sched({8, 10}, bm);
  auto a = make_seq(1, 25), b = make_seq(2, 3);
  sched.add(a.get());
  sched.add(b.get());
  SchedulerOutput o = sched.schedule();
  EXPECT_EQ(o.num_tokens, 10);
  EXPECT_EQ(tokens_of(o, a.get()), 10);  // a takes the whole budget, b waits
  EXPECT_EQ(sched.num_waiting(), 1);
  complete(o);
  o = sched.schedule();
  EXPECT_EQ(tokens_of(o, a.get()), 10);
  complete(o);
  o = sched.schedule();
  EXPECT_EQ(tokens_of(o, a.get()), 5);  // the rest of a, then b fits beside it
  EXPECT_EQ(tokens_of(o, b.get()), 3);
  complete(o);
  o = sched.schedule();  // both decode
  EXPECT_EQ(tokens_of(o, a.get()), 1);
  EXPECT_EQ(tokens_of(o, b.get()), 1);
}

TEST(Scheduler, DecodesGoBeforePrefills) {
  BlockManager bm(64, 4, false);
  Scheduler sched({8, 4}, bm);
  auto a = make_seq(1, 2), b = make_seq(2, 20);
  sched.add(a.get());
  complete(sched.schedule());  // a prefilled
  sched.add(b.get());
  SchedulerOutput o = sched.schedule();  // a decodes (1), b gets 3
  EXPECT_EQ(tokens_of(o, a.get()), 1);
  EXPECT_EQ(tokens_of(o, b.get()), 3);
  complete(o);
  o = sched.schedule();
  ASSERT_EQ(o.seqs.size(), 2u);
  EXPECT_EQ(o.seqs[0].seq, a.get());  // the decode is first although b is running too
}

TEST(Scheduler, RespectsMaxNumSeqs) {
  BlockManager bm(64, 4, false);
  Scheduler sched({2, 100}, bm);
  std::vector<std::unique_ptr<Sequence>> seqs;
  for (int i = 0; i < 3; ++i) {
    seqs.push_back(make_seq(i, 3));
    sched.add(seqs.back().get());
  }
  SchedulerOutput o = sched.schedule();
  EXPECT_EQ(o.seqs.size(), 2u);
  EXPECT_EQ(sched.num_waiting(), 1);
  sched.remove(seqs[0].get());
  complete(o);
  o = sched.schedule();
  EXPECT_EQ(o.seqs.size(), 2u);
  EXPECT_EQ(tokens_of(o, seqs[2].get()), 3);
}

TEST(Scheduler, PreemptsTheNewestWhenBlocksRunOut) {
  BlockManager bm(4, 4, false);  // 16 token slots
  Scheduler sched({8, 100}, bm);
  auto a = make_seq(1, 7), b = make_seq(2, 7);
  sched.add(a.get());
  sched.add(b.get());
  SchedulerOutput o = sched.schedule();  // 2 + 2 blocks: the pool is full
  EXPECT_EQ(o.seqs.size(), 2u);
  EXPECT_EQ(bm.num_free_blocks(), 0);
  complete(o);
  o = sched.schedule();  // tokens 8: fits in the second block of each
  EXPECT_EQ(o.seqs.size(), 2u);
  complete(o);
  o = sched.schedule();  // token 9 needs a third block: b (newest) is preempted
  EXPECT_EQ(o.num_preempted, 1);
  ASSERT_EQ(o.seqs.size(), 1u);
  EXPECT_EQ(o.seqs[0].seq, a.get());
  EXPECT_EQ(b->status, SequenceStatus::kWaiting);
  EXPECT_EQ(b->num_computed_tokens, 0);
  EXPECT_TRUE(b->block_table.empty());
  EXPECT_EQ(sched.num_waiting(), 1);
  EXPECT_EQ(b->num_tokens(), 9);  // its generated tokens are kept, to be recomputed
  sched.remove(a.get());
  o = sched.schedule();  // b comes back and recomputes all 9 tokens
  EXPECT_EQ(tokens_of(o, b.get()), 9);
}

TEST(Scheduler, UnfinishedPrefillsArePreemptedBeforeDecodes) {
  BlockManager bm(2, 4, false);
  Scheduler sched({8, 100}, bm);
  auto a = make_seq(1, 3), b = make_seq(2, 3);
  sched.add(a.get());
  sched.add(b.get());
  complete(sched.schedule());  // one block each
  a->tokens.resize(6, 1);      // a (older) now has 3 tokens to prefill and needs a second block
  SchedulerOutput o = sched.schedule();
  EXPECT_EQ(o.num_preempted, 1);  // b decodes first; a, at the back, preempts itself
  EXPECT_EQ(tokens_of(o, b.get()), 1);
  EXPECT_EQ(tokens_of(o, a.get()), 0);
  EXPECT_EQ(a->status, SequenceStatus::kWaiting);
}

}  // namespace
}  // namespace kiln
