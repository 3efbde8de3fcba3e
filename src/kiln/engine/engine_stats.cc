// Histogram: linear scan over a dozen bounds.
#include "kiln/engine/engine_stats.h"

namespace kiln {

void Histogram::observe(double value) {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += value;
  ++count_;
}

}  // namespace kiln
