// Device memory for the CUDA backend, free of CUDA includes so host code can hold it:
// DeviceBuffer (RAII cudaMalloc/cudaFree, never managed memory), DeviceTensor (a buffer plus a
// contiguous Tensor view with device = kCuda), and copies between host and device tensors that
// convert the element type on the host side (f32 host data -> bf16 on the device and back).
#pragma once
#include <cstdint>
#include <initializer_list>

#include "kiln/core/status.h"
#include "kiln/core/tensor.h"

struct CUstream_st;

namespace kiln {

bool cuda_available();  // at least one CUDA device is present and usable
// Streaming multiprocessors of the current device, queried once per process (132 when the query fails).
int cuda_sm_count();
// A one-line description of device 0 ("NVIDIA H100 80GB HBM3, 132 SMs, sm_90"), or why none.
std::string cuda_device_summary();

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  static Result<DeviceBuffer> alloc(int64_t nbytes);
  DeviceBuffer(DeviceBuffer&& o) noexcept : data_(o.data_), size_(o.size_) { o.data_ = nullptr; o.size_ = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();

  void* data() const { return data_; }
  int64_t size() const { return size_; }

 private:
  void* data_ = nullptr;
  int64_t size_ = 0;
};

struct DeviceTensor {
  DeviceBuffer buffer;
  Tensor tensor;  // contiguous, device = kCuda
  static Result<DeviceTensor> empty(DType dtype, std::initializer_list<int64_t> shape);
  static Result<DeviceTensor> empty(DType dtype, const int64_t* shape, int ndim);
};

// A device copy of a contiguous host tensor, converted to `dtype` (float dtypes among
// themselves; int32 only to int32).
Result<DeviceTensor> to_device(const Tensor& host, DType dtype);
inline Result<DeviceTensor> to_device(const Tensor& host) { return to_device(host, host.dtype); }
// A host copy of a contiguous device tensor, converted to `dtype`. Synchronous.
Result<HostTensor> to_host(const Tensor& device, DType dtype);
inline Result<HostTensor> to_host(const Tensor& device) { return to_host(device, device.dtype); }
// Overwrites every byte of a device tensor (tests poison outputs: 0xff is NaN in bf16 and f32).
Status fill_bytes(const Tensor& device, uint8_t value, CUstream_st* stream = nullptr);
Status cuda_synchronize(CUstream_st* stream = nullptr);

}  // namespace kiln
