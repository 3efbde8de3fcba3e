// Which lane (stream) runs each expert's GEMM in the grouped MoE path (moe_cuda.h).
#include <algorithm>
#include <numeric>
#include <vector>

#include "kiln/kernels/moe_cuda.h"

namespace kiln {

std::vector<int> moe_expert_lanes(std::span<const int32_t> offsets, int lanes) {
  const size_t experts = offsets.empty() ? 0 : offsets.size() - 1;
  std::vector<int> lane(experts, -1);
  if (lanes < 1) lanes = 1;
  std::vector<size_t> order(experts);
  std::iota(order.begin(), order.end(), size_t{0});
  auto rows = [&](size_t e) { return static_cast<int64_t>(offsets[e + 1]) - offsets[e]; };
  // Largest first; equal sizes in expert order (stable).
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return rows(a) > rows(b); });
  std::vector<int64_t> load(static_cast<size_t>(lanes), 0);
  for (size_t e : order) {
    if (rows(e) <= 0) continue;
    const auto least = std::min_element(load.begin(), load.end());  // the first of equal loads
    lane[e] = static_cast<int>(least - load.begin());
    *least += rows(e);
  }
  return lane;
}

}  // namespace kiln
