// GgufFile: metadata of every value type, tensor infos, dequantization of hand-built blocks, and
// clean errors for damaged files (truncation at every byte, bad magic, bad version, garbage counts).
#include "kiln/io/gguf.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "gguf_test_writer.h"
#include "kiln/io/ggml_quant.h"

namespace kiln {
namespace {

using io_test::Bytes;
using io_test::GgufTestWriter;
using VT = GgufValueType;

uint16_t f16_bits(float f) { return f32_to_f16(f); }

// Q8_0 block: d, q[32].
Bytes q8_0_block(float d, const int8_t* q) {
  Bytes b;
  io_test::put(b, f16_bits(d));
  for (int i = 0; i < 32; ++i) b.push_back(static_cast<uint8_t>(q[i]));
  return b;
}
// Q4_0 / Q4_1 block from 32 nibbles (element i is nibble i).
Bytes q4_block(float d, const float* m, const uint8_t* nib) {
  Bytes b;
  io_test::put(b, f16_bits(d));
  if (m) io_test::put(b, f16_bits(*m));
  for (int i = 0; i < 16; ++i) b.push_back(static_cast<uint8_t>(nib[i] | (nib[i + 16] << 4)));
  return b;
}

// A writer with metadata of every type and one tensor of each supported kind, plus the expected
// f32 values of each tensor (computed from the block formulas, independently of the reader).
struct Sample {
  GgufTestWriter w;
  std::map<std::string, std::vector<float>> expected;

