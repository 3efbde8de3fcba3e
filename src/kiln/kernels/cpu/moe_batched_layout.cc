// moe_batched_layout (kernels/moe_cuda.h): the entries of MoeBatchedGemm's batched GEMM, planned on
// the host from the expert offsets. CPU code, no CUDA.
#include <algorithm>
#include <iterator>
#include <vector>

#include "kiln/kernels/moe_cuda.h"

namespace kiln {
namespace {

// Chunks of at most c rows per expert: entries and padded rows.
struct Fit {
  int64_t entries = 0, padded = 0;
};
Fit fit(std::span<const int32_t> offsets, int64_t c) {
  Fit f;
  for (size_t e = 0; e + 1 < offsets.size(); ++e) {
    const int64_t chunks = (offsets[e + 1] - offsets[e] + c - 1) / c;
    f.entries += chunks;
    f.padded += chunks * c;
  }
  return f;
}

}  // namespace

MoeBatchedLayout moe_batched_layout(std::span<const int32_t> offsets, int64_t max_pad_percent) {
  MoeBatchedLayout layout;
  if (offsets.size() < 2) return layout;
  int64_t most = 0;
  for (size_t e = 0; e + 1 < offsets.size(); ++e) most = std::max<int64_t>(most, offsets[e + 1] - offsets[e]);
  const int64_t rows = offsets.back() - offsets.front();
  if (rows <= 0 || most <= 0) return layout;
  const int64_t cap = (most + 31) / 32 * 32;  // no entry larger than the largest expert needs
  int64_t pick = 0;
  std::vector<int64_t> sizes(std::begin(kMoeBatchedEntryRows), std::end(kMoeBatchedEntryRows));
  sizes.push_back(cap);  // one entry per expert (the last: preferred when it fits)
  for (int64_t c : sizes) {
    c = std::min(c, cap);
    const Fit f = fit(offsets, c);
    if (f.entries > kMoeBatchedMaxEntries) continue;
    if (pick == 0 || f.padded * 100 <= rows * max_pad_percent) pick = c;  // the smallest, or the largest that fits
  }
  if (pick == 0) return layout;
  layout.rows_per_entry = pick;
  for (size_t e = 0; e + 1 < offsets.size(); ++e)
    for (int32_t b = offsets[e]; b < offsets[e + 1]; b += static_cast<int32_t>(pick)) {
      layout.expert.push_back(static_cast<int32_t>(e));
      layout.begin.push_back(b);
      layout.end.push_back(static_cast<int32_t>(std::min<int64_t>(offsets[e + 1], b + pick)));
    }
  return layout;
}

}  // namespace kiln
