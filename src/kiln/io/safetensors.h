// Safetensors: reading one file (header JSON + raw little-endian data, memory-mapped) and writing
// one. Every malformation (short header, bad JSON, offsets outside the file, overlapping or
// misaligned ranges, unknown dtypes, shape/size mismatch) is a DataLoss status naming the file.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/core/tensor.h"
#include "kiln/io/mapped_file.h"

namespace kiln {

struct SafetensorsTensor {
  std::string name;
  DType dtype = DType::kF32;    // F32, F16, BF16, F8_E4M3, F8_E5M2, I8, I32, I64 are accepted
  std::vector<int64_t> shape;  // row-major
  const uint8_t* data = nullptr;
  int64_t nbytes = 0;
  Tensor view() const;  // a host view over the mapped bytes (const_cast inside; never written)
};

class SafetensorsFile {
 public:
  static Result<SafetensorsFile> open(const std::string& path);
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  const SafetensorsTensor* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return file_->path(); }

 private:
  std::shared_ptr<MappedFile> file_;
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Writes tensors (host, contiguous) in the order given.
Status write_safetensors(const std::string& path,
                         const std::vector<std::pair<std::string, Tensor>>& tensors,
                         const std::map<std::string, std::string>& metadata = {});

}  // namespace kiln
