// Host-side argument checks shared by the CUDA kernel families (no CUDA includes): device,
// dtype and shape expectations that turn into Status messages naming the kernel and tensor.
#pragma once
#include <cstdint>
#include <string>

#include "kiln/core/status.h"
#include "kiln/core/tensor.h"

namespace kiln::cuda {

// A tensor seen as rows of its last dimension: [rows, cols] with a row stride (elements).
struct RowsView {
  int64_t rows = 0, cols = 0, stride = 0;
};

// Device tensor of `dtype` whose last dimension is contiguous and whose leading dimensions
// collapse to one row index with a uniform stride.
inline Result<RowsView> device_rows(const Tensor& t, DType dtype, const char* kernel, const char* name) {
  const std::string where = std::string(kernel) + ": " + name + " ";
  if (t.empty() && t.numel() != 0) return invalid_argument(where + "is empty");
  if (t.device != Device::kCuda) return invalid_argument(where + "is not on the device: " + t.shape_string());
  if (t.dtype != dtype)
    return invalid_argument(where + "has dtype " + std::string(dtype_name(t.dtype)) + ", want " +
                            std::string(dtype_name(dtype)));
  if (t.ndim < 1) return invalid_argument(where + "has no dimensions");
  RowsView v;
  v.cols = t.shape[static_cast<size_t>(t.ndim - 1)];
  if (t.strides[static_cast<size_t>(t.ndim - 1)] != 1 && v.cols > 1)
    return invalid_argument(where + "needs a contiguous last dimension");
  v.rows = v.cols == 0 ? 0 : t.numel() / v.cols;
  v.stride = t.ndim >= 2 ? t.strides[static_cast<size_t>(t.ndim - 2)] : v.cols;
  for (int i = 0; i + 2 < t.ndim; ++i) {
    if (t.strides[static_cast<size_t>(i)] != t.strides[static_cast<size_t>(i + 1)] * t.shape[static_cast<size_t>(i + 1)])
      return invalid_argument(where + "leading dimensions do not collapse: " + t.shape_string());
  }
  return v;
}

// Contiguous device tensor of `dtype` with `numel` elements (numel < 0: any).
inline Status expect_device(const Tensor& t, DType dtype, int64_t numel, const char* kernel, const char* name) {
  const std::string where = std::string(kernel) + ": " + name + " ";
  if (t.device != Device::kCuda || t.data == nullptr)
    return invalid_argument(where + "is not a device tensor: " + t.shape_string());
  if (t.dtype != dtype)
    return invalid_argument(where + "has dtype " + std::string(dtype_name(t.dtype)) + ", want " +
                            std::string(dtype_name(dtype)));
  if (!t.is_contiguous()) return invalid_argument(where + "is not contiguous");
  if (numel >= 0 && t.numel() != numel)
    return invalid_argument(where + "has " + std::to_string(t.numel()) + " elements, want " + std::to_string(numel));
  return ok_status();
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace kiln::cuda
