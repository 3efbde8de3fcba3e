// Scalar conversions for the small float formats. One generic encoder (minifloat_encode) does
// round-to-nearest-even for f16, e4m3 and e5m2; it works in double, where every step is exact.
#include "kiln/core/dtype.h"

#include <cmath>
#include <string>

namespace kiln {
namespace {

struct MiniFloat {
  int exp_bits;
  int man_bits;
  int bias;
  double max_finite;
  bool saturate;      // overflow -> +-max_finite (else -> inf)
  uint32_t nan_bits;  // magnitude bits of the NaN produced
  uint32_t inf_bits;  // magnitude bits of inf (unused when saturate)
};

constexpr MiniFloat kF16{5, 10, 15, 65504.0, false, 0x7e00, 0x7c00};
constexpr MiniFloat kE4M3{4, 3, 7, 448.0, true, 0x7f, 0};
constexpr MiniFloat kE5M2{5, 2, 15, 57344.0, true, 0x7f, 0x7c};

uint32_t minifloat_encode(float f, const MiniFloat& m) {
  const uint32_t sign = (f32_bits(f) >> 31) << (m.exp_bits + m.man_bits);
  if (std::isnan(f)) return sign | m.nan_bits;
  double a = std::fabs(static_cast<double>(f));
  const uint32_t max_bits_mag = [&] {
    // encode max_finite directly: exponent field and mantissa of max.
    int e;
    double fr = std::frexp(m.max_finite, &e);  // max = fr * 2^e, fr in [0.5, 1)
    uint32_t ef = static_cast<uint32_t>(e - 1 + m.bias);
    uint32_t mf = static_cast<uint32_t>(std::ldexp(fr * 2.0 - 1.0, m.man_bits));
    return (ef << m.man_bits) | mf;
  }();
  if (std::isinf(a)) return sign | (m.saturate ? max_bits_mag : m.inf_bits);
  if (a == 0.0) return sign;
  const int min_normal_exp = 1 - m.bias;
  int e;
  std::frexp(a, &e);
  e -= 1;  // a in [2^e, 2^(e+1))
  if (e < min_normal_exp) e = min_normal_exp;
  const double quantum = std::ldexp(1.0, e - m.man_bits);
  const double q = std::nearbyint(a / quantum);  // default rounding mode: nearest-even
  const double r = q * quantum;
  if (r > m.max_finite) return sign | (m.saturate ? max_bits_mag : m.inf_bits);
  if (r < std::ldexp(1.0, min_normal_exp)) {  // subnormal (or zero after rounding)
    return sign | static_cast<uint32_t>(r / std::ldexp(1.0, min_normal_exp - m.man_bits));
  }
  int re;
  std::frexp(r, &re);
  re -= 1;
  const uint32_t ef = static_cast<uint32_t>(re + m.bias);
  const uint32_t mf = static_cast<uint32_t>(r / std::ldexp(1.0, re - m.man_bits)) - (1u << m.man_bits);
  return sign | (ef << m.man_bits) | mf;
}

float minifloat_decode(uint32_t v, const MiniFloat& m, bool ieee_special) {
  const int total = 1 + m.exp_bits + m.man_bits;
  const bool neg = (v >> (total - 1)) & 1u;
  const uint32_t ef = (v >> m.man_bits) & ((1u << m.exp_bits) - 1);
  const uint32_t mf = v & ((1u << m.man_bits) - 1);
  double r;
  if (ieee_special && ef == (1u << m.exp_bits) - 1) {
    r = mf ? NAN : INFINITY;
  } else if (!ieee_special && ef == (1u << m.exp_bits) - 1 && mf == (1u << m.man_bits) - 1) {
    r = NAN;  // e4m3fn: only S.1111.111 is NaN
  } else if (ef == 0) {
    r = std::ldexp(static_cast<double>(mf), 1 - m.bias - m.man_bits);
  } else {
    r = std::ldexp(static_cast<double>(mf | (1u << m.man_bits)), static_cast<int>(ef) - m.bias - m.man_bits);
  }
  return static_cast<float>(neg ? -r : r);
}

}  // namespace

float f16_to_f32(uint16_t h) {
  // Fast exact path by bit manipulation.
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t ef = (h >> 10) & 0x1f;
  const uint32_t mf = h & 0x3ff;
  if (ef == 0x1f) return f32_from_bits(sign | 0x7f800000u | (mf << 13));
  if (ef == 0) {
    float r = std::ldexp(static_cast<float>(mf), -24);
    return sign ? -r : r;
  }
  return f32_from_bits(sign | ((ef + 112) << 23) | (mf << 13));
}
uint16_t f32_to_f16(float f) { return static_cast<uint16_t>(minifloat_encode(f, kF16)); }
float fp8_e4m3_to_f32(uint8_t v) { return minifloat_decode(v, kE4M3, false); }
uint8_t f32_to_fp8_e4m3(float f) { return static_cast<uint8_t>(minifloat_encode(f, kE4M3)); }
float fp8_e5m2_to_f32(uint8_t v) { return minifloat_decode(v, kE5M2, true); }
uint8_t f32_to_fp8_e5m2(float f) { return static_cast<uint8_t>(minifloat_encode(f, kE5M2)); }

int8_t quantize_int8(float x, float scale) {
  float q = std::nearbyint(x / scale);
  if (std::isnan(q)) return 0;
  if (q > 127.f) q = 127.f;
  if (q < -127.f) q = -127.f;
  return static_cast<int8_t>(q);
}

int8_t quantize_int4(float x, float scale) {
  float q = std::nearbyint(x / scale);
  if (std::isnan(q)) return 0;
  if (q > 7.f) q = 7.f;
  if (q < -8.f) q = -8.f;
  return static_cast<int8_t>(q);
}

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
    case DType::kFp8E4M3: return "fp8_e4m3";
    case DType::kFp8E5M2: return "fp8_e5m2";
    case DType::kInt8: return "int8";
    case DType::kInt4: return "int4";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
  }
  return "?";
}

