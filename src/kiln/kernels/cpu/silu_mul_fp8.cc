// CPU reference of silu_mul_fp8 (kernels/silu_mul_fp8.h): f32 SwiGLU, rounded to bf16, then
// quantize_fp8_cpu per row.
#include "kiln/kernels/silu_mul_fp8.h"

#include <cmath>
#include <vector>

#include "kiln/kernels/quantize.h"

namespace kiln {

Status silu_mul_fp8_cpu(const SiluMulFp8Args& a) {
  if (a.gate_up.ndim != 2 || a.q.ndim != 2 || a.gate_up.shape[0] != a.q.shape[0] ||
      a.gate_up.shape[1] != 2 * a.q.shape[1] || a.q.dtype != DType::kFp8E4M3 || a.scale.dtype != DType::kF32 ||
      a.scale.numel() != a.q.shape[0] || (a.gate_up.dtype != DType::kF32 && a.gate_up.dtype != DType::kBF16) ||
      a.gate_up.strides[1] != 1)
    return invalid_argument("silu_mul_fp8_cpu: want gate_up [rows, 2 * inter] f32 | bf16, q [rows, inter] fp8 e4m3, "
                            "scale [rows] f32; got gate_up " + a.gate_up.shape_string() + ", q " + a.q.shape_string());
  const int64_t rows = a.q.shape[0], inter = a.q.shape[1];
  HostTensor v = HostTensor::zeros(DType::kF32, {rows, inter});
  std::vector<float> row(static_cast<size_t>(2 * inter));
  for (int64_t t = 0; t < rows; ++t) {
    const char* src = static_cast<const char*>(a.gate_up.data) + dtype_bytes(a.gate_up.dtype, t * a.gate_up.strides[0]);
    KILN_RETURN_IF_ERROR(convert(src, a.gate_up.dtype, row.data(), DType::kF32, 2 * inter));
    float* o = v.tensor.ptr<float>() + t * inter;
    for (int64_t i = 0; i < inter; ++i) {
      const float g = row[static_cast<size_t>(i)], u = row[static_cast<size_t>(inter + i)];
      o[i] = bf16_to_f32(f32_to_bf16(g / (1.0f + std::exp(-g)) * u));
    }
  }
  return quantize_fp8_cpu({v.tensor, a.q, a.scale});
}

}  // namespace kiln
