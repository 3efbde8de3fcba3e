// CUDA RMSNorm with the fused residual add. One block per row; each thread keeps up to
// kVecsPerThread 16-byte vectors of the row in registers, so the row is read once and written
// once. Variants: bf16 activations x bf16 weight, with and without the residual.
#include <cuda_bf16.h>

#include <string>

#include "kiln/kernels/cuda/common/bf16.cuh"
#include "kiln/kernels/cuda/common/cuda_check.h"
#include "kiln/kernels/cuda/common/kernel_args.h"
#include "kiln/kernels/cuda/common/reduce.cuh"
#include "kiln/kernels/rmsnorm.h"
#include "kiln/kernels/cuda/common/pdl.cuh"

namespace kiln {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kVecsPerThread = 4;  // 4 x 8 elements per thread: hidden <= 32 * 1024

struct RmsNormParams {
  const bf16* x;     // [rows, hidden], row stride x_stride
  bf16* residual;    // [rows, hidden], row stride res_stride, or null
  const bf16* weight;  // [hidden]
  bf16* out;         // [rows, hidden], row stride out_stride
  int64_t x_stride, res_stride, out_stride;
  int num_vecs;      // hidden / 8
  float inv_hidden, eps;
};

constexpr int kMaxThreads = 1024;

template <bool kResidual>
__global__ void __launch_bounds__(kMaxThreads) rmsnorm_kernel(const __grid_constant__ RmsNormParams p) {
  cuda::pdl_wait();  // inputs come from the kernel before (programmatic dependent launch)
  cuda::pdl_trigger();
  const int64_t row = blockIdx.x;
  const bf16* x = p.x + row * p.x_stride;
  bf16* res = kResidual ? p.residual + row * p.res_stride : nullptr;
  // Issue every load of the row before the first use: x, residual and weight vectors.
  uint4 xv[kVecsPerThread], rv[kVecsPerThread], wv[kVecsPerThread];
#pragma unroll
  for (int j = 0; j < kVecsPerThread; ++j) {
    const int c = threadIdx.x + j * blockDim.x;
    if (c < p.num_vecs) {
      xv[j] = reinterpret_cast<const uint4*>(x)[c];
      if constexpr (kResidual) rv[j] = reinterpret_cast<const uint4*>(res)[c];
      wv[j] = reinterpret_cast<const uint4*>(p.weight)[c];
    }
  }
  float v[kVecsPerThread][8];
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < kVecsPerThread; ++j) {
    const int c = threadIdx.x + j * blockDim.x;
    if (c >= p.num_vecs) continue;
    cuda::bf16x8_to_f32(xv[j], v[j]);
    if constexpr (kResidual) {
      float r[8];
      cuda::bf16x8_to_f32(rv[j], r);
#pragma unroll
      for (int i = 0; i < 8; ++i) r[i] += v[j][i];
      const uint4 stored = cuda::f32_to_bf16x8(r);
      reinterpret_cast<uint4*>(res)[c] = stored;
      cuda::bf16x8_to_f32(stored, v[j]);  // normalize what the residual stream now holds
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) ss += v[j][i] * v[j][i];
  }
  const float inv_rms = rsqrtf(cuda::block_sum(ss) * p.inv_hidden + p.eps);
  bf16* out = p.out + row * p.out_stride;
#pragma unroll
  for (int j = 0; j < kVecsPerThread; ++j) {
    const int c = threadIdx.x + j * blockDim.x;
    if (c >= p.num_vecs) continue;
    float w[8], o[8];
    cuda::bf16x8_to_f32(wv[j], w);
#pragma unroll
    for (int i = 0; i < 8; ++i) o[i] = v[j][i] * inv_rms * w[i];
    reinterpret_cast<uint4*>(out)[c] = cuda::f32_to_bf16x8(o);
  }
}

