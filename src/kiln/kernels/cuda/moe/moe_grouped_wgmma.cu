// Launch side of the one-launch grouped MoE GEMM (the kernel: moe_grouped_wgmma.cuh): argument
// checks, the tensor maps (x, one per expert), a persistent grid of one CTA per SM, PDL.
#include <cuda.h>
#include <cuda_runtime.h>

#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "kiln/kernels/cuda/common/cuda_check.h"
#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/cuda/common/kernel_args.h"
#include "kiln/kernels/cuda/common/sm90.h"
#include "kiln/kernels/cuda/moe/moe_grouped_wgmma.cuh"
#include "kiln/kernels/moe_cuda.h"

namespace kiln {
namespace {

namespace mw = cuda::moe_wgmma;
static_assert(mw::kMaxExperts == kMoeGroupedWgmmaMaxExperts);

// [outer, inner] e4m3 rows of `inner` bytes; boxes of 128 bytes x box_rows rows, 128-byte swizzle.
Status map_rows(CUtensorMap& map, const void* data, int64_t inner, int64_t outer, uint32_t box_rows) {
  PFN_cuTensorMapEncodeTiled_v12000 encode = cuda::tensor_map_encoder();
  if (!encode) return internal_error("moe_grouped_wgmma_cuda: cuTensorMapEncodeTiled is not available");
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(inner), static_cast<cuuint64_t>(outer)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(inner)};
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(mw::kBlockK), box_rows}, unit[2] = {1, 1};
  const CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, const_cast<void*>(data), dims, strides, box, unit,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    return internal_error("moe_grouped_wgmma_cuda: cuTensorMapEncodeTiled failed (" + std::to_string(static_cast<int>(r)) + ")");
  return ok_status();
}

// The experts' tensor maps and scale pointers of one weight set, in device memory, encoded once: per
// call the host then encodes only x's map (the grouped path waits on the host for the offsets, so
// host time per call is GPU idle time). Keyed by every expert's weight and scale pointer and the
// shape, so an entry found is the same maps. Entries live as long as the process (a few KB each).
struct WeightMaps {
  void* device = nullptr;  // [experts] CUtensorMap, then [experts] const float*
  const CUtensorMap* maps() const { return static_cast<const CUtensorMap*>(device); }
  const float* const* scales(size_t experts) const {
    return reinterpret_cast<const float* const*>(static_cast<const char*>(device) + experts * sizeof(CUtensorMap));
  }
};

Result<WeightMaps> weight_maps(const MoeGroupedWgmmaArgs& a, int64_t n, int64_t k, CUstream_st* stream) {
  static std::mutex mu;
  static std::map<std::vector<uintptr_t>, WeightMaps> cache;
  std::vector<uintptr_t> key = {static_cast<uintptr_t>(n), static_cast<uintptr_t>(k)};
  for (size_t i = 0; i < a.weights.size(); ++i)
    key.push_back(reinterpret_cast<uintptr_t>(a.weights[i].data)), key.push_back(reinterpret_cast<uintptr_t>(a.weight_scales[i].data));
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  const size_t e = a.weights.size(), bytes = e * (sizeof(CUtensorMap) + sizeof(float*));
  std::vector<unsigned char> host(bytes);
  for (size_t i = 0; i < e; ++i) {
    CUtensorMap m;
    KILN_RETURN_IF_ERROR(map_rows(m, a.weights[i].data, k, n, mw::kBlockN));
    std::memcpy(host.data() + i * sizeof(CUtensorMap), &m, sizeof m);
    const float* sp = a.weight_scales[i].ptr<float>();
    std::memcpy(host.data() + e * sizeof(CUtensorMap) + i * sizeof(float*), &sp, sizeof sp);
  }
  WeightMaps w;
  KILN_CUDA_CHECK(cudaMalloc(&w.device, bytes));  // 128-byte aligned: the maps' 64-byte alignment holds
  const cudaError_t copy = cudaMemcpyAsync(w.device, host.data(), bytes, cudaMemcpyHostToDevice, stream);
  const cudaError_t done = copy == cudaSuccess ? cudaStreamSynchronize(stream) : copy;  // host buffer goes away
  if (done != cudaSuccess) {
    cudaFree(w.device);
    return internal_error(std::string("moe_grouped_wgmma_cuda: tensor map upload: ") + cudaGetErrorString(done));
  }
  cache.emplace(std::move(key), w);
  return w;
}

