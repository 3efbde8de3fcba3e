// CPU RoPE (rotate-half) + paged KV write (f32 cache, or fp8 e4m3 cache quantized on write), and
// the inverse-frequency table with Llama 3.1 / linear scaling. Angles are computed in double so the
// reference is exact to fp32 rounding.
#include <algorithm>
#include <cmath>
#include <string>

#include "kiln/kernels/hadamard.h"
#include "kiln/kernels/rope.h"

namespace kiln {

std::vector<float> rope_inv_freq(int64_t rotary_dim, float theta, const RopeScaling& s) {
  std::vector<float> inv(static_cast<size_t>(rotary_dim / 2));
  for (int64_t i = 0; i < rotary_dim / 2; ++i) {
    double f = 1.0 / std::pow(static_cast<double>(theta), static_cast<double>(2 * i) / static_cast<double>(rotary_dim));
    if (s.type == RopeScaling::Type::kLinear) {
      f /= s.factor;
    } else if (s.type == RopeScaling::Type::kLlama3) {
      // Llama 3.1: keep high frequencies, divide low ones by factor, blend in between.
      const double old_len = static_cast<double>(s.original_max_position_embeddings);
      const double low_wavelen = old_len / s.low_freq_factor;
      const double high_wavelen = old_len / s.high_freq_factor;
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen > low_wavelen) {
        f /= s.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = (1.0 - smooth) * f / s.factor + smooth * f;
      }
    }
    inv[static_cast<size_t>(i)] = static_cast<float>(f);
  }
  return inv;
}

namespace {
void rotate(float* x, int64_t head_dim, const float* cos_t, const float* sin_t) {
  const int64_t half = head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float a = x[i], b = x[i + half];
    x[i] = a * cos_t[i] - b * sin_t[i];
    x[i + half] = b * cos_t[i] + a * sin_t[i];
  }
}
// The fp8-cache path spells the rotation with explicit fmas (x1 = fma(a, cos, -(b sin)), x2 =
// fma(b, cos, a sin)) so that the compiler cannot contract it differently from the GPU kernel,
// which computes the same expression before quantizing: the fp8 caches then agree bit for bit.
void rotate_fma(float* x, int64_t head_dim, const float* cos_t, const float* sin_t) {
  const int64_t half = head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float a = x[i], b = x[i + half];
    const float b_sin = b * sin_t[i], a_sin = a * sin_t[i];
    x[i] = std::fma(a, cos_t[i], -b_sin);
    x[i + half] = std::fma(b, cos_t[i], a_sin);
  }
}

// fp8(x / scale), round to nearest even, saturating at +-448 (core/dtype.h).
void quantize_row(const float* x, int64_t n, float scale, uint8_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = f32_to_fp8_e4m3(x[i] / scale);
}

}  // namespace

Status rope_kv_write_cpu(const RopeKvWriteArgs& a) {
  const int64_t n = a.q.shape[0], hq = a.q.shape[1], hkv = a.k.shape[1], d = a.q.shape[2];
  const int64_t num_blocks = a.k_cache.shape[0], block_size = a.k_cache.shape[1];
  const bool fp8 = a.k_cache.dtype == DType::kFp8E4M3;
  if (a.q.dtype != DType::kF32 || a.k.dtype != DType::kF32 || a.v.dtype != DType::kF32 ||
      (a.k_cache.dtype != DType::kF32 && !fp8) || a.v_cache.dtype != a.k_cache.dtype ||
      a.inv_freq.numel() != d / 2 || a.k_cache.shape[2] != hkv || a.k_cache.shape[3] != d)
    return invalid_argument("rope_kv_write_cpu: want f32 q/k/v and f32 or fp8_e4m3 caches of matching shape (q " +
                            a.q.shape_string() + ", k_cache " + a.k_cache.shape_string() + " " +
                            std::string(dtype_name(a.k_cache.dtype)) + ")");
  if (!a.q_out.empty() && (a.q_out.dtype != DType::kF32 || a.q_out.shape != a.q.shape || !a.q_out.is_contiguous()))
    return invalid_argument("rope_kv_write_cpu: q_out must be f32 " + a.q.shape_string() + ", contiguous");
  if (a.hadamard_qk && !is_power_of_two(d))
    return unimplemented("rope_kv_write_cpu: the q/k Hadamard rotation needs a power-of-two head_dim, got " + std::to_string(d));
  if (fp8 && !(a.k_scale > 0.f && a.v_scale > 0.f && std::isfinite(a.k_scale) && std::isfinite(a.v_scale)))
    return invalid_argument("rope_kv_write_cpu: fp8 cache scales must be finite and > 0");
  const int32_t* pos = a.positions.ptr<int32_t>();
  const int32_t* slots = a.slot_mapping.empty() ? nullptr : a.slot_mapping.ptr<int32_t>();
  const float* inv = a.inv_freq.ptr<float>();
  std::vector<float> cos_t(static_cast<size_t>(d / 2)), sin_t(static_cast<size_t>(d / 2));
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < d / 2; ++i) {
      const float angle = static_cast<float>(pos[t]) * inv[i];  // fp32 product, as the reference
      cos_t[static_cast<size_t>(i)] = static_cast<float>(std::cos(static_cast<double>(angle)));
      sin_t[static_cast<size_t>(i)] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
    const auto rot = fp8 ? rotate_fma : rotate;
    for (int64_t h = 0; h < hq; ++h) {
      float* q = a.q.ptr<float>() + (t * hq + h) * d;
      if (!a.q_out.empty()) q = std::copy_n(q, d, a.q_out.ptr<float>() + (t * hq + h) * d) - d;
      rot(q, d, cos_t.data(), sin_t.data());
      if (a.hadamard_qk) hadamard_inplace(q, d);
    }
    for (int64_t h = 0; h < hkv; ++h) {
      float* k = a.k.ptr<float>() + (t * hkv + h) * d;
      rot(k, d, cos_t.data(), sin_t.data());
      if (a.hadamard_qk) hadamard_inplace(k, d);
    }
    if (!slots || slots[t] < 0) continue;
    if (slots[t] >= num_blocks * block_size)
      return out_of_range("rope_kv_write_cpu: slot " + std::to_string(slots[t]) + " outside the cache");
    const int64_t off = static_cast<int64_t>(slots[t]) * hkv * d;
    if (fp8) {
      quantize_row(a.k.ptr<float>() + t * hkv * d, hkv * d, a.k_scale, a.k_cache.ptr<uint8_t>() + off);
      quantize_row(a.v.ptr<float>() + t * hkv * d, hkv * d, a.v_scale, a.v_cache.ptr<uint8_t>() + off);
      continue;
    }
    std::copy_n(a.k.ptr<float>() + t * hkv * d, hkv * d, a.k_cache.ptr<float>() + off);
    std::copy_n(a.v.ptr<float>() + t * hkv * d, hkv * d, a.v_cache.ptr<float>() + off);
  }
  return ok_status();
}

}  // namespace kiln
