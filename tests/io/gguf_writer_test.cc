// write_gguf_metadata: every value type (nested arrays too) reads back through GgufFile::open.
#include "kiln/io/gguf_writer.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

namespace kiln {
namespace {

GgufValue scalar(GgufValueType t, int64_t i, double f = 0, const std::string& s = "") {
  GgufValue v;
  v.type = t;
  v.i = i;
  v.f = f;
  v.s = s;
  return v;
}

TEST(GgufWriter, MetadataRoundTrip) {
  std::map<std::string, GgufValue> m;
  m["a.u8"] = scalar(GgufValueType::kUint8, 200);
  m["a.i8"] = scalar(GgufValueType::kInt8, -100);
  m["a.u16"] = scalar(GgufValueType::kUint16, 60000);
  m["a.i16"] = scalar(GgufValueType::kInt16, -30000);
  m["a.u32"] = scalar(GgufValueType::kUint32, 4000000000ll);
  m["a.i32"] = scalar(GgufValueType::kInt32, -2000000000);
  m["a.u64"] = scalar(GgufValueType::kUint64, 1ll << 40);
  m["a.i64"] = scalar(GgufValueType::kInt64, -(1ll << 40));
  m["a.f32"] = scalar(GgufValueType::kFloat32, 0, 0.25);
  m["a.f64"] = scalar(GgufValueType::kFloat64, 0, 1e-300);
  m["a.bool"] = scalar(GgufValueType::kBool, 1);
  m["a.str"] = scalar(GgufValueType::kString, 0, 0, "héllo");
  GgufValue arr;
  arr.type = GgufValueType::kArray;
  arr.array_type = GgufValueType::kString;
  arr.array = {scalar(GgufValueType::kString, 0, 0, "x"), scalar(GgufValueType::kString, 0, 0, "")};
  m["tokenizer.ggml.tokens"] = arr;
  GgufValue nested;
  nested.type = GgufValueType::kArray;
  nested.array_type = GgufValueType::kArray;
  GgufValue inner;
  inner.type = GgufValueType::kArray;
  inner.array_type = GgufValueType::kFloat32;
  inner.array = {scalar(GgufValueType::kFloat32, 0, 1.5), scalar(GgufValueType::kFloat32, 0, -2)};
  nested.array = {inner, inner};
  m["a.nested"] = nested;
  const std::string path = (std::filesystem::temp_directory_path() / ("kiln_gguf_writer_" + std::to_string(::getpid()) + ".gguf")).string();
  ASSERT_TRUE(write_gguf_metadata(path, m).ok());
  auto g = GgufFile::open(path);
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  EXPECT_TRUE(g->tensors().empty());
  ASSERT_EQ(g->metadata().size(), m.size());
  for (const auto& [k, want] : m) {
    const GgufValue* got = g->find(k);
    ASSERT_NE(got, nullptr) << k;
    EXPECT_EQ(got->type, want.type) << k;
    EXPECT_EQ(got->i, want.i) << k;
    EXPECT_EQ(got->f, want.f) << k;
    EXPECT_EQ(got->s, want.s) << k;
    EXPECT_EQ(got->array.size(), want.array.size()) << k;
  }
  EXPECT_EQ(*g->get_string_array("tokenizer.ggml.tokens"), (std::vector<std::string>{"x", ""}));
  EXPECT_EQ(g->find("a.nested")->array[1].array[0].f, 1.5);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace kiln