Result<DType> dtype_from_name(std::string_view name) {
  if (name == "f32" || name == "float32" || name == "float") return DType::kF32;
  if (name == "f16" || name == "float16" || name == "half") return DType::kF16;
  if (name == "bf16" || name == "bfloat16") return DType::kBF16;
  if (name == "fp8" || name == "fp8_e4m3" || name == "e4m3") return DType::kFp8E4M3;
  if (name == "fp8_e5m2" || name == "e5m2") return DType::kFp8E5M2;
  if (name == "int8") return DType::kInt8;
  if (name == "int4") return DType::kInt4;
  return invalid_argument("unknown dtype '" + std::string(name) +
                          "' (supported: f32, f16, bf16, fp8, fp8_e4m3, fp8_e5m2, int8, int4)");
}

namespace {
float load_as_f32(const void* src, DType t, int64_t i) {
  switch (t) {
    case DType::kF32: return static_cast<const float*>(src)[i];
    case DType::kF16: return f16_to_f32(static_cast<const uint16_t*>(src)[i]);
    case DType::kBF16: return bf16_to_f32(static_cast<const uint16_t*>(src)[i]);
    case DType::kFp8E4M3: return fp8_e4m3_to_f32(static_cast<const uint8_t*>(src)[i]);
    case DType::kFp8E5M2: return fp8_e5m2_to_f32(static_cast<const uint8_t*>(src)[i]);
    case DType::kInt8: return static_cast<const int8_t*>(src)[i];
    case DType::kInt32: return static_cast<float>(static_cast<const int32_t*>(src)[i]);
    default: return 0.f;
  }
}
void store_from_f32(void* dst, DType t, int64_t i, float v) {
  switch (t) {
    case DType::kF32: static_cast<float*>(dst)[i] = v; break;
    case DType::kF16: static_cast<uint16_t*>(dst)[i] = f32_to_f16(v); break;
    case DType::kBF16: static_cast<uint16_t*>(dst)[i] = f32_to_bf16(v); break;
    case DType::kFp8E4M3: static_cast<uint8_t*>(dst)[i] = f32_to_fp8_e4m3(v); break;
    case DType::kFp8E5M2: static_cast<uint8_t*>(dst)[i] = f32_to_fp8_e5m2(v); break;
    default: break;
  }
}
}  // namespace

Status convert(const void* src, DType src_type, void* dst, DType dst_type, int64_t n) {
  const bool src_ok = dtype_is_float(src_type) || src_type == DType::kInt8 || src_type == DType::kInt32;
  if (!src_ok || !dtype_is_float(dst_type)) {
    return unimplemented("convert " + std::string(dtype_name(src_type)) + " -> " +
                         std::string(dtype_name(dst_type)) +
                         " (supported: f32/f16/bf16/fp8/int8/int32 -> f32/f16/bf16/fp8)");
  }
  if (src_type == dst_type) {
    std::memcpy(dst, src, static_cast<size_t>(dtype_bytes(src_type, n)));
    return ok_status();
  }
  for (int64_t i = 0; i < n; ++i) store_from_f32(dst, dst_type, i, load_as_f32(src, src_type, i));
  return ok_status();
}

}  // namespace kiln
