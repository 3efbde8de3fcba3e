// GPTQ rounding of fp8 weights (see gptq_fp8.h).
#include "kiln/models/gptq_fp8.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "kiln/core/dtype.h"
#include "kiln/core/thread_pool.h"
#include "kiln/kernels/linear.h"

namespace kiln {
namespace {

// In place: a [k, k] symmetric positive definite -> its lower Cholesky factor L (a = L L^T; the
// upper triangle is left as is). False when a pivot is not positive.
bool cholesky_lower(std::vector<double>& a, int64_t k) {
  for (int64_t j = 0; j < k; ++j) {
    double* rj = a.data() + j * k;
    double d = rj[j];
    for (int64_t p = 0; p < j; ++p) d -= rj[p] * rj[p];
    if (!(d > 0.0)) return false;
    rj[j] = std::sqrt(d);
    const double inv = 1.0 / rj[j];
    ThreadPool::global().parallel_for(k - j - 1, 64, [&](int64_t b, int64_t e) {
      for (int64_t i = j + 1 + b; i < j + 1 + e; ++i) {
        double* ri = a.data() + i * k;
        double s = ri[j];
        for (int64_t p = 0; p < j; ++p) s -= ri[p] * rj[p];
        ri[j] = s * inv;
      }
    });
  }
  return true;
}

// U upper triangular with H^-1 = U^T U, from H's lower Cholesky factor L (H = L L^T): H^-1 =
// L^-T L^-1. Returned row-major [k, k], zero below the diagonal; empty when H^-1's factorization
// fails in floating point (a nearly singular H).
std::vector<double> inverse_upper_factor(const std::vector<double>& l, int64_t k) {
  // li = L^-1 (lower), column by column of the identity: forward substitution.
  std::vector<double> li(static_cast<size_t>(k * k), 0.0);
  ThreadPool::global().parallel_for(k, 16, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c)
      for (int64_t i = c; i < k; ++i) {
        double s = i == c ? 1.0 : 0.0;
        for (int64_t p = c; p < i; ++p) s -= l[static_cast<size_t>(i * k + p)] * li[static_cast<size_t>(p * k + c)];
        li[static_cast<size_t>(i * k + c)] = s / l[static_cast<size_t>(i * k + i)];
      }
  });
  // hinv = li^T li (symmetric), then its lower Cholesky factor; U is that factor's transpose.
  std::vector<double> hinv(static_cast<size_t>(k * k), 0.0);
  ThreadPool::global().parallel_for(k, 16, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      for (int64_t j = 0; j <= i; ++j) {
        double s = 0.0;
        for (int64_t p = i; p < k; ++p) s += li[static_cast<size_t>(p * k + i)] * li[static_cast<size_t>(p * k + j)];
        hinv[static_cast<size_t>(i * k + j)] = s;
      }
  });
  if (!cholesky_lower(hinv, k)) return {};  // positive definite in exact arithmetic whenever h is
  std::vector<double> u(static_cast<size_t>(k * k), 0.0);
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j <= i; ++j) u[static_cast<size_t>(j * k + i)] = hinv[static_cast<size_t>(i * k + j)];
  return u;
}

}  // namespace

Status InputHessian::add(const Tensor& x) {
  if (x.ndim != 2 || x.dtype != DType::kF32 || x.shape[1] != k || x.strides[1] != 1)
    return invalid_argument("InputHessian::add: want f32 [rows, " + std::to_string(k) + "], got " + x.shape_string());
  const int64_t rows = x.shape[0];
  // x^T x as one f32 GEMM of x^T [k, rows] with itself (linear_cpu: y = a b^T), added in double.
  HostTensor xt = HostTensor::zeros(DType::kF32, {k, rows});
  HostTensor xtx = HostTensor::zeros(DType::kF32, {k, k});
  for (int64_t t = 0; t < rows; ++t)
    for (int64_t c = 0; c < k; ++c) xt.tensor.ptr<float>()[c * rows + t] = x.ptr<float>()[t * x.strides[0] + c];
  KILN_RETURN_IF_ERROR(linear_cpu({xt.tensor, xt.tensor, {}, xtx.tensor, {}}));
  const float* p = xtx.tensor.ptr<float>();
  for (int64_t i = 0; i < k * k; ++i) h[static_cast<size_t>(i)] += p[i];
  samples += rows;
  return ok_status();
}