Status check(const MoeGroupedWgmmaArgs& a) {
  const std::string f = "moe_grouped_wgmma_cuda: ";
  const size_t e = a.weights.size();
  if (e == 0 || e > static_cast<size_t>(mw::kMaxExperts) || a.weight_scales.size() != e)
    return invalid_argument(f + std::to_string(e) + " experts, " + std::to_string(a.weight_scales.size()) +
                            " scale tensors (want 1.." + std::to_string(mw::kMaxExperts) + ", one scale tensor each)");
  if (a.x.device != Device::kCuda || a.x.dtype != DType::kFp8E4M3 || a.x.ndim != 2 || !a.x.is_contiguous())
    return invalid_argument(f + "x must be a contiguous 2-D fp8 e4m3 cuda tensor, got " + a.x.shape_string());
  const int64_t rows = a.x.shape[0], k = a.x.shape[1];
  if (a.x_scale.device != Device::kCuda || a.x_scale.dtype != DType::kF32 || a.x_scale.numel() != rows || !a.x_scale.is_contiguous())
    return invalid_argument(f + "x_scale must be [rows] f32 on cuda, got " + a.x_scale.shape_string());
  if (a.offsets.device != Device::kCuda || a.offsets.dtype != DType::kInt32 || a.offsets.numel() != static_cast<int64_t>(e + 1) ||
      !a.offsets.is_contiguous())
    return invalid_argument(f + "offsets must be [experts + 1] int32 on cuda, got " + a.offsets.shape_string());
  if (k % 16 != 0 || k <= 0 || rows >= (int64_t{1} << 31)) return invalid_argument(f + "k must be a positive multiple of 16");
  const Tensor& w0 = a.weights[0];
  const int64_t n = w0.ndim == 2 ? w0.shape[0] : -1;
  if (n <= 0 || n % 2 != 0) return invalid_argument(f + "weights must be [n, k] with n even, got " + w0.shape_string());
  if (a.y.device != Device::kCuda || a.y.dtype != DType::kBF16 || a.y.ndim != 2 || a.y.shape[0] != rows || a.y.shape[1] != n ||
      !a.y.is_contiguous())
    return invalid_argument(f + "y must be [rows, n] = [" + std::to_string(rows) + ", " + std::to_string(n) +
                            "] contiguous bf16 on cuda, got " + a.y.shape_string());
  if (!cuda::aligned16(a.x.data) || (reinterpret_cast<uintptr_t>(a.y.data) & 3) != 0)
    return invalid_argument(f + "x must be 16-byte aligned and y 4-byte aligned");
  for (size_t i = 0; i < e; ++i) {
    const Tensor &w = a.weights[i], &s = a.weight_scales[i];
    if (w.device != Device::kCuda || w.dtype != DType::kFp8E4M3 || w.ndim != 2 || w.shape[0] != n || w.shape[1] != k ||
        !w.is_contiguous() || !cuda::aligned16(w.data))
      return invalid_argument(f + "expert " + std::to_string(i) + ": weights must be [" + std::to_string(n) + ", " +
                              std::to_string(k) + "] contiguous 16-byte aligned fp8 e4m3 on cuda, got " + w.shape_string());
    if (s.device != Device::kCuda || s.dtype != DType::kF32 || s.numel() != n || !s.is_contiguous() ||
        (reinterpret_cast<uintptr_t>(s.data) & 7) != 0)
      return invalid_argument(f + "expert " + std::to_string(i) + ": per-channel scales [" + std::to_string(n) +
                              "] f32 wanted (per-tensor scales take the cuBLASLt path), got " + s.shape_string());
  }
  return ok_status();
}

}  // namespace

bool moe_grouped_wgmma_available() { return cuda::device_is_sm90(); }

Status moe_grouped_wgmma_cuda(const MoeGroupedWgmmaArgs& a, CUstream_st* stream) {
  KILN_RETURN_IF_ERROR(check(a));
  if (!moe_grouped_wgmma_available()) return unimplemented("moe_grouped_wgmma_cuda: needs an sm_90 (Hopper) GPU");
  const int64_t rows = a.x.shape[0], k = a.x.shape[1], n = a.weights[0].shape[0];
  if (rows == 0) return ok_status();
  mw::Params p{};
  KILN_RETURN_IF_ERROR(map_rows(p.x_map, a.x.data, k, rows, mw::kBlockM));
  KILN_ASSIGN_OR_RETURN(const WeightMaps wm, weight_maps(a, n, k, stream));
  p.w_map = wm.maps();
  p.w_scale = wm.scales(a.weights.size());
  p.x_scale = a.x_scale.ptr<float>();
  p.offsets = a.offsets.ptr<int32_t>();
  p.y = static_cast<__nv_bfloat16*>(a.y.data);
  p.num_experts = static_cast<int>(a.weights.size());
  p.n = static_cast<int>(n);
  p.k = static_cast<int>(k);
  p.rows = static_cast<int>(rows);
  static const cudaError_t attr = cudaFuncSetAttribute(mw::grouped_fp8_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                       mw::kSmemBytes);
  if (attr != cudaSuccess) return internal_error(std::string("moe_grouped_wgmma_cuda: ") + cudaGetErrorString(attr));
  void* args[] = {&p};
  KILN_CUDA_CHECK(cuda::launch_pdl(reinterpret_cast<const void*>(mw::grouped_fp8_kernel), dim3(static_cast<unsigned>(cuda_sm_count())),
                                   dim3(mw::kThreads), mw::kSmemBytes, stream, args));
  return ok_status();
}

}  // namespace kiln
