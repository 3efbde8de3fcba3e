// CUDA MoE routing: softmax over each token's router logits, top-k by repeated warp argmax (ties
// to the lower expert id, as the CPU's stable sort), optional renormalization. One warp per
// token; lane l holds experts l, l + 32, ... (num_experts <= 256). Variants: f32 logits given, or
// the router GEMM fused in front (bf16 x and router weights; 16-byte loads, f32 sums in a fixed
// order, so deterministic): one block per 8 tokens (prefill-sized batches: the router weights read
// once a block), one block per token (the default), or (an alternative row for sm_90, measured
// slower) one thread-block cluster of kClusterBlocks blocks per token, each block one share of the
// experts, the logits gathered in block 0's shared memory through distributed shared memory.
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cfloat>
#include <string>

#include "kiln/kernels/cuda/common/cuda_check.h"
#include "kiln/kernels/cuda/common/kernel_args.h"
#include "kiln/kernels/cuda/common/reduce.cuh"
#include "kiln/kernels/moe.h"
#include "kiln/kernels/cuda/common/pdl.cuh"
#include "kiln/kernels/cuda/common/bf16.cuh"
#include "kiln/kernels/cuda/moe/route_token.cuh"

namespace kiln {
namespace {

using moe_route::kMaxExperts;
using moe_route::route_token;
constexpr int kWarpsPerBlock = 4;

constexpr int kRouterWarps = 16;  // 512 threads: one 16-byte vector of x per thread at hidden 4096 (all loads in flight)
constexpr int kClusterBlocks = 8;   // blocks per token in the cluster variant (the portable cluster size)
constexpr int kClusterWarps = 4;    // warps per block there
constexpr int64_t kClusterMaxTokens = 256;  // above this the one-block-per-token kernel fills the GPU as well

struct MoeRouteParams {
  const float* logits;  // [n, num_experts]
  float* logits_out;    // fused variant: where the computed logits go ([n, num_experts])
  const __nv_bfloat16* x;  // fused: [n, hidden], row stride x_stride
  const __nv_bfloat16* w;  // fused: [num_experts, hidden], row stride w_stride
  int64_t x_stride, w_stride;
  int hidden;
  int32_t* topk_ids;    // [n, k]
  float* topk_weights;  // [n, k]
  int64_t n;
  int num_experts, k;
  bool renormalize;
};

__global__ void __launch_bounds__(kWarpsPerBlock * 32) moe_route_kernel(const __grid_constant__ MoeRouteParams p) {
  cuda::pdl_wait();  // inputs come from the kernel before (programmatic dependent launch)
  cuda::pdl_trigger();
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (t >= p.n) return;
  route_token(p, t, p.logits + t * p.num_experts, threadIdx.x & 31);
}

// Block b: tokens [b kTokens, b kTokens + kTokens): logits[t, e] = x[t] . w[e] for every expert,
// then warps 0 .. kTokens - 1 route one token each. Thread i owns the 16-byte vectors i, i + 512,
// ... of the hidden dimension for all experts (a handful of independent loads in flight per
// thread, not a chain of them), experts in groups of kExpertGroup: per-thread partials -> warp
// sums -> the 16 warps' sums in a fixed order. A thread's weight vectors serve all kTokens tokens
// (one read of the router weights per block instead of per token: at prefill sizes the
// block-per-token row re-read them from L2 for every token); each token's sums run in the same
// order whatever kTokens is, so the rows give the same bits.
constexpr int kExpertGroup = 8;
template <int kTokens>
__global__ void __launch_bounds__(kRouterWarps * 32) moe_router_kernel(const __grid_constant__ MoeRouteParams p) {
  __shared__ float logits[kTokens][kMaxExperts];
  __shared__ float warp_part[kRouterWarps][kTokens * kExpertGroup];
  cuda::pdl_wait();
  cuda::pdl_trigger();
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * kTokens;
  const int tokens = static_cast<int>(p.n - t0 < kTokens ? p.n - t0 : kTokens);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, vecs = p.hidden / 8;
  for (int e0 = 0; e0 < p.num_experts; e0 += kExpertGroup) {
    float acc[kTokens][kExpertGroup];
#pragma unroll
    for (int i = 0; i < kTokens; ++i)
#pragma unroll
      for (int j = 0; j < kExpertGroup; ++j) acc[i][j] = 0.f;
    for (int v = threadIdx.x; v < vecs; v += kRouterWarps * 32) {
      uint4 wv[kExpertGroup];
#pragma unroll
      for (int j = 0; j < kExpertGroup; ++j)
        wv[j] = e0 + j < p.num_experts ? __ldg(reinterpret_cast<const uint4*>(p.w + (e0 + j) * p.w_stride) + v) : uint4{};
#pragma unroll
      for (int i = 0; i < kTokens; ++i) {
        if (i >= tokens) break;
        float xf[8];
        // x: the previous kernel's (PDL): not ld.global.nc
        cuda::bf16x8_to_f32(__ldcg(reinterpret_cast<const uint4*>(p.x + (t0 + i) * p.x_stride) + v), xf);
#pragma unroll
        for (int j = 0; j < kExpertGroup; ++j) {
          float wf[8];
          cuda::bf16x8_to_f32(wv[j], wf);
#pragma unroll
          for (int e = 0; e < 8; ++e) acc[i][j] = fmaf(xf[e], wf[e], acc[i][j]);
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kTokens; ++i)
#pragma unroll
      for (int j = 0; j < kExpertGroup; ++j) {
        const float s = cuda::warp_sum(acc[i][j]);
        if (lane == 0) warp_part[warp][i * kExpertGroup + j] = s;
      }
    __syncthreads();
    const int i = threadIdx.x / kExpertGroup, j = threadIdx.x % kExpertGroup;
    if (i < tokens && e0 + j < p.num_experts) {
      float s = 0.f;
      for (int w = 0; w < kRouterWarps; ++w) s += warp_part[w][i * kExpertGroup + j];
      logits[i][e0 + j] = s;
      p.logits_out[(t0 + i) * p.num_experts + e0 + j] = s;
    }
    __syncthreads();
  }
  if (warp < tokens) route_token(p, t0 + warp, logits[warp], lane);
}

// Cluster (kClusterBlocks blocks) c = token t. Block r computes the logits of experts r, r + C, ...
// (each: per-thread partials over the 16-byte vectors i, i + 128, ... -> warp sums -> the warps'
// sums in a fixed order) and stores them into block 0's shared memory; after the cluster barrier
// block 0's warp 0 routes. Grid: [n * kClusterBlocks], cluster dims set at launch.
__global__ void __launch_bounds__(kClusterWarps * 32) moe_router_cluster_kernel(const __grid_constant__ MoeRouteParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  __shared__ float logits[kMaxExperts];
  __shared__ float warp_part[kClusterWarps];
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const int64_t t = blockIdx.x / kClusterBlocks;
  float* leader = cluster.map_shared_rank(logits, 0);
  cuda::pdl_wait();
  cuda::pdl_trigger();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, vecs = p.hidden / 8;
  const uint4* x = reinterpret_cast<const uint4*>(p.x + t * p.x_stride);
  for (int e = rank; e < p.num_experts; e += kClusterBlocks) {
    const uint4* w = reinterpret_cast<const uint4*>(p.w + e * p.w_stride);
    float acc = 0.f;
#pragma unroll 4
    for (int v = threadIdx.x; v < vecs; v += kClusterWarps * 32) {
      float xf[8], wf[8];
      cuda::bf16x8_to_f32(__ldcg(x + v), xf);  // x: the previous kernel's (PDL): not ld.global.nc
      cuda::bf16x8_to_f32(__ldg(w + v), wf);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc = fmaf(xf[i], wf[i], acc);
    }
    acc = cuda::warp_sum(acc);
    if (lane == 0) warp_part[warp] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
      float s = 0.f;
      for (int i = 0; i < kClusterWarps; ++i) s += warp_part[i];
      leader[e] = s;
      p.logits_out[t * p.num_experts + e] = s;
    }
    __syncthreads();
  }
  cluster.sync();  // every block's logits are in block 0's shared memory (release / acquire)
  if (rank == 0 && warp == 0) route_token(p, t, logits, lane);
#else
  __trap();  // launched only where device_has_clusters() (sm_90+)
#endif
}

bool device_has_clusters() {
  static const bool yes = [] {
    int device = 0, major = 0;
    return cudaGetDevice(&device) == cudaSuccess &&
           cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess && major >= 9;
  }();
  return yes;
}

// The checks and fields both variants share: logits [n, experts], ids / weights [n, k].
Result<MoeRouteParams> route_params(const MoeRouteArgs& a) {
  constexpr const char* kName = "moe_route_cuda";
  if (a.router_logits.ndim != 2) return invalid_argument("moe_route_cuda: router_logits must be [n, experts]");
  const int64_t n = a.router_logits.shape[0], e = a.router_logits.shape[1], k = a.topk_ids.dim(-1);
  KILN_RETURN_IF_ERROR(cuda::expect_device(a.router_logits, DType::kF32, n * e, kName, "router_logits"));
  if (k <= 0 || k > e) return invalid_argument("moe_route_cuda: want 0 < k <= experts");
  KILN_RETURN_IF_ERROR(cuda::expect_device(a.topk_ids, DType::kInt32, n * k, kName, "topk_ids"));
  KILN_RETURN_IF_ERROR(cuda::expect_device(a.topk_weights, DType::kF32, n * k, kName, "topk_weights"));
  if (e > kMaxExperts) return unimplemented("moe_route_cuda: " + std::to_string(e) + " experts (supported: up to 256)");
  if (n > 0x7fffffff) return out_of_range("moe_route_cuda: too many tokens");
  MoeRouteParams p{};
  p.logits = static_cast<const float*>(a.router_logits.data);
  p.topk_ids = static_cast<int32_t*>(a.topk_ids.data);
  p.topk_weights = static_cast<float*>(a.topk_weights.data);
  p.n = n;
  p.num_experts = static_cast<int>(e);
  p.k = static_cast<int>(k);
  p.renormalize = a.renormalize;
  return p;
}

// The fused variants' extra checks and fields: x [n, hidden], router_weight [experts, hidden] bf16.
Result<MoeRouteParams> router_params(const MoeRouteArgs& a) {
  constexpr const char* kName = "moe_route_cuda";
  KILN_ASSIGN_OR_RETURN(MoeRouteParams p, route_params(a));
  if (a.x.ndim != 2 || a.router_weight.ndim != 2)
    return invalid_argument("moe_route_cuda: want x [n, hidden] and router_weight [experts, hidden]");
  KILN_ASSIGN_OR_RETURN(const cuda::RowsView xv, cuda::device_rows(a.x, DType::kBF16, kName, "x"));
  KILN_ASSIGN_OR_RETURN(const cuda::RowsView wv, cuda::device_rows(a.router_weight, DType::kBF16, kName, "router_weight"));
  const int64_t hidden = a.x.shape[1];
  if (xv.rows != p.n || wv.rows != p.num_experts || wv.cols != hidden)
    return invalid_argument("moe_route_cuda: x " + a.x.shape_string() + " / router_weight " + a.router_weight.shape_string() +
                            " do not fit router_logits " + a.router_logits.shape_string());
  if (hidden % 8 || xv.stride % 8 || wv.stride % 8 || !cuda::aligned16(a.x.data) || !cuda::aligned16(a.router_weight.data))
    return unimplemented("moe_route_cuda: the fused router needs hidden and row strides multiples of 8, 16-byte aligned rows");
  p.logits = nullptr;
  p.logits_out = static_cast<float*>(a.router_logits.data);
  p.x = static_cast<const __nv_bfloat16*>(a.x.data);
  p.w = static_cast<const __nv_bfloat16*>(a.router_weight.data);
  p.x_stride = xv.stride;
  p.w_stride = wv.stride;
  p.hidden = static_cast<int>(hidden);
  return p;
}

template <int kTokens>
Status launch_moe_router(const MoeRouteArgs& a, CUstream_st* stream) {
  KILN_ASSIGN_OR_RETURN(const MoeRouteParams p, router_params(a));
  if (p.n == 0) return ok_status();
  const auto blocks = static_cast<unsigned>((p.n + kTokens - 1) / kTokens);
  KILN_CUDA_CHECK(cuda::launch_pdl(moe_router_kernel<kTokens>, dim3(blocks), dim3(kRouterWarps * 32), 0, stream, p));
  return ok_status();
}

Status launch_moe_router_cluster(const MoeRouteArgs& a, CUstream_st* stream) {
  KILN_ASSIGN_OR_RETURN(MoeRouteParams p, router_params(a));
  if (!device_has_clusters()) return unimplemented("moe_route_cuda: the cluster router needs sm_90 or newer");
  if (p.n > kClusterMaxTokens)
    return invalid_argument("moe_route_cuda: the cluster router takes up to " + std::to_string(kClusterMaxTokens) + " tokens");
  if (p.n == 0) return ok_status();
  cudaLaunchConfig_t lc{};
  lc.gridDim = dim3(static_cast<unsigned>(p.n * kClusterBlocks));
  lc.blockDim = dim3(kClusterWarps * 32);
  lc.stream = stream;
  cudaLaunchAttribute attrs[2]{};
  attrs[0].id = cudaLaunchAttributeClusterDimension;
  attrs[0].val.clusterDim.x = kClusterBlocks;
  attrs[0].val.clusterDim.y = 1;
  attrs[0].val.clusterDim.z = 1;
  attrs[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attrs[1].val.programmaticStreamSerializationAllowed = 1;
  lc.attrs = attrs;
  lc.numAttrs = 2;
  void* args[] = {&p};
  KILN_CUDA_CHECK(cudaLaunchKernelExC(&lc, reinterpret_cast<const void*>(moe_router_cluster_kernel), args));
  return ok_status();
}

Status launch_moe_route(const MoeRouteArgs& a, CUstream_st* stream) {
  if (!a.x.empty() || !a.router_weight.empty()) return invalid_argument("moe_route_cuda: this variant takes logits, not x");
  KILN_ASSIGN_OR_RETURN(const MoeRouteParams p, route_params(a));
  if (p.n == 0) return ok_status();
  const int64_t blocks = (p.n + kWarpsPerBlock - 1) / kWarpsPerBlock;
  KILN_CUDA_CHECK(cuda::launch_pdl(moe_route_kernel, dim3(static_cast<unsigned>(blocks)), dim3(kWarpsPerBlock * 32), 0, stream, p));
  return ok_status();
}

// moe_route_cuda takes the first row whose dtypes match, whose [min_tokens, max_tokens] (0: no
// upper end) admits the batch and whose needs_clusters the device meets.
// 8 tokens a block from 1536 tokens: H100, elementwise_bench (router weights out of L2), us per
// call at hidden 4096, 8 experts: 2048 tokens 22.1 vs 41.5 (block per token); 1064 tokens 21.0 vs
// 24.7; 256 tokens 11.2 vs 6.7. In the Mixtral fp8 prefill step (ncu) 2048 tokens 26.7 vs 34.0 us.
// The 8-token row holds 128 registers a thread (the 512-thread cap) and spills ~150 bytes in its
// loop; measured as is. A 4-token row (125 registers: one 512-thread block per SM too) was faster
// in the bench at 1064 tokens (20.4 us) but slower in the 1064-token mixed step (21.7 vs 19.5 us):
// not kept.
// The cluster row is an alternative, not the default: on the H100 (elementwise_bench, 4096 x 8
// experts, router weights rotated out of L2, back-to-back PDL launches) it took 10.3 us per call at
// 1 token against the block row's 8.7 us, so the dot products were not what made the router slow.
constexpr MoeRouteCudaVariant kVariants[] = {
    {"logits given", DType::kF32, DType::kF32, &launch_moe_route, 0, 0, false},  // x unused
    {"router 8 tokens a block", DType::kF32, DType::kBF16, &launch_moe_router<8>, 1536, 0, false},
    {"router block per token", DType::kF32, DType::kBF16, &launch_moe_router<1>, 0, 0, false},
    {"router cluster per token", DType::kF32, DType::kBF16, &launch_moe_router_cluster, 0, kClusterMaxTokens, true},
};

}  // namespace

std::span<const MoeRouteCudaVariant> moe_route_cuda_variants() { return kVariants; }

Status moe_route_cuda(const MoeRouteArgs& a, CUstream_st* stream) {
  const DType x = a.x.empty() ? DType::kF32 : a.x.dtype;
  const int64_t n = a.router_logits.ndim == 2 ? a.router_logits.shape[0] : 0;
  for (const auto& v : kVariants)
    if (v.logits == a.router_logits.dtype && v.x == x && n >= v.min_tokens && (v.max_tokens == 0 || n <= v.max_tokens) &&
        (!v.needs_clusters || device_has_clusters()))
      return v.launch(a, stream);
  return unimplemented("moe_route_cuda: logits " + std::string(dtype_name(a.router_logits.dtype)) + ", x " +
                       std::string(dtype_name(x)) + " (supported: f32 logits given, or f32 logits from bf16 x)");
}

}  // namespace kiln
