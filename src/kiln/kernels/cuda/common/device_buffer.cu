// CUDA error formatting, device probing, DeviceBuffer and host <-> device tensor copies.
#include "kiln/kernels/cuda/common/device_buffer.h"

#include <cstring>
#include <string>
#include <utility>

#include "kiln/kernels/cuda/common/cuda_check.h"

namespace kiln {

Status cuda_error(cudaError_t err, const char* expr, const char* file, int line) {
  return internal_error(std::string(cudaGetErrorName(err)) + " (" + cudaGetErrorString(err) + ") in " +
                        expr + " at " + file + ":" + std::to_string(line));
}

Status cublas_error(cublasStatus_t err, const char* expr, const char* file, int line) {
  return internal_error(std::string("cuBLAS status ") + std::to_string(static_cast<int>(err)) + " in " +
                        expr + " at " + file + ":" + std::to_string(line));
}

bool cuda_available() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

int cuda_sm_count() {
  static const int n = [] {
    int device = 0, count = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || count <= 0)
      return 132;
    return count;
  }();
  return n;
}

std::string cuda_device_summary() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) return std::string("no CUDA device: ") + cudaGetErrorString(err);
  if (n == 0) return "no CUDA device";
  cudaDeviceProp p{};
  if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) return "CUDA device 0: properties unavailable";
  return std::string(p.name) + ", " + std::to_string(p.multiProcessorCount) + " SMs, sm_" +
         std::to_string(p.major) + std::to_string(p.minor) + ", " +
         std::to_string(p.totalGlobalMem >> 20) + " MiB, L2 " + std::to_string(p.l2CacheSize >> 20) + " MiB";
}

Result<DeviceBuffer> DeviceBuffer::alloc(int64_t nbytes) {
  DeviceBuffer b;
  if (nbytes < 0) return invalid_argument("DeviceBuffer::alloc of a negative size");
  if (nbytes > 0) {
    const cudaError_t err = cudaMalloc(&b.data_, static_cast<size_t>(nbytes));
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear the sticky-free allocation error
      return resource_exhausted("cudaMalloc of " + std::to_string(nbytes) + " bytes: " + cudaGetErrorString(err));
    }
  }
  b.size_ = nbytes;
  return std::move(b);
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (data_) cudaFree(data_);
    data_ = o.data_; size_ = o.size_;
    o.data_ = nullptr; o.size_ = 0;
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() {
  if (data_) cudaFree(data_);
}

Result<DeviceTensor> DeviceTensor::empty(DType dtype, const int64_t* shape, int ndim) {
  DeviceTensor t;
  t.tensor = Tensor::view(nullptr, dtype, shape, ndim, Device::kCuda);
  KILN_ASSIGN_OR_RETURN(t.buffer, DeviceBuffer::alloc(t.tensor.nbytes()));
  t.tensor.data = t.buffer.data();
  return std::move(t);
}

Result<DeviceTensor> DeviceTensor::empty(DType dtype, std::initializer_list<int64_t> shape) {
  return empty(dtype, shape.begin(), static_cast<int>(shape.size()));
}

namespace {
// Host-side conversion between dtypes (identity for equal dtypes, including int types).
Status convert_host(const Tensor& src, void* dst, DType dst_type) {
  if (src.dtype == dst_type) {
    std::memcpy(dst, src.data, static_cast<size_t>(src.nbytes()));
    return ok_status();
  }
  return convert(src.data, src.dtype, dst, dst_type, src.numel());
}
}  // namespace

Result<DeviceTensor> to_device(const Tensor& host, DType dtype) {
  if (host.device != Device::kCpu || !host.is_contiguous())
    return invalid_argument("to_device: want a contiguous host tensor, got " + host.shape_string());
  KILN_ASSIGN_OR_RETURN(DeviceTensor d, DeviceTensor::empty(dtype, host.shape.data(), host.ndim));
  if (d.tensor.nbytes() == 0) return std::move(d);
  const void* src = host.data;
  HostBuffer staging;
  if (dtype != host.dtype) {
    staging = HostBuffer(d.tensor.nbytes());
    KILN_RETURN_IF_ERROR(convert_host(host, staging.data(), dtype));
    src = staging.data();
  }
  KILN_CUDA_CHECK(cudaMemcpy(d.tensor.data, src, static_cast<size_t>(d.tensor.nbytes()), cudaMemcpyHostToDevice));
  return std::move(d);
}

Result<HostTensor> to_host(const Tensor& device, DType dtype) {
  if (device.device != Device::kCuda || !device.is_contiguous())
    return invalid_argument("to_host: want a contiguous device tensor, got " + device.shape_string());
  HostTensor raw = HostTensor::zeros(device.dtype, device.shape.data(), device.ndim);
  if (device.nbytes() > 0)
    KILN_CUDA_CHECK(cudaMemcpy(raw.tensor.data, device.data, static_cast<size_t>(device.nbytes()), cudaMemcpyDeviceToHost));
  if (dtype == device.dtype) return std::move(raw);
  HostTensor out = HostTensor::zeros(dtype, device.shape.data(), device.ndim);
  KILN_RETURN_IF_ERROR(convert_host(raw.tensor, out.tensor.data, dtype));
  return std::move(out);
}

Status fill_bytes(const Tensor& device, uint8_t value, CUstream_st* stream) {
  if (device.device != Device::kCuda) return invalid_argument("fill_bytes: not a device tensor");
  KILN_CUDA_CHECK(cudaMemsetAsync(device.data, value, static_cast<size_t>(device.nbytes()), stream));
  return ok_status();
}

Status cuda_synchronize(CUstream_st* stream) {
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
  return ok_status();
}

}  // namespace kiln
