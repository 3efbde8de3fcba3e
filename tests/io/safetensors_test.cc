// Safetensors: write/read round trip, and every kind of damage is a DataLoss naming the file.
#include "kiln/io/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "gguf_test_writer.h"

namespace kiln {
namespace {

using io_test::Bytes;

Bytes read_all(const std::string& path) {
  Result<MappedFile> f = MappedFile::open(path);
  if (!f.ok()) return {};
  return Bytes(f->data(), f->data() + f->size());
}

// A file from a header text and data bytes.
std::string write_raw(const std::string& dir, const std::string& name, std::string header, const Bytes& data) {
  header.append((8 - header.size() % 8) % 8, ' ');  // as the Python writer does, so data stays aligned
  Bytes b;
  io_test::put<uint64_t>(b, header.size());
  b.insert(b.end(), header.begin(), header.end());
  b.insert(b.end(), data.begin(), data.end());
  io_test::GgufTestWriter::write_file(dir + "/" + name, b);
  return dir + "/" + name;
}

void expect_data_loss(const std::string& path, const std::string& fragment) {
  Result<SafetensorsFile> f = SafetensorsFile::open(path);
  ASSERT_FALSE(f.ok()) << path << " opened";
  EXPECT_EQ(f.status().code(), StatusCode::kDataLoss) << f.status().to_string();
  EXPECT_NE(f.status().message().find(path), std::string::npos) << f.status().message();
  EXPECT_NE(f.status().message().find(fragment), std::string::npos) << f.status().message();
}

struct Sample {
  std::vector<float> a{1.f, -2.5f, 3.f, 0.f, 1e-20f, 6.f};
  std::vector<uint16_t> b{0x3f80, 0xc000, 0x7f80, 0x0001};  // bf16
  std::vector<int32_t> c{7, -8, 9, 2147483647};
  std::vector<int8_t> d{-128, 0, 127};
  std::vector<std::pair<std::string, Tensor>> tensors() {
    return {{"a", Tensor::view(a.data(), DType::kF32, {2, 3})},
            {"b.weight", Tensor::view(b.data(), DType::kBF16, {4})},
            {"c", Tensor::view(c.data(), DType::kInt32, {2, 1, 2})},
            {"d", Tensor::view(d.data(), DType::kInt8, {3})}};
  }
};

TEST(Safetensors, RoundTrip) {
  const io_test::TempDir tmp("st_roundtrip");
  const std::string& dir = tmp.path;
  Sample s;
  const std::string path = dir + "/x.safetensors";
  ASSERT_TRUE(write_safetensors(path, s.tensors(), {{"format", "pt"}}).ok());

  const Bytes raw = read_all(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, raw.data(), 8);
  EXPECT_EQ(header_len % 8, 0u);
  EXPECT_TRUE(raw[8 + header_len - 1] == '}' || raw[8 + header_len - 1] == ' ');

  Result<SafetensorsFile> f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  ASSERT_EQ(f->tensors().size(), 4u);
  EXPECT_EQ(f->metadata().at("format"), "pt");
  for (const auto& [name, t] : s.tensors()) {
    const SafetensorsTensor* r = f->find(name);
    ASSERT_NE(r, nullptr) << name;
    EXPECT_EQ(r->dtype, t.dtype);
    ASSERT_EQ(static_cast<int>(r->shape.size()), t.ndim);
    for (int i = 0; i < t.ndim; ++i) EXPECT_EQ(r->shape[static_cast<size_t>(i)], t.shape[static_cast<size_t>(i)]);
    ASSERT_EQ(r->nbytes, t.nbytes());
    EXPECT_EQ(std::memcmp(r->data, t.data, static_cast<size_t>(t.nbytes())), 0) << name;
    Tensor v = r->view();
    EXPECT_EQ(v.numel(), t.numel());
  }
  EXPECT_EQ(f->find("missing"), nullptr);
}

TEST(Safetensors, ReadsPythonStyleHeader) {
  const io_test::TempDir tmp("st_python");
  const std::string& dir = tmp.path;
  Bytes data(4 * 2 + 2 * 2);
  const float v[2] = {1.5f, -3.f};
  std::memcpy(data.data(), v, 8);
  const std::string path = write_raw(dir, "p.safetensors",
                                     R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                     R"("h":{"dtype":"F16","shape":[1,2],"data_offsets":[8,12]},)"
                                     R"("__metadata__":{"format":"pt"}})",
                                     data);
  Result<SafetensorsFile> f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_FLOAT_EQ(f->find("w")->view().ptr<float>()[1], -3.f);
  EXPECT_EQ(f->find("h")->dtype, DType::kF16);
}

TEST(Safetensors, TruncatedFilesAreDataLoss) {
  const io_test::TempDir tmp("st_truncated");
  const std::string& dir = tmp.path;
  Sample s;
  const std::string path = dir + "/full.safetensors";
  ASSERT_TRUE(write_safetensors(path, s.tensors()).ok());
  const Bytes raw = read_all(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, raw.data(), 8);
  const size_t h = static_cast<size_t>(8 + header_len);
  for (size_t cut : {size_t{0}, size_t{3}, size_t{7}, size_t{8}, size_t{20}, h - 1, h, h + 5, raw.size() - 1}) {
    const std::string p = dir + "/cut_" + std::to_string(cut) + ".safetensors";
    io_test::GgufTestWriter::write_file(p, Bytes(raw.begin(), raw.begin() + static_cast<long>(cut)));
    expect_data_loss(p, "");
  }
}

TEST(Safetensors, CorruptHeadersAreDataLoss) {
  const io_test::TempDir tmp("st_corrupt");
  const std::string& dir = tmp.path;
  const Bytes data(16, 0);
  struct Case {
    const char* name;
    std::string header;
    const char* fragment;
  };
  const Case cases[] = {
      {"bad_json", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})", "malformed JSON"},
      {"not_object", R"([1,2,3])", "not an object"},
      {"bad_dtype", R"({"w":{"dtype":"F128","shape":[2],"data_offsets":[0,8]}})", "unknown dtype 'F128'"},
      {"size_mismatch", R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", "need 12"},
      {"past_end", R"({"w":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}})", "outside the data section"},
      {"reversed", R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", "outside the data section"},
      {"negative_shape", R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", "non-negative"},
      {"string_shape", R"({"w":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})", "shape"},
      {"no_offsets", R"({"w":{"dtype":"F32","shape":[2]}})", "data_offsets"},
      {"overlap", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", "overlap"},
      {"misaligned", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[2,10]}})", "aligned"},
      {"huge_shape", R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}})", "larger than the file"},
      {"bad_metadata", R"({"__metadata__":[1]})", "__metadata__"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    expect_data_loss(write_raw(dir, std::string(c.name) + ".safetensors", c.header, data), c.fragment);
  }
  // A header length larger than the file, and one above the 100 MB limit.
  Bytes b;
  io_test::put<uint64_t>(b, 1000);
  b.push_back('{');
  io_test::GgufTestWriter::write_file(dir + "/long.safetensors", b);
  expect_data_loss(dir + "/long.safetensors", "truncated");
  b.clear();
  io_test::put<uint64_t>(b, ~uint64_t{0});
  io_test::GgufTestWriter::write_file(dir + "/huge.safetensors", b);
  expect_data_loss(dir + "/huge.safetensors", "100 MB");
}

TEST(Safetensors, MissingFileIsNotFound) {
  Result<SafetensorsFile> f = SafetensorsFile::open("/nonexistent/kiln/x.safetensors");
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), StatusCode::kNotFound);
  EXPECT_NE(f.status().message().find("/nonexistent/kiln/x.safetensors"), std::string::npos);
}

