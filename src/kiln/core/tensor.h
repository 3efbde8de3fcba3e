// Tensor: a non-owning view (data, dtype, device, shape, strides) over host or device memory, and
// HostBuffer, the owning storage for host tensors. Quantized weights (int8, int4, fp8) carry
// their scales in GroupScales. Strides are in elements; int4 rows must be contiguous.
#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>

#include "kiln/core/dtype.h"

namespace kiln {

enum class Device : uint8_t { kCpu, kCuda };
std::string_view device_name(Device d);

constexpr int kMaxDims = 4;

// Scales of a quantized tensor, applied along its last dimension.
//   group_size > 0:  one scale per group_size consecutive elements of a row
//                    ([rows, cols / group_size] scales, row-major);
//   group_size == 0: one scale per row (per output channel), [rows] scales;
//   group_size < 0:  one scale for the whole tensor, [1] scale.
struct GroupScales {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t group_size = 0;
  const void* zeros = nullptr;  // optional asymmetric zero points, same layout as data, f32
};

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::kF32;
  Device device = Device::kCpu;
  int ndim = 0;
  std::array<int64_t, kMaxDims> shape{};
  std::array<int64_t, kMaxDims> strides{};  // in elements
  GroupScales scales{};                     // only for quantized dtypes

  // A contiguous view.
  static Tensor view(void* data, DType dtype, std::initializer_list<int64_t> shape,
                     Device device = Device::kCpu);
  static Tensor view(void* data, DType dtype, const int64_t* shape, int ndim,
                     Device device = Device::kCpu);

  int64_t dim(int i) const { return shape[static_cast<size_t>(i < 0 ? ndim + i : i)]; }
  int64_t numel() const;
  int64_t nbytes() const { return dtype_bytes(dtype, numel()); }
  bool is_contiguous() const;
  bool empty() const { return data == nullptr; }

  template <typename T> T* ptr() const { return static_cast<T*>(data); }
  // Row i of a contiguous 2-D (or flattened leading dims) tensor.
  template <typename T> T* row(int64_t i) const {
    return reinterpret_cast<T*>(static_cast<char*>(data) + dtype_bytes(dtype, i * strides[ndim - 2]));
  }

  // Views over a sub-range of dimension 0 and a reshape of a contiguous tensor.
  Tensor slice0(int64_t begin, int64_t end) const;
  Result<Tensor> reshape(std::initializer_list<int64_t> shape) const;

  std::string shape_string() const;  // "[2, 3] bf16 cpu"
};

// Owning, 64-byte aligned host memory.
class HostBuffer {
 public:
  HostBuffer() = default;
  explicit HostBuffer(int64_t nbytes);
  void* data() const { return data_.get(); }
  int64_t size() const { return size_; }

 private:
  struct Free { void operator()(void* p) const; };
  std::unique_ptr<void, Free> data_;
  int64_t size_ = 0;
};

// A host tensor that owns its memory.
struct HostTensor {
  HostBuffer buffer;
  Tensor tensor;
  static HostTensor zeros(DType dtype, std::initializer_list<int64_t> shape);
  static HostTensor zeros(DType dtype, const int64_t* shape, int ndim);
};

}  // namespace kiln
