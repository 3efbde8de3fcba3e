// Exactness of the scalar conversions: round trips over every code, ties to even at midpoints,
// the stated saturation rules, and f16 against the hardware converter (F16C) as an oracle.
#include "kiln/core/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace kiln {
namespace {

struct Fp8Case {
  const char* name;
  float (*decode)(uint8_t);
  uint8_t (*encode)(float);
  float max;
};
const Fp8Case kFp8[] = {{"e4m3", fp8_e4m3_to_f32, f32_to_fp8_e4m3, kFp8E4M3Max},
                        {"e5m2", fp8_e5m2_to_f32, f32_to_fp8_e5m2, kFp8E5M2Max}};

TEST(DType, Fp8RoundTripsEveryFiniteCode) {
  for (const auto& c : kFp8) {
    for (int v = 0; v < 256; ++v) {
      const float f = c.decode(static_cast<uint8_t>(v));
      if (std::isnan(f) || std::isinf(f)) continue;
      EXPECT_EQ(c.encode(f), v == 0x80 ? 0x80 : v) << c.name << " code " << v;
    }
  }
}

TEST(DType, Fp8MidpointsRoundToEven) {
  for (const auto& c : kFp8) {
    for (int v = 0; v < 127; ++v) {
      const float a = c.decode(static_cast<uint8_t>(v)), b = c.decode(static_cast<uint8_t>(v + 1));
      if (!std::isfinite(a) || !std::isfinite(b) || b > c.max) continue;
      const float mid = (a + b) / 2;  // exact in f32
      const uint8_t even = (v % 2 == 0) ? static_cast<uint8_t>(v) : static_cast<uint8_t>(v + 1);
      EXPECT_EQ(c.encode(mid), even) << c.name << " between codes " << v << " and " << v + 1;
      EXPECT_EQ(c.encode(std::nextafter(mid, b)), v + 1) << c.name;
      EXPECT_EQ(c.encode(std::nextafter(mid, a)), v) << c.name;
      EXPECT_EQ(c.encode(-mid), even | 0x80) << c.name;
    }
  }
}

TEST(DType, Fp8Saturates) {
  EXPECT_EQ(fp8_e4m3_to_f32(f32_to_fp8_e4m3(1e6f)), 448.f);
  EXPECT_EQ(fp8_e4m3_to_f32(f32_to_fp8_e4m3(-INFINITY)), -448.f);
  EXPECT_EQ(fp8_e4m3_to_f32(f32_to_fp8_e4m3(464.f)), 448.f);  // would round to 480 (NaN code): saturate
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_f32(f32_to_fp8_e4m3(NAN))));
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_f32(0x7f)));
  EXPECT_EQ(fp8_e4m3_to_f32(0x7e), 448.f);
  EXPECT_EQ(fp8_e5m2_to_f32(f32_to_fp8_e5m2(1e9f)), 57344.f);
  EXPECT_EQ(fp8_e5m2_to_f32(f32_to_fp8_e5m2(INFINITY)), 57344.f);
  EXPECT_TRUE(std::isinf(fp8_e5m2_to_f32(0x7c)));
  EXPECT_TRUE(std::isnan(fp8_e5m2_to_f32(f32_to_fp8_e5m2(NAN))));
  // Smallest subnormals.
  EXPECT_EQ(fp8_e4m3_to_f32(1), std::ldexp(1.f, -9));
  EXPECT_EQ(fp8_e5m2_to_f32(1), std::ldexp(1.f, -16));
  EXPECT_EQ(f32_to_fp8_e4m3(std::ldexp(1.f, -10)), 0);  // tie between 0 and the min subnormal -> 0 (even)
  EXPECT_EQ(f32_to_fp8_e4m3(std::ldexp(1.5f, -10)), 1);
}

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(f32_to_bf16(f32_from_bits(0x3f808000)), 0x3f80);  // tie, even stays
  EXPECT_EQ(f32_to_bf16(f32_from_bits(0x3f818000)), 0x3f82);  // tie, odd rounds up
  EXPECT_EQ(f32_to_bf16(f32_from_bits(0x3f808001)), 0x3f81);
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(3.4e38f)), INFINITY);
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bf16_to_f32(static_cast<uint16_t>(h));
    if (!std::isnan(f)) { EXPECT_EQ(f32_to_bf16(f), h); }
  }
}

TEST(DType, F16MatchesHardwareConverter) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (!std::isnan(f)) { ASSERT_EQ(f32_to_f16(f), h) << h; }
  }
#if defined(__F16C__)
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    const float f = f32_from_bits(bits(rng));
    if (std::isnan(f)) continue;
    const uint16_t hw = static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
    ASSERT_EQ(f32_to_f16(f), hw) << f;
    ASSERT_EQ(f32_bits(f16_to_f32(hw)), f32_bits(_cvtsh_ss(hw)));
  }
#endif
}

TEST(DType, IntQuantizeClampsAndRounds) {
  EXPECT_EQ(quantize_int8(2.5f, 1.f), 2);
  EXPECT_EQ(quantize_int8(3.5f, 1.f), 4);
  EXPECT_EQ(quantize_int8(1000.f, 1.f), 127);
  EXPECT_EQ(quantize_int8(-1000.f, 1.f), -127);
  EXPECT_EQ(quantize_int4(100.f, 1.f), 7);
  EXPECT_EQ(quantize_int4(-100.f, 1.f), -8);
  EXPECT_EQ(int4_unpack(0xF7, 0), 7);
  EXPECT_EQ(int4_unpack(0xF7, 1), -1);
}

TEST(DType, ConvertRejectsInt4AndNamesParse) {
  uint8_t src[4] = {}, dst[16] = {};
  EXPECT_EQ(convert(src, DType::kInt4, dst, DType::kF32, 8).code(), StatusCode::kUnimplemented);
  EXPECT_EQ(dtype_from_name("fp8").value(), DType::kFp8E4M3);
  EXPECT_FALSE(dtype_from_name("fp7").ok());
  EXPECT_EQ(dtype_bytes(DType::kInt4, 7), 4);
}

}  // namespace
}  // namespace kiln
