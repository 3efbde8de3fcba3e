// Device tensors for GPU kernel tests: a checked upload (optionally converted to another dtype), a
// poisoned (0xff bytes: NaN for float types) output buffer, so that elements a kernel does not write
// fail the comparison, and a checked download of the raw bytes. CUDA test translation units only.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

#include "kiln/kernels/cuda/common/device_buffer.h"

namespace kiln::test {

inline DeviceTensor upload(const Tensor& host) {
  auto r = to_device(host);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return std::move(r).value();
}

inline DeviceTensor upload(const Tensor& host, DType dtype) {
  auto r = to_device(host, dtype);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return std::move(r).value();
}

// The device tensor's bytes, as stored (empty after a failed copy).
inline std::vector<uint8_t> download_bytes(const Tensor& device) {
  auto r = to_host(device);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  if (!r.ok()) return {};
  const uint8_t* b = static_cast<const uint8_t*>(r->tensor.data);
  return std::vector<uint8_t>(b, b + r->tensor.nbytes());
}

inline DeviceTensor poisoned(DType dtype, std::initializer_list<int64_t> shape) {
  auto r = DeviceTensor::empty(dtype, shape);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_TRUE(fill_bytes(r->tensor, 0xff).ok());
  return std::move(r).value();
}

}  // namespace kiln::test