template <bool kResidual>
Status launch_rmsnorm(const RmsNormArgs& a, CUstream_st* stream) {
  constexpr const char* kName = "rmsnorm_cuda";
  KILN_ASSIGN_OR_RETURN(const cuda::RowsView x, cuda::device_rows(a.x, DType::kBF16, kName, "x"));
  KILN_ASSIGN_OR_RETURN(const cuda::RowsView out, cuda::device_rows(a.out, DType::kBF16, kName, "out"));
  KILN_RETURN_IF_ERROR(cuda::expect_device(a.weight, DType::kBF16, x.cols, kName, "weight"));
  cuda::RowsView res{x.rows, x.cols, 0};
  if constexpr (kResidual) {
    KILN_ASSIGN_OR_RETURN(res, cuda::device_rows(a.residual, DType::kBF16, kName, "residual"));
  }
  const int64_t hidden = x.cols;
  if (out.rows != x.rows || out.cols != hidden || res.rows != x.rows || res.cols != hidden)
    return invalid_argument("rmsnorm_cuda: x " + a.x.shape_string() + ", residual " + a.residual.shape_string() +
                            " and out " + a.out.shape_string() + " differ in shape");
  const int64_t num_vecs = hidden / cuda::kBf16PerVec;
  if (hidden % cuda::kBf16PerVec != 0 || num_vecs > int64_t{kVecsPerThread} * kMaxThreads)
    return unimplemented("rmsnorm_cuda: hidden " + std::to_string(hidden) + " (supported: multiples of 8 up to 32768)");
  if (x.stride % 8 || out.stride % 8 || res.stride % 8 || !cuda::aligned16(a.x.data) ||
      !cuda::aligned16(a.out.data) || !cuda::aligned16(a.weight.data) || (kResidual && !cuda::aligned16(a.residual.data)))
    return invalid_argument("rmsnorm_cuda: rows must be 16-byte aligned");
  if (x.rows == 0) return ok_status();
  if (x.rows > 0x7fffffff) return out_of_range("rmsnorm_cuda: too many rows");

  RmsNormParams p{};
  p.x = static_cast<const bf16*>(a.x.data);
  p.residual = kResidual ? static_cast<bf16*>(a.residual.data) : nullptr;
  p.weight = static_cast<const bf16*>(a.weight.data);
  p.out = static_cast<bf16*>(a.out.data);
  p.x_stride = x.stride; p.res_stride = res.stride; p.out_stride = out.stride;
  p.num_vecs = static_cast<int>(num_vecs);
  p.inv_hidden = 1.0f / static_cast<float>(hidden);
  p.eps = a.eps;
  // Just enough threads (whole warps) that each holds <= kVecsPerThread vectors.
  const int threads = static_cast<int>((num_vecs + kVecsPerThread * 32 - 1) / (kVecsPerThread * 32) * 32);
  KILN_CUDA_CHECK(cuda::launch_pdl(rmsnorm_kernel<kResidual>, dim3(static_cast<unsigned>(x.rows)), dim3(threads), 0, stream, p));
  return ok_status();
}

constexpr RmsNormCudaVariant kVariants[] = {
    {DType::kBF16, DType::kBF16, true, &launch_rmsnorm<true>},
    {DType::kBF16, DType::kBF16, false, &launch_rmsnorm<false>},
};

}  // namespace

std::span<const RmsNormCudaVariant> rmsnorm_cuda_variants() { return kVariants; }

Status rmsnorm_cuda(const RmsNormArgs& a, CUstream_st* stream) {
  const bool residual = !a.residual.empty();
  for (const auto& v : kVariants)
    if (v.act == a.x.dtype && v.weight == a.weight.dtype && v.residual == residual) return v.launch(a, stream);
  std::string supported;
  for (const auto& v : kVariants)
    supported += std::string(supported.empty() ? "" : ", ") + "act " + std::string(dtype_name(v.act)) + " weight " +
                 std::string(dtype_name(v.weight)) + (v.residual ? " +residual" : "");
  return unimplemented("rmsnorm_cuda: act " + std::string(dtype_name(a.x.dtype)) + " weight " +
                       std::string(dtype_name(a.weight.dtype)) + (residual ? " +residual" : "") +
                       " (supported: " + supported + ")");
}

}  // namespace kiln
