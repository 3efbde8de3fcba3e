// MappedFile: a read-only memory map of a whole file (weights are read straight from the page
// cache, never copied unless converted).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "kiln/core/status.h"

namespace kiln {

class MappedFile {
 public:
  MappedFile() = default;
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  // Errors name the file: "path: no such file", "path: is a directory", ...
  static Result<MappedFile> open(const std::string& path);

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

}  // namespace kiln
