// CPU RMSNorm with the fused residual add (reference and fast path).
#include <cmath>
#include <vector>

#include "kiln/kernels/cpu/simd.h"
#include "kiln/kernels/rmsnorm.h"

namespace kiln {

Status rmsnorm_cpu(const RmsNormArgs& a) {
  const int64_t hidden = a.x.dim(-1), n = a.x.numel() / hidden;
  if (a.x.dtype != DType::kF32 || a.out.dtype != DType::kF32 || a.weight.numel() != hidden ||
      (!a.residual.empty() && a.residual.numel() != a.x.numel()))
    return invalid_argument("rmsnorm_cpu: want x/out/residual f32 [n, hidden] and weight [hidden]");
  std::vector<float> w(static_cast<size_t>(hidden));
  KILN_RETURN_IF_ERROR(convert(a.weight.data, a.weight.dtype, w.data(), DType::kF32, hidden));
  for (int64_t t = 0; t < n; ++t) {
    const float* x = a.x.ptr<float>() + t * hidden;
    float* out = a.out.ptr<float>() + t * hidden;
    const float* src = x;
    if (!a.residual.empty()) {
      float* r = a.residual.ptr<float>() + t * hidden;
      for (int64_t i = 0; i < hidden; ++i) r[i] += x[i];
      src = r;
    }
    const float ss = cpu::dot(src, src, hidden);
    const float inv = 1.0f / std::sqrt(ss / static_cast<float>(hidden) + a.eps);
    for (int64_t i = 0; i < hidden; ++i) out[i] = src[i] * inv * w[static_cast<size_t>(i)];
  }
  return ok_status();
}

}  // namespace kiln
