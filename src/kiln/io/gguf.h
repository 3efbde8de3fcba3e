// GGUF v3 reader: metadata key/values, tensor infos, and dequantization of F32, F16, BF16, Q8_0,
// Q4_0 and Q4_1 tensors to a float dtype. Memory-mapped; every malformation is a DataLoss status
// naming the file. The tokenizer reads its vocabulary from metadata() ("tokenizer.ggml.*").
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/core/tensor.h"
#include "kiln/io/mapped_file.h"

namespace kiln {

enum class GgmlType : uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8, kQ8_1 = 9,
  kQ2_K = 10, kQ3_K = 11, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14, kQ8_K = 15, kBF16 = 30,
};
const char* ggml_type_name(GgmlType t);

enum class GgufValueType : uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5, kFloat32 = 6,
  kBool = 7, kString = 8, kArray = 9, kUint64 = 10, kInt64 = 11, kFloat64 = 12,
};

struct GgufValue {
  GgufValueType type = GgufValueType::kUint32;
  GgufValueType array_type = GgufValueType::kUint32;  // element type when type == kArray
  int64_t i = 0;      // every integer type and bool
  double f = 0.0;     // float32 / float64
  std::string s;      // string
  std::vector<GgufValue> array;
};

struct GgufTensorInfo {
  std::string name;
  GgmlType type = GgmlType::kF32;
  std::vector<int64_t> shape;  // row-major (GGUF's ne[] reversed: ne[0] is the last dim here)
  const uint8_t* data = nullptr;
  int64_t nbytes = 0;
  int64_t numel() const;
};

class GgufFile {
 public:
  static Result<GgufFile> open(const std::string& path);

  uint32_t version() const { return version_; }
  const std::string& path() const { return file_->path(); }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const GgufValue* find(const std::string& key) const;
  // Typed getters; errors name the file and key.
  Result<std::string> get_string(const std::string& key) const;
  Result<int64_t> get_int(const std::string& key) const;
  Result<double> get_float(const std::string& key) const;
  Result<std::vector<std::string>> get_string_array(const std::string& key) const;
  Result<std::vector<double>> get_float_array(const std::string& key) const;
  Result<std::vector<int64_t>> get_int_array(const std::string& key) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(const std::string& name) const;

  // Dequantizes a whole tensor into out (numel elements of dst, contiguous). dst: f32/f16/bf16.
  Status dequantize(const GgufTensorInfo& t, DType dst, void* out) const;

 private:
  std::shared_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> index_;
};

}  // namespace kiln
