// Helpers for kernel tests: seeded random tensors and max-error comparison.
#pragma once
#include <algorithm>
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

// max |got - ref| / max |ref|; NaN or a size mismatch gives infinity (the bf16 GPU tests' measure).
inline double scaled_error(const std::vector<float>& got, const std::vector<float>& ref) {
  if (got.size() != ref.size()) return INFINITY;
  double err = 0, mag = 1e-30;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i]) || std::isnan(ref[i])) return INFINITY;
    err = std::max(err, std::fabs(static_cast<double>(got[i]) - ref[i]));
    mag = std::max(mag, std::fabs(static_cast<double>(ref[i])));
  }
  return err / mag;
}

}  // namespace kiln::test
