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
  const SiluMulFp8Dequant& dq = a.dequant;
  if (dq.rows_per_group > 0) {
    if (dq.groups.dtype != DType::kInt32 || dq.groups.ndim != 2 || dq.groups.shape[1] != 3 || dq.row_scale.dtype != DType::kF32 ||
        dq.col_scale_ptrs.dtype != DType::kInt64 || rows != dq.groups.shape[0] * dq.rows_per_group)
      return invalid_argument("silu_mul_fp8_cpu: dequant wants groups [groups, 3] int32, row_scale f32, col_scale_ptrs "
                              "[experts] int64 and rows = groups x rows_per_group");
  }
  HostTensor v = HostTensor::zeros(DType::kF32, {rows, inter});
  std::vector<float> row(static_cast<size_t>(2 * inter));
  std::vector<int64_t> kept;  // dequant: the rows that are rows
  for (int64_t t = 0; t < rows; ++t) {
    const char* src = static_cast<const char*>(a.gate_up.data) + dtype_bytes(a.gate_up.dtype, t * a.gate_up.strides[0]);
    KILN_RETURN_IF_ERROR(convert(src, a.gate_up.dtype, row.data(), DType::kF32, 2 * inter));
    if (dq.rows_per_group > 0) {
      const int32_t* grp = dq.groups.ptr<int32_t>() + 3 * (t / dq.rows_per_group);  // expert, begin, end
      const int64_t r = t % dq.rows_per_group;
      if (r >= grp[2] - grp[1]) continue;
      kept.push_back(t);
      const float rs = dq.row_scale.ptr<float>()[grp[1] + r];
      const float* cs = reinterpret_cast<const float*>(dq.col_scale_ptrs.ptr<int64_t>()[grp[0]]);
      for (int64_t j = 0; j < 2 * inter; ++j)
        row[static_cast<size_t>(j)] = bf16_to_f32(f32_to_bf16(row[static_cast<size_t>(j)] * rs * cs[j]));
    }
    float* o = v.tensor.ptr<float>() + t * inter;
    for (int64_t i = 0; i < inter; ++i) {
      const float g = row[static_cast<size_t>(i)], u = row[static_cast<size_t>(inter + i)];
      o[i] = bf16_to_f32(f32_to_bf16(g / (1.0f + std::exp(-g)) * u));
    }
  }
  if (dq.rows_per_group == 0) return quantize_fp8_cpu({v.tensor, a.q, a.scale});
  for (int64_t t : kept)  // row by row, leaving the other rows of q and scale alone
    KILN_RETURN_IF_ERROR(quantize_fp8_cpu({v.tensor.slice0(t, t + 1), a.q.slice0(t, t + 1), a.scale.slice0(t, t + 1)}));
  return ok_status();
}

}  // namespace kiln
