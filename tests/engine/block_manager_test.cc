// BlockManager: allocation by token count, reference counts, prefix hits (full blocks only, never
// the last token), eviction of cached blocks in LRU order, and freeing.
#include "kiln/engine/block_manager.h"

#include <gtest/gtest.h>

#include <numeric>

namespace kiln {
namespace {

std::unique_ptr<Sequence> make_seq(int64_t id, std::vector<int32_t> prompt) {
  Request r;
  r.prompt = std::move(prompt);
  return std::make_unique<Sequence>(id, std::move(r), nullptr, nullptr, std::vector<int32_t>{}, 1 << 20, 0.0);
}

std::vector<int32_t> iota_ids(int n, int start = 100) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), start);
  return v;
}

TEST(BlockManager, AllocatesByTokensAndFrees) {
  BlockManager bm(8, 4, true);
  auto s = make_seq(1, iota_ids(10));
  EXPECT_TRUE(bm.can_allocate(*s, 10));
  bm.allocate(*s, 10);
  EXPECT_EQ(s->block_table.size(), 3u);
  EXPECT_EQ(bm.num_free_blocks(), 5);
  s->num_computed_tokens = 10;
  EXPECT_TRUE(bm.can_allocate(*s, 2));  // fits in the third block
  bm.allocate(*s, 2);
  EXPECT_EQ(bm.num_free_blocks(), 5);
  EXPECT_FALSE(bm.can_allocate(*s, 2 + 5 * 4 + 1));
  bm.free(*s);
  EXPECT_EQ(bm.num_free_blocks(), 8);
  EXPECT_TRUE(s->block_table.empty());
  EXPECT_EQ(s->num_computed_tokens, 0);
}

TEST(BlockManager, PrefixHitsShareFullBlocks) {
  BlockManager bm(16, 4, true);
  auto a = make_seq(1, iota_ids(10));
  bm.allocate_cached_prefix(*a);
  EXPECT_EQ(a->num_computed_tokens, 0);
  bm.allocate(*a, 10);
  a->num_computed_tokens = 10;
  bm.cache_full_blocks(*a);  // blocks 0 and 1 are full
  EXPECT_EQ(a->block_hashes.size(), 2u);

  std::vector<int32_t> p = iota_ids(8);
  p.push_back(7);  // same first two blocks, then a different token
  auto b = make_seq(2, p);
  bm.allocate_cached_prefix(*b);
  EXPECT_EQ(b->num_computed_tokens, 8);
  ASSERT_EQ(b->block_table.size(), 2u);
  EXPECT_EQ(b->block_table[0], a->block_table[0]);
  EXPECT_EQ(b->block_table[1], a->block_table[1]);
  EXPECT_EQ(bm.ref_count(a->block_table[0]), 2);

  // A prompt of exactly two blocks reuses only one: the last token must be computed.
  auto c = make_seq(3, iota_ids(8));
  bm.allocate_cached_prefix(*c);
  EXPECT_EQ(c->num_computed_tokens, 4);

  // A different first block shares nothing (hashes chain over the prefix).
  std::vector<int32_t> q = iota_ids(10);
  q[0] = 1;
  auto d = make_seq(4, q);
  bm.allocate_cached_prefix(*d);
  EXPECT_EQ(d->num_computed_tokens, 0);

  bm.free(*b);
  bm.free(*c);
  EXPECT_EQ(bm.ref_count(a->block_table[0]), 1);
  bm.free(*a);
  EXPECT_EQ(bm.num_free_blocks(), 16);
}

TEST(BlockManager, FreedBlocksStayCachedUntilReused) {
  BlockManager bm(4, 4, true);
  auto a = make_seq(1, iota_ids(9));
  bm.allocate(*a, 9);
  a->num_computed_tokens = 9;
  bm.cache_full_blocks(*a);
  bm.free(*a);
  EXPECT_EQ(bm.num_free_blocks(), 4);
  auto b = make_seq(2, iota_ids(9));
  bm.allocate_cached_prefix(*b);  // taken back from the free list
  EXPECT_EQ(b->num_computed_tokens, 8);
  EXPECT_EQ(bm.num_free_blocks(), 2);
  bm.free(*b);
  // Fill the whole pool with other tokens: the cached blocks are evicted.
  auto c = make_seq(3, iota_ids(16, 500));
  bm.allocate(*c, 16);
  bm.free(*c);
  auto d = make_seq(4, iota_ids(9));
  bm.allocate_cached_prefix(*d);
  EXPECT_EQ(d->num_computed_tokens, 0);
}

TEST(BlockManager, WithoutPrefixCachingNothingIsShared) {
  BlockManager bm(8, 4, false);
  auto a = make_seq(1, iota_ids(9));
  bm.allocate(*a, 9);
  a->num_computed_tokens = 9;
  bm.cache_full_blocks(*a);
  auto b = make_seq(2, iota_ids(9));
  bm.allocate_cached_prefix(*b);
  EXPECT_EQ(b->num_computed_tokens, 0);
}

}  // namespace
}  // namespace kiln
