// Helpers for kernel tests: seeded random tensors and max-error comparison.
#pragma once
#include <cmath>
#include <random>
#include <vector>

#include "kiln/core/tensor.h"

namespace kiln::test {

inline HostTensor random_tensor(DType dtype, std::initializer_list<int64_t> shape, std::mt19937& rng, float scale = 1.0f) {
  HostTensor h = HostTensor::zeros(dtype, shape);
  std::normal_distribution<float> dist(0.f, scale);
  std::vector<float> v(static_cast<size_t>(h.tensor.numel()));
  for (auto& x : v) x = dist(rng);
  (void)convert(v.data(), DType::kF32, h.tensor.data, dtype, h.tensor.numel());
  return h;
}

inline std::vector<float> to_f32(const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  (void)convert(t.data, t.dtype, v.data(), DType::kF32, t.numel());
  return v;
}

inline double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = a.size() == b.size() ? 0.0 : INFINITY;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  return m;
}

}  // namespace kiln::test
