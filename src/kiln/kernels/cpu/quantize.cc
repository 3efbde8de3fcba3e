// CPU fp8 quantization of matrix rows (the reference; see quantize.h) and dequantization.
#include "kiln/kernels/quantize.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "kiln/core/thread_pool.h"

namespace kiln {
namespace {

constexpr float kFp8E4M3Max = 448.0f;

// Row r of a [n, k] f32/f16/bf16 tensor into f32.
void load_row(const Tensor& w, int64_t r, float* out) {
  const int64_t k = w.shape[1];
  const char* p = static_cast<const char*>(w.data) + dtype_bytes(w.dtype, r * w.strides[0]);
  (void)convert(p, w.dtype, out, DType::kF32, k);
}

float scale_for(float amax) { return amax > 0.0f ? amax / kFp8E4M3Max : 1.0f; }

}  // namespace

Status quantize_fp8_cpu(const Fp8QuantizeArgs& a) {
  const Tensor& w = a.src;
  if (w.ndim != 2 || w.device != Device::kCpu || (w.dtype != DType::kF32 && w.dtype != DType::kF16 && w.dtype != DType::kBF16))
    return invalid_argument("quantize_fp8_cpu: src must be a host [rows, k] f32/f16/bf16 matrix, got " + w.shape_string());
  const int64_t n = w.shape[0], k = w.shape[1];
  if (a.q.ndim != 2 || a.q.dtype != DType::kFp8E4M3 || a.q.device != Device::kCpu || a.q.shape[0] != n ||
      a.q.shape[1] != k || a.scale.dtype != DType::kF32 || a.scale.device != Device::kCpu ||
      (a.scale.numel() != 1 && a.scale.numel() != n) || !a.scale.is_contiguous())
    return invalid_argument("quantize_fp8_cpu: want q [rows, k] fp8 e4m3 and scale [rows] or [1] f32 on the host; got q " +
                            a.q.shape_string() + ", scale " + a.scale.shape_string());
  if (k > 0 && (w.strides[1] != 1 || a.q.strides[1] != 1))
    return invalid_argument("quantize_fp8_cpu: rows must be contiguous");
  const bool per_tensor = a.scale.numel() == 1 && n != 1;
  std::vector<float> amax(static_cast<size_t>(n), 0.0f);
  ThreadPool::global().parallel_for(n, 16, [&](int64_t r0, int64_t r1) {
    std::vector<float> row(static_cast<size_t>(k));
    for (int64_t r = r0; r < r1; ++r) {
      load_row(w, r, row.data());
      float m = 0.0f;
      for (float v : row) m = std::max(m, std::fabs(v));  // NaN is ignored (fmax-like)
      amax[static_cast<size_t>(r)] = m;
    }
  });
  float* scale = a.scale.ptr<float>();
  if (per_tensor) {
    scale[0] = scale_for(n ? *std::max_element(amax.begin(), amax.end()) : 0.0f);
  } else {
    for (int64_t r = 0; r < n; ++r) scale[r] = scale_for(amax[static_cast<size_t>(r)]);
  }
  ThreadPool::global().parallel_for(n, 16, [&](int64_t r0, int64_t r1) {
    std::vector<float> row(static_cast<size_t>(k));
    for (int64_t r = r0; r < r1; ++r) {
      load_row(w, r, row.data());
      const float s = scale[per_tensor ? 0 : r];
      uint8_t* q = a.q.ptr<uint8_t>() + r * a.q.strides[0];
      for (int64_t c = 0; c < k; ++c) q[c] = f32_to_fp8_e4m3(row[static_cast<size_t>(c)] / s);
    }
  });
  return ok_status();
}

Result<Fp8Weights> quantize_fp8_weights_cpu(const Tensor& w, bool per_tensor) {
  if (w.ndim != 2) return invalid_argument("quantize_fp8_weights_cpu: w must be a host [n, k] f32/f16/bf16 matrix");
  const int64_t n = w.shape[0], k = w.shape[1];
  Fp8Weights out;
  out.q = HostTensor::zeros(DType::kFp8E4M3, {n, k});
  out.scale = HostTensor::zeros(DType::kF32, {per_tensor ? 1 : n});
  KILN_RETURN_IF_ERROR(quantize_fp8_cpu({w, out.q.tensor, out.scale.tensor}));
  return out;
}

Status dequantize_fp8_weights_cpu(const Tensor& q, const Tensor& scale, const Tensor& out) {
  if (q.ndim != 2 || q.dtype != DType::kFp8E4M3 || out.ndim != 2 || out.shape[0] != q.shape[0] || out.shape[1] != q.shape[1] ||
      scale.dtype != DType::kF32 || (scale.numel() != 1 && scale.numel() != q.shape[0]))
    return invalid_argument("dequantize_fp8_weights_cpu: q [n, k] fp8 e4m3, scale [n] or [1] f32, out [n, k]");
  if (out.dtype != DType::kF32 && out.dtype != DType::kF16 && out.dtype != DType::kBF16)
    return invalid_argument("dequantize_fp8_weights_cpu: out must be f32, f16 or bf16");
  const int64_t n = q.shape[0], k = q.shape[1];
  const bool per_tensor = scale.numel() == 1;
  ThreadPool::global().parallel_for(n, 16, [&](int64_t r0, int64_t r1) {
    std::vector<float> row(static_cast<size_t>(k));
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* qr = q.ptr<uint8_t>() + r * q.strides[0];
      const float s = scale.ptr<float>()[per_tensor ? 0 : r];
      for (int64_t c = 0; c < k; ++c) row[static_cast<size_t>(c)] = fp8_e4m3_to_f32(qr[c]) * s;
      char* dst = static_cast<char*>(out.data) + dtype_bytes(out.dtype, r * out.strides[0]);
      (void)convert(row.data(), DType::kF32, dst, out.dtype, k);
    }
  });
  return ok_status();
}

Status fp8_round_trip_cpu(const Tensor& x, const Tensor& out, bool per_tensor) {
  if (x.ndim != 2 || x.dtype != DType::kF32 || out.dtype != DType::kF32 || out.shape != x.shape)
    return invalid_argument("fp8_round_trip_cpu: want f32 x and out of the same [rows, k] shape, got " + x.shape_string() +
                            " and " + out.shape_string());
  const HostTensor q = HostTensor::zeros(DType::kFp8E4M3, {x.shape[0], x.shape[1]});
  const HostTensor s = HostTensor::zeros(DType::kF32, {per_tensor ? 1 : x.shape[0]});
  KILN_RETURN_IF_ERROR(quantize_fp8_cpu({x, q.tensor, s.tensor}));
  return dequantize_fp8_weights_cpu(q.tensor, s.tensor, out);
}

}  // namespace kiln
