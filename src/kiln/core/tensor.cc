// Tensor view helpers and aligned host storage.
#include "kiln/core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace kiln {

std::string_view device_name(Device d) { return d == Device::kCpu ? "cpu" : "cuda"; }

Tensor Tensor::view(void* data, DType dtype, const int64_t* shape, int ndim, Device device) {
  Tensor t;
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  t.ndim = ndim;
  int64_t stride = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    t.shape[static_cast<size_t>(i)] = shape[i];
    t.strides[static_cast<size_t>(i)] = stride;
    stride *= shape[i];
  }
  return t;
}

Tensor Tensor::view(void* data, DType dtype, std::initializer_list<int64_t> shape, Device device) {
  return view(data, dtype, shape.begin(), static_cast<int>(shape.size()), device);
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[static_cast<size_t>(i)];
  return ndim == 0 ? 0 : n;
}

bool Tensor::is_contiguous() const {
  int64_t stride = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    if (shape[static_cast<size_t>(i)] != 1 && strides[static_cast<size_t>(i)] != stride) return false;
    stride *= shape[static_cast<size_t>(i)];
  }
  return true;
}

Tensor Tensor::slice0(int64_t begin, int64_t end) const {
  Tensor t = *this;
  t.data = static_cast<char*>(data) + dtype_bytes(dtype, begin * strides[0]);
  t.shape[0] = end - begin;
  return t;
}

Result<Tensor> Tensor::reshape(std::initializer_list<int64_t> new_shape) const {
  if (!is_contiguous()) return invalid_argument("reshape of a non-contiguous tensor " + shape_string());
  int64_t n = 1;
  for (int64_t d : new_shape) n *= d;
  if (n != numel()) return invalid_argument("reshape " + shape_string() + " to a different size");
  Tensor t = view(data, dtype, new_shape, device);
  t.scales = scales;
  return t;
}

std::string Tensor::shape_string() const {
  std::string s = "[";
  for (int i = 0; i < ndim; ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[static_cast<size_t>(i)]);
  }
  s += "] ";
  s += dtype_name(dtype);
  s += " ";
  s += device_name(device);
  return s;
}

void HostBuffer::Free::operator()(void* p) const { std::free(p); }

HostBuffer::HostBuffer(int64_t nbytes) : size_(nbytes) {
  const size_t rounded = static_cast<size_t>((nbytes + 63) / 64 * 64);
  void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, rounded == 0 ? 64 : rounded);
  data_.reset(p);
}

HostTensor HostTensor::zeros(DType dtype, const int64_t* shape, int ndim) {
  HostTensor h;
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  h.buffer = HostBuffer(dtype_bytes(dtype, n));
  h.tensor = Tensor::view(h.buffer.data(), dtype, shape, ndim);
  return h;
}

HostTensor HostTensor::zeros(DType dtype, std::initializer_list<int64_t> shape) {
  return zeros(dtype, shape.begin(), static_cast<int>(shape.size()));
}

}  // namespace kiln
