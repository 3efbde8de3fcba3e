// CUDA MoE routing: softmax over each token's router logits, top-k by repeated warp argmax (ties
// to the lower expert id, as the CPU's stable sort), optional renormalization. One warp per
// token; lane l holds experts l, l + 32, ... (num_experts <= 256). Variants: f32 logits.
#include <cfloat>
#include <string>

#include "kiln/kernels/cuda/common/cuda_check.h"
#include "kiln/kernels/cuda/common/kernel_args.h"
#include "kiln/kernels/cuda/common/reduce.cuh"
#include "kiln/kernels/moe.h"
#include "kiln/kernels/cuda/common/pdl.cuh"

namespace kiln {
namespace {

constexpr int kPerLane = 8;
constexpr int kMaxExperts = 32 * kPerLane;
constexpr int kWarpsPerBlock = 4;

struct MoeRouteParams {
  const float* logits;  // [n, num_experts]
  int32_t* topk_ids;    // [n, k]
  float* topk_weights;  // [n, k]
  int64_t n;
  int num_experts, k;
  bool renormalize;
};

// The better of (value, id) pairs: larger value, then lower id. Taken ids carry value -1.
__device__ __forceinline__ void keep_better(float& v, int& id, float ov, int oid) {
  if (ov > v || (ov == v && oid < id)) { v = ov; id = oid; }
}

__global__ void __launch_bounds__(kWarpsPerBlock * 32) moe_route_kernel(const __grid_constant__ MoeRouteParams p) {
  cuda::pdl_wait();  // inputs come from the kernel before (programmatic dependent launch)
  cuda::pdl_trigger();
  const int lane = threadIdx.x & 31;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (t >= p.n) return;
  const float* logits = p.logits + t * p.num_experts;
  float prob[kPerLane];
  float mx = -FLT_MAX;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int e = lane + 32 * j;
    prob[j] = e < p.num_experts ? logits[e] : -FLT_MAX;
    mx = fmaxf(mx, prob[j]);
  }
  mx = cuda::warp_max(mx);
  float sum = 0.f;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    prob[j] = lane + 32 * j < p.num_experts ? expf(prob[j] - mx) : 0.f;
    sum += prob[j];
  }
  sum = cuda::warp_sum(sum);
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) prob[j] = lane + 32 * j < p.num_experts ? prob[j] / sum : -1.f;

  int32_t* ids = p.topk_ids + t * p.k;
  float* weights = p.topk_weights + t * p.k;
  float top_sum = 0.f;
  for (int r = 0; r < p.k; ++r) {
    float best = -2.f;
    int best_id = 0x7fffffff;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) keep_better(best, best_id, prob[j], lane + 32 * j);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, best, o);
      const int oid = __shfl_xor_sync(0xffffffffu, best_id, o);
      keep_better(best, best_id, ov, oid);
    }
#pragma unroll
    for (int j = 0; j < kPerLane; ++j)
      if (lane + 32 * j == best_id) prob[j] = -1.f;  // taken
    if (lane == 0) {
      ids[r] = best_id;
      weights[r] = best;
      top_sum += best;  // in choice order, as the CPU
    }
  }
  if (lane == 0 && p.renormalize)
    for (int r = 0; r < p.k; ++r) weights[r] = weights[r] / top_sum;
}

Status launch_moe_route(const MoeRouteArgs& a, CUstream_st* stream) {
  constexpr const char* kName = "moe_route_cuda";
  if (a.router_logits.ndim != 2) return invalid_argument("moe_route_cuda: router_logits must be [n, experts]");
  const int64_t n = a.router_logits.shape[0], e = a.router_logits.shape[1], k = a.topk_ids.dim(-1);
  KILN_RETURN_IF_ERROR(cuda::expect_device(a.router_logits, DType::kF32, n * e, kName, "router_logits"));
  if (k <= 0 || k > e) return invalid_argument("moe_route_cuda: want 0 < k <= experts");
  KILN_RETURN_IF_ERROR(cuda::expect_device(a.topk_ids, DType::kInt32, n * k, kName, "topk_ids"));
  KILN_RETURN_IF_ERROR(cuda::expect_device(a.topk_weights, DType::kF32, n * k, kName, "topk_weights"));
  if (e > kMaxExperts)
    return unimplemented("moe_route_cuda: " + std::to_string(e) + " experts (supported: up to 256)");
  if (n == 0) return ok_status();
  MoeRouteParams p{};
  p.logits = static_cast<const float*>(a.router_logits.data);
  p.topk_ids = static_cast<int32_t*>(a.topk_ids.data);
  p.topk_weights = static_cast<float*>(a.topk_weights.data);
  p.n = n;
  p.num_experts = static_cast<int>(e);
  p.k = static_cast<int>(k);
  p.renormalize = a.renormalize;
  const int64_t blocks = (n + kWarpsPerBlock - 1) / kWarpsPerBlock;
  if (blocks > 0x7fffffff) return out_of_range("moe_route_cuda: too many tokens");
  KILN_CUDA_CHECK(cuda::launch_pdl(moe_route_kernel, dim3(static_cast<unsigned>(blocks)), dim3(kWarpsPerBlock * 32), 0, stream, p));
  KILN_CUDA_CHECK_LAUNCH();
  return ok_status();
}

constexpr MoeRouteCudaVariant kVariants[] = {
    {DType::kF32, &launch_moe_route},
};

}  // namespace

std::span<const MoeRouteCudaVariant> moe_route_cuda_variants() { return kVariants; }

Status moe_route_cuda(const MoeRouteArgs& a, CUstream_st* stream) {
  for (const auto& v : kVariants)
    if (v.logits == a.router_logits.dtype) return v.launch(a, stream);
  return unimplemented("moe_route_cuda: logits " + std::string(dtype_name(a.router_logits.dtype)) +
                       " (supported: f32)");
}

}  // namespace kiln
