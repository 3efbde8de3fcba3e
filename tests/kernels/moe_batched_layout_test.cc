// moe_batched_layout (CPU): every permuted row in exactly one entry of one expert, entries no
// larger than rows_per_entry; the pick (the largest entry size within the padding bound, else the
// smallest) on even and uneven routings; the limits (no rows, too many entries).
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "kiln/kernels/moe_cuda.h"

namespace kiln {
namespace {

std::vector<int32_t> offsets_of(const std::vector<int32_t>& counts) {
  std::vector<int32_t> off = {0};
  for (int32_t c : counts) off.push_back(off.back() + (c + 3) / 4 * 4);
  return off;
}

// The layout covers each row of each expert once, in order, within rows_per_entry.
void expect_covers(const MoeBatchedLayout& l, const std::vector<int32_t>& off) {
  ASSERT_GT(l.entries(), 0);
  std::vector<int> seen(static_cast<size_t>(off.back()), 0);
  for (int64_t i = 0; i < l.entries(); ++i) {
    const size_t iu = static_cast<size_t>(i);
    const int32_t e = l.expert[iu];
    EXPECT_GE(l.begin[iu], off[static_cast<size_t>(e)]);
    EXPECT_LE(l.end[iu], off[static_cast<size_t>(e) + 1]);
    EXPECT_GT(l.end[iu], l.begin[iu]);
    EXPECT_LE(l.end[iu] - l.begin[iu], l.rows_per_entry);
    for (int32_t r = l.begin[iu]; r < l.end[iu]; ++r) ++seen[static_cast<size_t>(r)];
  }
  for (size_t r = 0; r < seen.size(); ++r) EXPECT_EQ(seen[r], 1) << "row " << r;
}

TEST(MoeBatchedLayout, EvenRoutingOneEntryPerExpert) {
  const std::vector<int32_t> off = offsets_of({264, 264, 260, 268, 244, 256, 244, 260});
  const MoeBatchedLayout l = moe_batched_layout(off, 135);
  expect_covers(l, off);
  EXPECT_EQ(l.rows_per_entry, 288);  // the largest expert, 268, rounded up to 32
  EXPECT_EQ(l.entries(), 8);
  EXPECT_LE(l.padded_rows() * 100, off.back() * 135);
}

TEST(MoeBatchedLayout, UnevenRoutingChunksTheLargeExperts) {
  const std::vector<int32_t> off = offsets_of({840, 100, 300, 200, 180, 150, 140, 138});
  const MoeBatchedLayout l = moe_batched_layout(off, 135);
  expect_covers(l, off);
  EXPECT_LE(l.padded_rows() * 100, off.back() * 135);
  EXPECT_LT(l.rows_per_entry, 840);
  // no larger entry size of the table within the bound
  for (int64_t c : kMoeBatchedEntryRows) {
    if (c <= l.rows_per_entry) continue;
    int64_t padded = 0;
    for (size_t e = 0; e + 1 < off.size(); ++e) padded += (off[e + 1] - off[e] + c - 1) / c * c;
    EXPECT_GT(padded * 100, off.back() * 135) << c;
  }
}

TEST(MoeBatchedLayout, RandomRoutingsCoverEveryRow) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 100; ++trial) {
    std::vector<int32_t> counts(static_cast<size_t>(2 + rng() % 30));
    for (int32_t& c : counts) c = static_cast<int32_t>(rng() % 700);
    counts[0] = 1 + counts[0];
    const std::vector<int32_t> off = offsets_of(counts);
    const MoeBatchedLayout l = moe_batched_layout(off, 100 + static_cast<int64_t>(rng() % 100));
    if (l.entries() == 0) {
      EXPECT_GT(off.back() / 128, kMoeBatchedMaxEntries - static_cast<int64_t>(counts.size()));  // too many entries
      continue;
    }
    expect_covers(l, off);
    EXPECT_LE(l.entries(), kMoeBatchedMaxEntries);
  }
}

TEST(MoeBatchedLayout, Limits) {
  EXPECT_EQ(moe_batched_layout(std::vector<int32_t>{0}, 135).entries(), 0);
  EXPECT_EQ(moe_batched_layout(std::vector<int32_t>{0, 0, 0}, 135).entries(), 0);
  std::vector<int32_t> many = {0};
  for (int e = 0; e < 300; ++e) many.push_back(many.back() + 4);  // 300 experts of 4 rows: 300 entries
  EXPECT_EQ(moe_batched_layout(many, 135).entries(), 0);
  const std::vector<int32_t> small = offsets_of({3, 0, 9});
  const MoeBatchedLayout l = moe_batched_layout(small, 135);
  EXPECT_EQ(l.rows_per_entry, 32);  // never past the largest expert rounded up to 32
  expect_covers(l, small);
}

}  // namespace
}  // namespace kiln
