// CPU SiLU-and-multiply (reference and fast path).
#include <cmath>

#include "kiln/kernels/activation.h"

namespace kiln {

Status silu_mul_cpu(const SiluMulArgs& a) {
  const int64_t inter = a.out.dim(-1), n = a.out.numel() / inter;
  if (a.gate_up.dtype != DType::kF32 || a.out.dtype != DType::kF32 || a.gate_up.numel() != 2 * n * inter)
    return invalid_argument("silu_mul_cpu: want gate_up f32 [n, 2*inter], out f32 [n, inter]");
  for (int64_t t = 0; t < n; ++t) {
    const float* g = a.gate_up.ptr<float>() + t * 2 * inter;
    const float* u = g + inter;
    float* o = a.out.ptr<float>() + t * inter;
    for (int64_t i = 0; i < inter; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
  }
  return ok_status();
}

}  // namespace kiln