TEST(Safetensors, WriteRejectsUnsupportedTensors) {
  const io_test::TempDir tmp("st_write_err");
  const std::string& dir = tmp.path;
  uint8_t packed[2] = {0, 0};
  Status s = write_safetensors(dir + "/x.safetensors", {{"q", Tensor::view(packed, DType::kInt4, {4})}});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  float v[4] = {};
  Tensor strided = Tensor::view(v, DType::kF32, {2, 2});
  strided.strides = {1, 2, 0, 0};
  s = write_safetensors(dir + "/y.safetensors", {{"t", strided}});
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  s = write_safetensors("/nonexistent/kiln/dir/x.safetensors", {});
  EXPECT_FALSE(s.ok());
}

TEST(Safetensors, RandomCorruptionNeverCrashes) {
  const io_test::TempDir tmp("st_fuzz");
  const std::string& dir = tmp.path;
  Sample s;
  ASSERT_TRUE(write_safetensors(dir + "/full.safetensors", s.tensors(), {{"format", "pt"}}).ok());
  const Bytes full = read_all(dir + "/full.safetensors");
  std::mt19937 rng(11);
  for (int iter = 0; iter < 400; ++iter) {
    Bytes b = full;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < flips; ++k) b[rng() % b.size()] = static_cast<uint8_t>(rng() % 2 ? rng() : "0123456789[]{},\"-"[rng() % 17]);
    io_test::GgufTestWriter::write_file(dir + "/f.safetensors", b);
    Result<SafetensorsFile> f = SafetensorsFile::open(dir + "/f.safetensors");
    if (!f.ok()) {
      EXPECT_NE(f.status().message().find(dir + "/f.safetensors"), std::string::npos) << f.status().message();
      continue;
    }
    // Every accepted range lies inside the file (an address sanitizer build checks the reads).
    for (const auto& t : f->tensors()) {
      ASSERT_LE(t.nbytes, static_cast<int64_t>(b.size()));
      volatile uint8_t sink = 0;
      for (int64_t i = 0; i < t.nbytes; ++i) sink = sink + t.data[i];
    }
  }
}

}  // namespace
}  // namespace kiln
