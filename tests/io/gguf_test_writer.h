// A tiny GGUF writer for tests: metadata of any type (nested arrays included), tensors with raw
// block bytes, and knobs for damaged files (version, data alignment).
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "kiln/io/gguf.h"

namespace kiln::io_test {

using Bytes = std::vector<uint8_t>;

template <typename T>
void put(Bytes& b, T v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  b.insert(b.end(), p, p + sizeof(T));
}
inline void put_string(Bytes& b, const std::string& s) {
  put<uint64_t>(b, s.size());
  b.insert(b.end(), s.begin(), s.end());
}

// An encoded metadata value: its type tag and payload.
struct GgufTestValue {
  GgufValueType type;
  Bytes payload;
};
template <typename T>
GgufTestValue scalar(GgufValueType type, T v) {
  GgufTestValue out{type, {}};
  put(out.payload, v);
  return out;
}
inline GgufTestValue str(const std::string& s) {
  GgufTestValue out{GgufValueType::kString, {}};
  put_string(out.payload, s);
  return out;
}
inline GgufTestValue array(GgufValueType elem, const std::vector<GgufTestValue>& items) {
  GgufTestValue out{GgufValueType::kArray, {}};
  put<uint32_t>(out.payload, static_cast<uint32_t>(elem));
  put<uint64_t>(out.payload, items.size());
  for (const auto& it : items) out.payload.insert(out.payload.end(), it.payload.begin(), it.payload.end());
  return out;
}
inline GgufTestValue u32(uint32_t v) { return scalar(GgufValueType::kUint32, v); }
inline GgufTestValue f32v(float v) { return scalar(GgufValueType::kFloat32, v); }

class GgufTestWriter {
 public:
  uint32_t version = 3;
  uint64_t alignment = 32;  // must match general.alignment when that key is added

  void add(const std::string& key, const GgufTestValue& v) {
    put_string(kv_, key);
    put<uint32_t>(kv_, static_cast<uint32_t>(v.type));
    kv_.insert(kv_.end(), v.payload.begin(), v.payload.end());
    ++kv_count_;
  }
  // ne: GGUF order (ne[0] innermost). data: the raw bytes of the tensor.
  void add_tensor(const std::string& name, std::vector<uint64_t> ne, GgmlType type, Bytes data) {
    tensors_.push_back({name, std::move(ne), type, std::move(data)});
  }
  void add_f32_tensor(const std::string& name, std::vector<uint64_t> ne, const std::vector<float>& v) {
    Bytes b(v.size() * 4);
    std::memcpy(b.data(), v.data(), b.size());
    add_tensor(name, std::move(ne), GgmlType::kF32, std::move(b));
  }

  Bytes bytes() const {
    Bytes b;
    put<uint32_t>(b, 0x46554747u);  // "GGUF"
    put<uint32_t>(b, version);
    put<uint64_t>(b, tensors_.size());
    put<uint64_t>(b, kv_count_);
    b.insert(b.end(), kv_.begin(), kv_.end());
    uint64_t offset = 0;
    std::vector<uint64_t> offsets;
    for (const auto& t : tensors_) {
      put_string(b, t.name);
      put<uint32_t>(b, static_cast<uint32_t>(t.ne.size()));
      for (uint64_t n : t.ne) put<uint64_t>(b, n);
      put<uint32_t>(b, static_cast<uint32_t>(t.type));
      put<uint64_t>(b, offset);
      offsets.push_back(offset);
      offset += (t.data.size() + alignment - 1) / alignment * alignment;
    }
    b.resize((b.size() + alignment - 1) / alignment * alignment, 0);
    const size_t data_start = b.size();
    for (size_t i = 0; i < tensors_.size(); ++i) {
      b.resize(data_start + offsets[i], 0);
      b.insert(b.end(), tensors_[i].data.begin(), tensors_[i].data.end());
    }
    return b;
  }

  static void write_file(const std::string& path, const Bytes& b) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  }
  void write(const std::string& path) const { write_file(path, bytes()); }

 private:
  struct Tensor {
    std::string name;
    std::vector<uint64_t> ne;
    GgmlType type;
    Bytes data;
  };
  Bytes kv_;
  uint64_t kv_count_ = 0;
  std::vector<Tensor> tensors_;
};

// A fresh, empty temporary directory, removed again at the end of the test. Prefers /dev/shm
// (the corruption tests write thousands of small files) unless TMPDIR is set.
struct TempDir {
  std::string path;
  explicit TempDir(const std::string& name) {
    namespace fs = std::filesystem;
    std::error_code ec;
    fs::path root = fs::temp_directory_path(ec);
    if (!std::getenv("TMPDIR") && fs::is_directory("/dev/shm", ec)) root = "/dev/shm";
    const fs::path p = root / ("kiln_io_" + name + "_" + std::to_string(::getpid()));
    fs::remove_all(p, ec);
    fs::create_directories(p, ec);
    path = p.string();
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

}  // namespace kiln::io_test
