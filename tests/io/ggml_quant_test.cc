// Dequantization against gguf-py (tests/data/io/quant_fixture*.{gguf,safetensors}, written by
// scripts/make_io_fixtures.py), and the fast conversions against core's scalar ones.
#include "kiln/io/ggml_quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "kiln/io/host_convert.h"
#include "kiln/io/safetensors.h"

namespace kiln {
namespace {

const std::string kDataDir = std::string(KILN_SOURCE_DIR) + "/tests/data/io";

TEST(GgmlQuant, MatchesGgufPyExactly) {
  Result<GgufFile> g = GgufFile::open(kDataDir + "/quant_fixture.gguf");
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  Result<SafetensorsFile> want = SafetensorsFile::open(kDataDir + "/quant_fixture_expected.safetensors");
  ASSERT_TRUE(want.ok()) << want.status().to_string();
  EXPECT_EQ(*g->get_string("general.architecture"), "kiln_fixture");
  EXPECT_EQ(*g->get_int("fixture.uint32"), 7);
  EXPECT_EQ(*g->get_int_array("fixture.int_array"), (std::vector<int64_t>{1, -2, 3}));

  const std::map<std::string, GgmlType> types = {
      {"t_f32", GgmlType::kF32},   {"t_f16", GgmlType::kF16},   {"t_bf16", GgmlType::kBF16},
      {"t_q8_0", GgmlType::kQ8_0}, {"t_q4_0", GgmlType::kQ4_0}, {"t_q4_1", GgmlType::kQ4_1},
      {"t_q4_1_3d", GgmlType::kQ4_1},
  };
  ASSERT_EQ(want->tensors().size(), types.size());
  for (const auto& [name, type] : types) {
    SCOPED_TRACE(name);
    const GgufTensorInfo* t = g->find_tensor(name);
    const SafetensorsTensor* w = want->find(name);
    ASSERT_NE(t, nullptr);
    ASSERT_NE(w, nullptr);
    EXPECT_EQ(t->type, type);
    EXPECT_EQ(t->shape, w->shape);
    const int64_t n = t->numel();
    ASSERT_EQ(n * 4, w->nbytes);
    std::vector<float> got(static_cast<size_t>(n));
    ASSERT_TRUE(g->dequantize(*t, DType::kF32, got.data()).ok());
    const float* ref = w->view().ptr<float>();
    int64_t mismatches = 0;
    for (int64_t i = 0; i < n; ++i) mismatches += f32_bits(got[static_cast<size_t>(i)]) != f32_bits(ref[i]);
    EXPECT_EQ(mismatches, 0);
    // Half-precision outputs are the f32 result rounded once.
    std::vector<uint16_t> bf(static_cast<size_t>(n));
    ASSERT_TRUE(g->dequantize(*t, DType::kBF16, bf.data()).ok());
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(bf[static_cast<size_t>(i)], f32_to_bf16(ref[i])) << i;
  }
}

TEST(GgmlQuant, LargeTensorUsesEveryBlock) {
  // Enough blocks to be split over the thread pool: block b has d = b and all nibbles = 9.
  constexpr int64_t kBlocks = 5000;
  std::vector<uint8_t> src(static_cast<size_t>(kBlocks * 18));
  for (int64_t b = 0; b < kBlocks; ++b) {
    const uint16_t d = f32_to_f16(static_cast<float>(b % 2048));
    std::memcpy(&src[static_cast<size_t>(b * 18)], &d, 2);
    std::memset(&src[static_cast<size_t>(b * 18 + 2)], 0x99, 16);
  }
  std::vector<float> out(static_cast<size_t>(kBlocks * 32));
  ASSERT_TRUE(dequantize_ggml(GgmlType::kQ4_0, src.data(), kBlocks * 32, DType::kF32, out.data()).ok());
  for (int64_t i = 0; i < kBlocks * 32; ++i) {
    ASSERT_EQ(out[static_cast<size_t>(i)], static_cast<float>((i / 32) % 2048)) << i;
  }
}

TEST(GgmlQuant, TypeTableAndErrors) {
  EXPECT_EQ(ggml_row_bytes(GgmlType::kQ4_1, 64), 40);
  EXPECT_EQ(ggml_row_bytes(GgmlType::kQ8_0, 33), -1);
  EXPECT_EQ(ggml_row_bytes(GgmlType::kQ6_K, 256), 210);
  EXPECT_EQ(ggml_row_bytes(static_cast<GgmlType>(1000), 32), -1);
  EXPECT_STREQ(ggml_type_name(GgmlType::kQ4_K), "Q4_K");
  EXPECT_STREQ(ggml_type_name(static_cast<GgmlType>(1000)), "unknown");
  EXPECT_TRUE(ggml_can_dequantize(GgmlType::kBF16));
  EXPECT_FALSE(ggml_can_dequantize(GgmlType::kQ5_0));
  float out[32];
  uint8_t src[34] = {};
  Status s = dequantize_ggml(GgmlType::kQ5_0, src, 32, DType::kF32, out);
  EXPECT_EQ(s.code(), StatusCode::kUnimplemented);
  EXPECT_NE(s.message().find("F32, F16, BF16, Q8_0, Q4_0, Q4_1"), std::string::npos);
  EXPECT_EQ(dequantize_ggml(GgmlType::kQ8_0, src, 31, DType::kF32, out).code(), StatusCode::kInvalidArgument);
}

TEST(HostConvert, FastF16MatchesCore) {
  std::vector<float> vals = {0.f, -0.f, 1.f, 65504.f, 65519.99f, 65520.f, 1e6f, 5.96e-8f, 2.98e-8f, 2.99e-8f,
                             6.1e-5f, 6.103515625e-05f, 1.0009765625f, 1.00048828125f, 1.00146484375f,
                             std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                             std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::denorm_min()};
  for (uint64_t u = 0; u < (uint64_t{1} << 32); u += 4099) vals.push_back(f32_from_bits(static_cast<uint32_t>(u)));
  // Every f16 value and the midpoints around it (ties must round to even).
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const float v = f16_to_f32(static_cast<uint16_t>(h));
    const uint32_t bits = f32_bits(v);
    for (uint32_t d : {0u, 0xfffu, 0x1000u, 0x1001u}) vals.push_back(f32_from_bits(bits + d));
  }
  for (float v : vals) {
    for (float s : {v, -v}) ASSERT_EQ(f32_to_f16_fast(s), f32_to_f16(s)) << s << " bits " << std::hex << f32_bits(s);
  }
}

TEST(HostConvert, ParallelConvertMatchesCore) {
  const int64_t n = 200003;
  std::vector<float> src(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) src[static_cast<size_t>(i)] = std::sin(static_cast<float>(i)) * 1000.f;
  for (DType mid : {DType::kF16, DType::kBF16, DType::kFp8E4M3}) {
    for (DType dst : {DType::kF32, DType::kF16, DType::kBF16}) {
      SCOPED_TRACE(std::string(dtype_name(mid)) + " -> " + std::string(dtype_name(dst)));
      std::vector<uint8_t> a(static_cast<size_t>(dtype_bytes(mid, n)));
      ASSERT_TRUE(convert(src.data(), DType::kF32, a.data(), mid, n).ok());
      std::vector<uint8_t> want(static_cast<size_t>(dtype_bytes(dst, n))), got(want.size());
      ASSERT_TRUE(convert(a.data(), mid, want.data(), dst, n).ok());
      ASSERT_TRUE(convert_parallel(a.data(), mid, got.data(), dst, n).ok());
      EXPECT_EQ(want, got);
    }
  }
  uint8_t x[8];
  EXPECT_EQ(convert_parallel(x, DType::kInt4, x, DType::kF32, 2).code(), StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace kiln