Result<Fp8Weights> quantize_fp8_gptq_cpu(const Tensor& w, const InputHessian& hessian, const GptqOptions& options) {
  if (w.ndim != 2 || hessian.k != w.shape[1] || hessian.samples <= 0)
    return invalid_argument("quantize_fp8_gptq_cpu: want w [n, k] and a Hessian of k = " + std::to_string(w.ndim == 2 ? w.shape[1] : -1) +
                            " columns with samples (got k = " + std::to_string(hessian.k) + ", " + std::to_string(hessian.samples) +
                            " samples)");
  const int64_t n = w.shape[0], k = w.shape[1];
  // Round-to-nearest first: its scales are kept, its values replaced below.
  KILN_ASSIGN_OR_RETURN(Fp8Weights out, quantize_fp8_weights_cpu(w, options.per_tensor));
  std::vector<double> h = hessian.h;
  // Columns whose input is always 0: any value works; make H invertible there.
  std::vector<bool> dead(static_cast<size_t>(k), false);
  double mean_diag = 0.0;
  for (int64_t i = 0; i < k; ++i) {
    if (h[static_cast<size_t>(i * k + i)] <= 0.0) {
      dead[static_cast<size_t>(i)] = true;
      h[static_cast<size_t>(i * k + i)] = 1.0;
    }
    mean_diag += h[static_cast<size_t>(i * k + i)];
  }
  mean_diag /= static_cast<double>(k);
  // Act order: columns by decreasing diagonal.
  std::vector<int64_t> perm(static_cast<size_t>(k));
  std::iota(perm.begin(), perm.end(), 0);
  std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return h[static_cast<size_t>(a * k + a)] > h[static_cast<size_t>(b * k + b)]; });
  std::vector<double> l;
  double damp = options.damp;
  for (int attempt = 0;; ++attempt) {
    l.assign(static_cast<size_t>(k * k), 0.0);
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j <= i; ++j) l[static_cast<size_t>(i * k + j)] = h[static_cast<size_t>(perm[static_cast<size_t>(i)] * k + perm[static_cast<size_t>(j)])];
    for (int64_t i = 0; i < k; ++i) l[static_cast<size_t>(i * k + i)] += damp * mean_diag;
    if (cholesky_lower(l, k)) break;
    if (attempt == 3) return invalid_argument("quantize_fp8_gptq_cpu: the input Hessian is not positive definite even with dampening " + std::to_string(damp));
    damp *= 10.0;
  }
  const std::vector<double> u = inverse_upper_factor(l, k);
  if (u.empty()) return invalid_argument("quantize_fp8_gptq_cpu: the inverse input Hessian lost positive definiteness (dampening " + std::to_string(damp) + ")");
  const bool per_tensor = out.scale.tensor.numel() == 1;
  const float* scales = out.scale.tensor.ptr<float>();
  uint8_t* q = out.q.tensor.ptr<uint8_t>();
  ThreadPool::global().parallel_for(n, 4, [&](int64_t b, int64_t e) {
    std::vector<float> row_f(static_cast<size_t>(k));
    std::vector<double> row(static_cast<size_t>(k));
    for (int64_t r = b; r < e; ++r) {
      const char* src = static_cast<const char*>(w.data) + dtype_bytes(w.dtype, r * w.strides[0]);
      if (!convert(src, w.dtype, row_f.data(), DType::kF32, k).ok()) continue;  // dtype checked by quantize_fp8_weights_cpu
      for (int64_t j = 0; j < k; ++j) {
        const int64_t c = perm[static_cast<size_t>(j)];
        row[static_cast<size_t>(j)] = dead[static_cast<size_t>(c)] ? 0.0 : row_f[static_cast<size_t>(c)];
      }
      const float s = scales[per_tensor ? 0 : r];
      for (int64_t j = 0; j < k; ++j) {
        const double v = row[static_cast<size_t>(j)];
        const uint8_t code = s > 0.0f ? f32_to_fp8_e4m3(static_cast<float>(v) / s) : uint8_t{0};
        q[r * k + perm[static_cast<size_t>(j)]] = code;
        const double err = (v - static_cast<double>(fp8_e4m3_to_f32(code)) * s) / u[static_cast<size_t>(j * k + j)];
        const double* uj = u.data() + j * k;
        for (int64_t p = j + 1; p < k; ++p) row[static_cast<size_t>(p)] -= err * uj[p];
      }
    }
  });
  return out;
}

}  // namespace kiln