  Sample() {
    w.add("general.architecture", io_test::str("llama"));
    w.add("k.u8", io_test::scalar(VT::kUint8, uint8_t{200}));
    w.add("k.i8", io_test::scalar(VT::kInt8, int8_t{-100}));
    w.add("k.u16", io_test::scalar(VT::kUint16, uint16_t{60000}));
    w.add("k.i16", io_test::scalar(VT::kInt16, int16_t{-30000}));
    w.add("k.u32", io_test::u32(4000000000u));
    w.add("k.i32", io_test::scalar(VT::kInt32, int32_t{-2000000000}));
    w.add("k.f32", io_test::f32v(0.25f));
    w.add("k.bool", io_test::scalar(VT::kBool, uint8_t{1}));
    w.add("k.str", io_test::str("héllo"));
    w.add("k.u64", io_test::scalar(VT::kUint64, uint64_t{1} << 40));
    w.add("k.i64", io_test::scalar(VT::kInt64, int64_t{-(int64_t{1} << 40)}));
    w.add("k.f64", io_test::scalar(VT::kFloat64, 1e-300));
    w.add("k.strs", io_test::array(VT::kString, {io_test::str("a"), io_test::str(""), io_test::str("ccc")}));
    w.add("k.ints", io_test::array(VT::kInt32, {io_test::scalar(VT::kInt32, int32_t{-1}),
                                                io_test::scalar(VT::kInt32, int32_t{5})}));
    w.add("k.floats", io_test::array(VT::kFloat32, {io_test::f32v(1.5f), io_test::f32v(-2.f)}));
    w.add("k.nested", io_test::array(VT::kArray, {io_test::array(VT::kUint8, {io_test::scalar(VT::kUint8, uint8_t{1})}),
                                                  io_test::array(VT::kString, {io_test::str("x")})}));
    w.add("k.empty", io_test::array(VT::kUint32, {}));

    std::vector<float> f32(2 * 3);
    for (size_t i = 0; i < f32.size(); ++i) f32[i] = static_cast<float>(i) - 2.5f;
    w.add_f32_tensor("t.f32", {3, 2}, f32);
    expected["t.f32"] = f32;

    Bytes f16;
    std::vector<float> f16_vals;
    for (float v : {1.f, -0.5f, 65504.f, 1e-7f}) {
      io_test::put(f16, f16_bits(v));
      f16_vals.push_back(f16_to_f32(f16_bits(v)));
    }
    w.add_tensor("t.f16", {4}, GgmlType::kF16, f16);
    expected["t.f16"] = f16_vals;

    Bytes bf16;
    std::vector<float> bf16_vals;
    for (float v : {3.f, -1e30f, 0.1f, 7.f}) {
      io_test::put(bf16, f32_to_bf16(v));
      bf16_vals.push_back(bf16_to_f32(f32_to_bf16(v)));
    }
    w.add_tensor("t.bf16", {2, 2}, GgmlType::kBF16, bf16);
    expected["t.bf16"] = bf16_vals;

    // Two blocks each: a [2, 32] tensor.
    Bytes q8, q40, q41;
    std::vector<float> e8, e40, e41;
    for (int blk = 0; blk < 2; ++blk) {
      const float d = blk == 0 ? 0.5f : -0.125f, m = blk == 0 ? -1.f : 3.25f;
      int8_t q[32];
      uint8_t nib[32];
      for (int i = 0; i < 32; ++i) {
        q[i] = static_cast<int8_t>(i * 8 - 128 + blk);
        nib[i] = static_cast<uint8_t>((i * 7 + blk) & 15);
      }
      const Bytes b8 = q8_0_block(d, q), b40 = q4_block(d, nullptr, nib), b41 = q4_block(d, &m, nib);
      q8.insert(q8.end(), b8.begin(), b8.end());
      q40.insert(q40.end(), b40.begin(), b40.end());
      q41.insert(q41.end(), b41.begin(), b41.end());
      for (int i = 0; i < 32; ++i) {
        e8.push_back(d * q[i]);
        e40.push_back(d * (nib[i] - 8));
        e41.push_back(d * nib[i] + m);
      }
    }
    w.add_tensor("t.q8_0", {32, 2}, GgmlType::kQ8_0, q8);
    w.add_tensor("t.q4_0", {32, 2}, GgmlType::kQ4_0, q40);
    w.add_tensor("t.q4_1", {32, 2}, GgmlType::kQ4_1, q41);
    expected["t.q8_0"] = e8;
    expected["t.q4_0"] = e40;
    expected["t.q4_1"] = e41;
  }
};

Result<GgufFile> open_bytes(const std::string& dir, const std::string& name, const Bytes& b) {
  GgufTestWriter::write_file(dir + "/" + name, b);
  return GgufFile::open(dir + "/" + name);
}

void expect_error(const Result<GgufFile>& f, StatusCode code, const std::string& path, const std::string& fragment) {
  ASSERT_FALSE(f.ok()) << path << " opened";
  EXPECT_EQ(f.status().code(), code) << f.status().to_string();
  EXPECT_NE(f.status().message().find(path), std::string::npos) << f.status().message();
  EXPECT_NE(f.status().message().find(fragment), std::string::npos) << f.status().message();
}

TEST(Gguf, ReadsMetadataOfEveryType) {
  const io_test::TempDir tmp("gguf_meta");
  const std::string& dir = tmp.path;
  Sample s;
  Result<GgufFile> f = open_bytes(dir, "m.gguf", s.w.bytes());
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(*f->get_string("general.architecture"), "llama");
  EXPECT_EQ(*f->get_int("k.u8"), 200);
  EXPECT_EQ(*f->get_int("k.i8"), -100);
  EXPECT_EQ(*f->get_int("k.u16"), 60000);
  EXPECT_EQ(*f->get_int("k.i16"), -30000);
  EXPECT_EQ(*f->get_int("k.u32"), 4000000000);
  EXPECT_EQ(*f->get_int("k.i32"), -2000000000);
  EXPECT_EQ(*f->get_float("k.f32"), 0.25);
  EXPECT_EQ(*f->get_int("k.bool"), 1);
  EXPECT_EQ(f->find("k.bool")->type, VT::kBool);
  EXPECT_EQ(*f->get_string("k.str"), "héllo");
  EXPECT_EQ(*f->get_int("k.u64"), int64_t{1} << 40);
  EXPECT_EQ(*f->get_int("k.i64"), -(int64_t{1} << 40));
  EXPECT_EQ(*f->get_float("k.f64"), 1e-300);
  EXPECT_EQ(*f->get_float("k.u32"), 4e9);  // integers read as floats too
  EXPECT_EQ(*f->get_string_array("k.strs"), (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ(*f->get_int_array("k.ints"), (std::vector<int64_t>{-1, 5}));
  EXPECT_EQ(*f->get_float_array("k.floats"), (std::vector<double>{1.5, -2.0}));
  EXPECT_TRUE(f->get_int_array("k.empty")->empty());
  const GgufValue* nested = f->find("k.nested");
  ASSERT_NE(nested, nullptr);
  ASSERT_EQ(nested->array.size(), 2u);
  EXPECT_EQ(nested->array_type, VT::kArray);
  EXPECT_EQ(nested->array[0].array_type, VT::kUint8);
  EXPECT_EQ(nested->array[0].array[0].i, 1);
  EXPECT_EQ(nested->array[1].array[0].s, "x");
}

TEST(Gguf, GettersReportMissingAndWrongTypes) {
  const io_test::TempDir tmp("gguf_getters");
  const std::string& dir = tmp.path;
  Sample s;
  Result<GgufFile> f = open_bytes(dir, "g.gguf", s.w.bytes());
  ASSERT_TRUE(f.ok());
  Result<int64_t> missing = f->get_int("no.such.key");
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("no.such.key"), std::string::npos);
  EXPECT_NE(missing.status().message().find(dir + "/g.gguf"), std::string::npos);
  EXPECT_EQ(f->get_int("k.str").status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(f->get_string("k.u8").status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(f->get_string_array("k.ints").status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(f->get_int_array("k.floats").status().code(), StatusCode::kDataLoss);
  EXPECT_EQ(f->get_float("k.strs").status().code(), StatusCode::kDataLoss);
}

TEST(Gguf, DequantizesEverySupportedType) {
  const io_test::TempDir tmp("gguf_dequant");
  const std::string& dir = tmp.path;
  Sample s;
  Result<GgufFile> f = open_bytes(dir, "d.gguf", s.w.bytes());
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  ASSERT_EQ(f->tensors().size(), s.expected.size());
  const GgufTensorInfo* q = f->find_tensor("t.q4_1");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->shape, (std::vector<int64_t>{2, 32}));  // ne = {32, 2} reversed
  EXPECT_EQ(q->nbytes, 40);
  EXPECT_EQ(f->find_tensor("t.f32")->shape, (std::vector<int64_t>{2, 3}));
  for (const auto& [name, want] : s.expected) {
    SCOPED_TRACE(name);
    const GgufTensorInfo* t = f->find_tensor(name);
    ASSERT_NE(t, nullptr);
    ASSERT_EQ(t->numel(), static_cast<int64_t>(want.size()));
    std::vector<float> got(want.size());
    ASSERT_TRUE(f->dequantize(*t, DType::kF32, got.data()).ok());
    EXPECT_EQ(got, want);
    std::vector<uint16_t> h(want.size()), b(want.size());
    ASSERT_TRUE(f->dequantize(*t, DType::kF16, h.data()).ok());
    ASSERT_TRUE(f->dequantize(*t, DType::kBF16, b.data()).ok());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(h[i], f32_to_f16(want[i])) << i;
      EXPECT_EQ(b[i], f32_to_bf16(want[i])) << i;
    }
  }
  std::vector<float> out(64);
  EXPECT_EQ(f->dequantize(*q, DType::kInt8, out.data()).code(), StatusCode::kInvalidArgument);
}

TEST(Gguf, UnsupportedTypeIsUnimplementedAtDequantize) {
  const io_test::TempDir tmp("gguf_q4k");
  const std::string& dir = tmp.path;
  GgufTestWriter w;
  w.add_tensor("t.q4_k", {256}, GgmlType::kQ4_K, Bytes(144, 0));
  Result<GgufFile> f = open_bytes(dir, "k.gguf", w.bytes());
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  std::vector<float> out(256);
  Status s = f->dequantize(f->tensors()[0], DType::kF32, out.data());
  EXPECT_EQ(s.code(), StatusCode::kUnimplemented);
  EXPECT_NE(s.message().find("Q4_K"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("Q8_0, Q4_0, Q4_1"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("t.q4_k"), std::string::npos) << s.message();
}

TEST(Gguf, HonoursAlignmentAndVersion2) {
  const io_test::TempDir tmp("gguf_align");
  const std::string& dir = tmp.path;
  GgufTestWriter w;
  w.version = 2;
  w.alignment = 64;
  w.add("general.alignment", io_test::u32(64));
  w.add_f32_tensor("a", {3}, {1.f, 2.f, 3.f});
  w.add_f32_tensor("b", {2}, {4.f, 5.f});
  Result<GgufFile> f = open_bytes(dir, "a.gguf", w.bytes());
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ(f->version(), 2u);
  const GgufTensorInfo* b = f->find_tensor("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b->data) % 64, 0u);
  float out[2];
  ASSERT_TRUE(f->dequantize(*b, DType::kF32, out).ok());
  EXPECT_EQ(out[1], 5.f);

  w.alignment = 32;  // data written at 32, header says 64: offset 32 is misaligned
  expect_error(open_bytes(dir, "mis.gguf", w.bytes()), StatusCode::kDataLoss, dir + "/mis.gguf", "alignment");
}

TEST(Gguf, TruncationAtEveryByteIsDataLoss) {
  const io_test::TempDir tmp("gguf_trunc");
  const std::string& dir = tmp.path;
  Sample s;
  const Bytes full = s.w.bytes();
  const std::string path = dir + "/t.gguf";
  for (size_t cut = 0; cut < full.size(); ++cut) {
    GgufTestWriter::write_file(path, Bytes(full.begin(), full.begin() + static_cast<long>(cut)));
    Result<GgufFile> f = GgufFile::open(path);
    ASSERT_FALSE(f.ok()) << "cut at " << cut;
    ASSERT_EQ(f.status().code(), StatusCode::kDataLoss) << "cut at " << cut << ": " << f.status().to_string();
    ASSERT_NE(f.status().message().find(path), std::string::npos) << f.status().message();
  }
}

TEST(Gguf, CorruptHeadersAreCleanErrors) {
  const io_test::TempDir tmp("gguf_corrupt");
  const std::string& dir = tmp.path;
  Sample s;
  Bytes b = s.w.bytes();
  b[0] = 'X';
  expect_error(open_bytes(dir, "magic.gguf", b), StatusCode::kDataLoss, dir + "/magic.gguf", "bad magic");

  GgufTestWriter v99;
  v99.version = 99;
  expect_error(open_bytes(dir, "v99.gguf", v99.bytes()), StatusCode::kUnimplemented, dir + "/v99.gguf",
               "version 99");

  // Counts of 2^60 must be refused before anything is allocated.
  b = s.w.bytes();
  uint64_t huge = uint64_t{1} << 60;
  std::memcpy(b.data() + 8, &huge, 8);
  expect_error(open_bytes(dir, "tensors.gguf", b), StatusCode::kDataLoss, dir + "/tensors.gguf", "tensor count");
  b = s.w.bytes();
  std::memcpy(b.data() + 16, &huge, 8);
  expect_error(open_bytes(dir, "kvs.gguf", b), StatusCode::kDataLoss, dir + "/kvs.gguf", "metadata count");

  // A huge key length (the first key's length field sits right after the header).
  b = s.w.bytes();
  std::memcpy(b.data() + 24, &huge, 8);
  expect_error(open_bytes(dir, "keylen.gguf", b), StatusCode::kDataLoss, dir + "/keylen.gguf", "length");

  GgufTestWriter w;
  io_test::GgufTestValue long_string{VT::kString, {}};
  io_test::put<uint64_t>(long_string.payload, ~uint64_t{0});
  w.add("k", long_string);
  expect_error(open_bytes(dir, "strlen.gguf", w.bytes()), StatusCode::kDataLoss, dir + "/strlen.gguf", "length");

  GgufTestWriter arr;
  io_test::GgufTestValue big_array{VT::kArray, {}};
  io_test::put<uint32_t>(big_array.payload, static_cast<uint32_t>(VT::kUint64));
  io_test::put<uint64_t>(big_array.payload, huge);
  arr.add("k", big_array);
  expect_error(open_bytes(dir, "arr.gguf", arr.bytes()), StatusCode::kDataLoss, dir + "/arr.gguf", "array of");

  GgufTestWriter bad_type;
  bad_type.add("k", io_test::GgufTestValue{static_cast<VT>(77), {}});
  expect_error(open_bytes(dir, "type.gguf", bad_type.bytes()), StatusCode::kDataLoss, dir + "/type.gguf",
               "value type 77");

  GgufTestWriter deep;  // 20 nested arrays
  io_test::GgufTestValue nest = io_test::array(VT::kUint8, {});
  for (int i = 0; i < 20; ++i) nest = io_test::array(VT::kArray, {nest});
  deep.add("k", nest);
  expect_error(open_bytes(dir, "deep.gguf", deep.bytes()), StatusCode::kDataLoss, dir + "/deep.gguf", "nested");
}

TEST(Gguf, TensorInfoErrors) {
  const io_test::TempDir tmp("gguf_tinfo");
  const std::string& dir = tmp.path;
  // Data past the end: declare a 1000-element tensor but store 4 floats.
  GgufTestWriter past;
  past.add_tensor("big", {1000}, GgmlType::kF32, Bytes(16, 0));
  expect_error(open_bytes(dir, "past.gguf", past.bytes()), StatusCode::kDataLoss, dir + "/past.gguf",
               "past the end");

  GgufTestWriter blocks;  // 33 elements of Q8_0 is not whole blocks
  blocks.add_tensor("q", {33}, GgmlType::kQ8_0, Bytes(68, 0));
  expect_error(open_bytes(dir, "blocks.gguf", blocks.bytes()), StatusCode::kDataLoss, dir + "/blocks.gguf",
               "block size");

  GgufTestWriter rank;
  rank.add_tensor("r", {1, 1, 1, 1, 1}, GgmlType::kF32, Bytes(4, 0));
  expect_error(open_bytes(dir, "rank.gguf", rank.bytes()), StatusCode::kDataLoss, dir + "/rank.gguf", "rank 5");

  GgufTestWriter dims;
  dims.add_tensor("d", {uint64_t{1} << 62, 4}, GgmlType::kF32, Bytes(4, 0));
  expect_error(open_bytes(dir, "dims.gguf", dims.bytes()), StatusCode::kDataLoss, dir + "/dims.gguf",
               "impossible size");

  GgufTestWriter dup;
  dup.add_f32_tensor("x", {1}, {1.f});
  dup.add_f32_tensor("x", {1}, {2.f});
  expect_error(open_bytes(dir, "dup.gguf", dup.bytes()), StatusCode::kDataLoss, dir + "/dup.gguf", "duplicate");
}

TEST(Gguf, RandomCorruptionNeverCrashes) {
  // Flip random bytes of a valid file; whatever opens must dequantize without reading out of bounds.
  const io_test::TempDir tmp("gguf_fuzz");
  const std::string& dir = tmp.path;
  Sample s;
  const Bytes full = s.w.bytes();
  std::mt19937 rng(7);
  int opened = 0;
  for (int iter = 0; iter < 400; ++iter) {
    Bytes b = full;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) b[rng() % b.size()] = static_cast<uint8_t>(rng());
    Result<GgufFile> f = open_bytes(dir, "f.gguf", b);
    if (!f.ok()) {
      EXPECT_NE(f.status().message().find(dir + "/f.gguf"), std::string::npos) << f.status().message();
      continue;
    }
    ++opened;
    for (const auto& t : f->tensors()) {
      if (t.numel() > (1 << 20)) continue;
      std::vector<float> out(static_cast<size_t>(t.numel()));
      (void)f->dequantize(t, DType::kF32, out.data());
    }
  }
  EXPECT_GT(opened, 0);
}

}  // namespace
}  // namespace kiln
