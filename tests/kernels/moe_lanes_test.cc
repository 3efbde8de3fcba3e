// moe_expert_lanes: which lane (stream) runs each expert's GEMM in the grouped MoE path.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "kiln/kernels/moe_cuda.h"

namespace kiln {
namespace {

TEST(MoeExpertLanes, LargestFirstToTheLeastLoadedLane) {
  // rows 256, 10, 300, 0, 50: 300 -> lane 0, 256 -> lane 1, 50 -> lane 1 (306), 10 -> lane 0 (310)
  const std::vector<int32_t> offsets = {0, 256, 266, 566, 566, 616};
  EXPECT_EQ(moe_expert_lanes(offsets, 2), (std::vector<int>{1, 0, 0, -1, 1}));
  EXPECT_EQ(moe_expert_lanes(offsets, 1), (std::vector<int>{0, 0, 0, -1, 0}));
  EXPECT_EQ(moe_expert_lanes(offsets, 0), (std::vector<int>{0, 0, 0, -1, 0}));  // at least one lane
  // more lanes than experts with rows: one expert each, the largest on lane 0
  EXPECT_EQ(moe_expert_lanes(offsets, 8), (std::vector<int>{1, 3, 0, -1, 2}));
  // equal sizes go in expert order
  EXPECT_EQ(moe_expert_lanes(std::vector<int32_t>{0, 4, 8, 12, 16}, 2), (std::vector<int>{0, 1, 0, 1}));
  EXPECT_TRUE(moe_expert_lanes(std::vector<int32_t>{}, 4).empty());
}

TEST(MoeExpertLanes, BalancedWithinOneExpert) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 200; ++trial) {
    const int experts = 1 + static_cast<int>(rng() % 64), lanes = 1 + static_cast<int>(rng() % 8);
    std::vector<int32_t> offsets = {0};
    int32_t largest = 0;
    for (int e = 0; e < experts; ++e) {
      const int32_t rows = rng() % 4 == 0 ? 0 : static_cast<int32_t>(rng() % 600);
      largest = std::max(largest, rows);
      offsets.push_back(offsets.back() + rows);
    }
    const std::vector<int> lane = moe_expert_lanes(offsets, lanes);
    ASSERT_EQ(lane.size(), static_cast<size_t>(experts));
    std::vector<int64_t> load(static_cast<size_t>(lanes), 0);
    for (int e = 0; e < experts; ++e) {
      const int32_t rows = offsets[e + 1] - offsets[e];
      if (rows == 0) {
        EXPECT_EQ(lane[e], -1);
        continue;
      }
      ASSERT_GE(lane[e], 0);
      ASSERT_LT(lane[e], lanes);
      load[static_cast<size_t>(lane[e])] += rows;
    }
    const auto [lo, hi] = std::minmax_element(load.begin(), load.end());
    // Every expert went to a least-loaded lane, so no lane ends more than one expert ahead of another
    // (unless fewer experts than lanes have rows, where the empty lanes stay at 0).
    if (*lo > 0) EXPECT_LE(*hi - *lo, largest) << "trial " << trial;
    EXPECT_EQ(lane, moe_expert_lanes(offsets, lanes));  // deterministic
  }
}

}  // namespace
}  // namespace kiln
