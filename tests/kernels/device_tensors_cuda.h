// Device tensors for GPU kernel tests: a checked upload and a poisoned (0xff bytes: NaN for float
// types) output buffer, so that elements a kernel does not write fail the comparison. CUDA test
// translation units only.
#pragma once
#include <gtest/gtest.h>

#include <initializer_list>
#include <utility>

#include "kiln/kernels/cuda/common/device_buffer.h"

namespace kiln::test {

inline DeviceTensor upload(const Tensor& host) {
  auto r = to_device(host);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return std::move(r).value();
}

inline DeviceTensor poisoned(DType dtype, std::initializer_list<int64_t> shape) {
  auto r = DeviceTensor::empty(dtype, shape);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_TRUE(fill_bytes(r->tensor, 0xff).ok());
  return std::move(r).value();
}

}  // namespace kiln::test
