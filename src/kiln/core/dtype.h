// Element types kiln carries, their sizes, and exact scalar conversions to and from f32.
// Rounding is round-to-nearest-even everywhere. Overflow rules:
//   f16:      IEEE, overflow rounds to +-inf, NaN stays NaN.
//   bf16:     IEEE, overflow rounds to +-inf, NaN stays NaN (quiet).
//   fp8_e4m3: the "fn" variant (no inf; S.1111.111 is NaN; max finite 448). Conversion saturates:
//             finite values beyond 448 and +-inf become +-448; NaN becomes NaN (0x7f / 0xff).
//             This is CUDA's __NV_SATFINITE mode, so GPU kernels reproduce it bit for bit.
//   fp8_e5m2: IEEE-like (has inf; max finite 57344). Conversion saturates the same way:
//             finite overflow and +-inf become +-57344; NaN becomes NaN.
//   int8:     symmetric, round-to-nearest-even, clamped to [-127, 127] (see quantize helpers).
//   int4:     packed two per byte, element 2i in the low nibble; signed [-8, 7]; always used with
//             group scales (GroupScales in tensor.h).
#pragma once
#include <cstdint>
#include <cstring>
#include <string_view>

#include "kiln/core/status.h"

namespace kiln {

enum class DType : uint8_t {
  kF32,
  kF16,
  kBF16,
  kFp8E4M3,
  kFp8E5M2,
  kInt8,
  kInt4,   // packed, 2 elements per byte
  kInt32,  // indices (token ids, block tables)
  kInt64,
};

constexpr int kNumDTypes = 9;

std::string_view dtype_name(DType t);
Result<DType> dtype_from_name(std::string_view name);  // "f32", "bf16", "fp8" (= e4m3), ...

// Bits per element (int4: 4).
constexpr int dtype_bits(DType t) {
  switch (t) {
    case DType::kF32: case DType::kInt32: return 32;
    case DType::kF16: case DType::kBF16: return 16;
    case DType::kFp8E4M3: case DType::kFp8E5M2: case DType::kInt8: return 8;
    case DType::kInt4: return 4;
    case DType::kInt64: return 64;
  }
  return 0;
}
// Bytes for n elements (int4 rounds up to whole bytes).
constexpr int64_t dtype_bytes(DType t, int64_t n) { return (n * dtype_bits(t) + 7) / 8; }
constexpr bool dtype_is_float(DType t) {
  return t == DType::kF32 || t == DType::kF16 || t == DType::kBF16 || t == DType::kFp8E4M3 ||
         t == DType::kFp8E5M2;
}

// ---- scalar conversions (host) ------------------------------------------------------------
inline uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float f32_from_bits(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

inline float bf16_to_f32(uint16_t h) { return f32_from_bits(static_cast<uint32_t>(h) << 16); }
inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
float fp8_e4m3_to_f32(uint8_t v);
uint8_t f32_to_fp8_e4m3(float f);
float fp8_e5m2_to_f32(uint8_t v);
uint8_t f32_to_fp8_e5m2(float f);

constexpr float kFp8E4M3Max = 448.0f;
constexpr float kFp8E5M2Max = 57344.0f;

// int8 / int4 symmetric quantization of one value given its scale (q = rne(x / scale), clamped).
int8_t quantize_int8(float x, float scale);
int8_t quantize_int4(float x, float scale);  // result in [-8, 7]
inline int8_t int4_unpack(uint8_t byte, int which) {  // which: 0 = low nibble, 1 = high nibble
  int v = which ? (byte >> 4) : (byte & 0xf);
  return static_cast<int8_t>(v >= 8 ? v - 16 : v);
}

// Convert n contiguous elements between float dtypes (and int8/int32 -> f32). src and dst may
// be any of f32, f16, bf16, fp8_e4m3, fp8_e5m2; int4 is not allowed here (needs scales).
Status convert(const void* src, DType src_type, void* dst, DType dst_type, int64_t n);

}  // namespace kiln
