// CPU linear layer: tiles of 4 weight rows x 2 activation rows with 8 AVX2 accumulators; each
// weight tile is converted once per k-step and reused for both activation rows. Threads split
// the output features. This is both the reference and the CPU fast path. fp8 e4m3 weights: each
// chunk of rows is widened to f32 (exact), multiplied, then scaled by w_scale (per row or tensor).
#include "kiln/kernels/linear.h"

#include <algorithm>
#include <string>
#include <vector>

#include "kiln/core/thread_pool.h"
#include "kiln/kernels/cpu/simd.h"

namespace kiln {
namespace {

// Element i of a contiguous f32/f16/bf16 tensor.
float element_at(const Tensor& t, int64_t i) {
  if (t.dtype == DType::kF32) return t.ptr<float>()[i];
  return cpu::load1(t.ptr<uint16_t>() + i, t.dtype);
}
float weight_at(const Tensor& w, int64_t row, int64_t col) { return element_at(w, row * w.strides[0] + col); }

// Scalar tile: rows [n0, n1) of w against rows [m0, m1) of x.
void tile_scalar(const Tensor& x, const Tensor& w, int64_t m0, int64_t m1, int64_t n0, int64_t n1,
                 float* y, int64_t ldy) {
  const int64_t k = x.shape[1];
  for (int64_t m = m0; m < m1; ++m) {
    const float* xr = x.ptr<float>() + m * x.strides[0];
    for (int64_t n = n0; n < n1; ++n) {
      float s = 0.f;
      for (int64_t j = 0; j < k; ++j) s += xr[j] * weight_at(w, n, j);
      y[m * ldy + n] = s;
    }
  }
}

#ifdef KILN_CPU_AVX2
template <typename W>
inline __m256 wload(const W* p, DType t) {
  if constexpr (sizeof(W) == 4) { (void)t; return cpu::load8(p); }
  else return cpu::load8(p, t);
}

// 4 weight rows x up to 2 activation rows; k must be a multiple of 8 here.
template <typename W>
void tile_4x2(const float* x0, const float* x1, const W* w, int64_t ldw, DType wt, int64_t k,
              float* y0, float* y1) {
  __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00;
  __m256 a10 = a00, a11 = a00, a12 = a00, a13 = a00;
  for (int64_t j = 0; j < k; j += 8) {
    const __m256 w0 = wload(w + j, wt), w1 = wload(w + ldw + j, wt);
    const __m256 w2 = wload(w + 2 * ldw + j, wt), w3 = wload(w + 3 * ldw + j, wt);
    const __m256 v0 = _mm256_loadu_ps(x0 + j);
    a00 = _mm256_fmadd_ps(v0, w0, a00); a01 = _mm256_fmadd_ps(v0, w1, a01);
    a02 = _mm256_fmadd_ps(v0, w2, a02); a03 = _mm256_fmadd_ps(v0, w3, a03);
    if (x1) {
      const __m256 v1 = _mm256_loadu_ps(x1 + j);
      a10 = _mm256_fmadd_ps(v1, w0, a10); a11 = _mm256_fmadd_ps(v1, w1, a11);
      a12 = _mm256_fmadd_ps(v1, w2, a12); a13 = _mm256_fmadd_ps(v1, w3, a13);
    }
  }
  y0[0] = cpu::hsum(a00); y0[1] = cpu::hsum(a01); y0[2] = cpu::hsum(a02); y0[3] = cpu::hsum(a03);
  if (x1) { y1[0] = cpu::hsum(a10); y1[1] = cpu::hsum(a11); y1[2] = cpu::hsum(a12); y1[3] = cpu::hsum(a13); }
}

template <typename W>
void rows_avx2(const Tensor& x, const Tensor& w, int64_t n0, int64_t n1, float* y, int64_t ldy) {
  const int64_t m_total = x.shape[0], k = x.shape[1];
  const W* wp = w.ptr<W>();
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) {
    for (int64_t m = 0; m < m_total; m += 2) {
      const float* x0 = x.ptr<float>() + m * x.strides[0];
      const float* x1 = m + 1 < m_total ? x0 + x.strides[0] : nullptr;
      tile_4x2<W>(x0, x1, wp + n * w.strides[0], w.strides[0], w.dtype, k, y + m * ldy + n,
                  y + (m + 1) * ldy + n);
    }
  }
  if (n < n1) tile_scalar(x, w, 0, m_total, n, n1, y, ldy);
}
#endif

void linear_rows(const LinearArgs& a, int64_t n0, int64_t n1) {
  float* y = a.y.ptr<float>();
  const int64_t ldy = a.y.strides[0];
#ifdef KILN_CPU_AVX2
  if (a.x.shape[1] % 8 == 0) {
    if (a.w.dtype == DType::kF32) rows_avx2<float>(a.x, a.w, n0, n1, y, ldy);
    else rows_avx2<uint16_t>(a.x, a.w, n0, n1, y, ldy);
  } else {
    tile_scalar(a.x, a.w, 0, a.x.shape[0], n0, n1, y, ldy);
  }
#else
  tile_scalar(a.x, a.w, 0, a.x.shape[0], n0, n1, y, ldy);
#endif
  if (!a.bias.empty()) {
    for (int64_t m = 0; m < a.x.shape[0]; ++m)
      for (int64_t n = n0; n < n1; ++n) y[m * ldy + n] += element_at(a.bias, n);
  }
}

// fp8 rows [n0, n1): y[:, n] = (x @ float(w[n, :])) * scale(n) (+ bias[n]), widened 64 rows at a time.
void linear_rows_fp8(const LinearArgs& a, int64_t n0, int64_t n1) {
  constexpr int64_t kRowsPerBlock = 64;
  if (n1 <= n0) return;  // parallel_for's last chunks may be empty
  const int64_t m = a.x.shape[0], k = a.x.shape[1];
  std::vector<float> wf(static_cast<size_t>(std::min(kRowsPerBlock, n1 - n0) * k));
  for (int64_t b0 = n0; b0 < n1; b0 += kRowsPerBlock) {
    const int64_t rows = std::min(kRowsPerBlock, n1 - b0);
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* src = a.w.ptr<uint8_t>() + (b0 + r) * a.w.strides[0];
      for (int64_t c = 0; c < k; ++c) wf[static_cast<size_t>(r * k + c)] = fp8_e4m3_to_f32(src[c]);
    }
    LinearArgs sub{a.x, Tensor::view(wf.data(), DType::kF32, {rows, k}), {}, a.y, {}};
    sub.y.data = a.y.ptr<float>() + b0;  // columns [b0, b0 + rows) of y
    sub.y.shape[1] = rows;
    linear_rows(sub, 0, rows);
  }
  float* y = a.y.ptr<float>();
  const int64_t ldy = a.y.strides[0];
  const float* scale = a.w_scale.ptr<float>();
  const bool per_tensor = a.w_scale.numel() == 1;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t n = n0; n < n1; ++n) {
      float& v = y[i * ldy + n];
      v *= scale[per_tensor ? 0 : n];
      if (!a.bias.empty()) v += element_at(a.bias, n);
    }
}

}  // namespace

Status linear_cpu(const LinearArgs& a) {
  if (a.x.ndim != 2 || a.w.ndim != 2 || a.y.ndim != 2 || a.x.dtype != DType::kF32 ||
      a.y.dtype != DType::kF32)
    return invalid_argument("linear_cpu: want x [m,k] f32, w [n,k], y [m,n] f32; got x " +
                            a.x.shape_string() + ", w " + a.w.shape_string() + ", y " + a.y.shape_string());
  const bool fp8 = a.w.dtype == DType::kFp8E4M3;
  if (a.w.dtype != DType::kF32 && a.w.dtype != DType::kF16 && a.w.dtype != DType::kBF16 && !fp8)
    return unimplemented("linear_cpu: weight dtype " + std::string(dtype_name(a.w.dtype)) +
                         " (supported: f32, f16, bf16, fp8_e4m3 with w_scale)");
  if (fp8 && (a.w_scale.empty() || a.w_scale.dtype != DType::kF32 || !a.w_scale.is_contiguous() ||
              (a.w_scale.numel() != 1 && a.w_scale.numel() != a.w.shape[0])))
    return invalid_argument("linear_cpu: fp8 weights need w_scale [n] or [1] f32, got " +
                            (a.w_scale.empty() ? std::string("none") : a.w_scale.shape_string()));
  if (!fp8 && !a.w_scale.empty()) return invalid_argument("linear_cpu: w_scale is only for fp8 weights");
  const int64_t m = a.x.shape[0], k = a.x.shape[1], n = a.w.shape[0];
  if (a.w.shape[1] != k || a.y.shape[0] != m || a.y.shape[1] != n || a.w.strides[1] != 1 ||
      a.x.strides[1] != 1 || a.y.strides[1] != 1)
    return invalid_argument("linear_cpu: shape mismatch x " + a.x.shape_string() + ", w " +
                            a.w.shape_string() + ", y " + a.y.shape_string());
  if (!a.bias.empty() && a.bias.numel() != n) return invalid_argument("linear_cpu: bias size != n");
  // Chunks of 4 rows (tile width); enough rows per chunk that a chunk moves ~64 KB of weights.
  const int64_t tiles = (n + 3) / 4;
  const int64_t min_tiles = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, k * std::max<int64_t>(1, m)));
  ThreadPool::global().parallel_for(tiles, min_tiles, [&](int64_t t0, int64_t t1) {
    if (fp8) linear_rows_fp8(a, t0 * 4, std::min(n, t1 * 4));
    else linear_rows(a, t0 * 4, std::min(n, t1 * 4));
  });
  return ok_status();
}

}  // namespace kiln
