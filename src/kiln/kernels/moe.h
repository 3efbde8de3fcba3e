// Mixture-of-experts routing: softmax over the router logits, top-k experts per token, and
// optional renormalization of the k weights to sum to one (Mixtral). The expert MLPs themselves
// run as linear layers over the tokens routed to each expert (see models/mixtral.cc).
#pragma once
#include "kiln/core/status.h"
#include "kiln/core/tensor.h"

namespace kiln {

struct MoeRouteArgs {
  Tensor router_logits;  // [num_tokens, num_experts] f32
  Tensor topk_ids;       // [num_tokens, k] int32 out (descending weight; ties -> lower id first)
  Tensor topk_weights;   // [num_tokens, k] f32 out
  bool renormalize = true;
  // Optional router GEMM in the same call: x [num_tokens, hidden] and router_weight
  // [num_experts, hidden] (f32 on the CPU, bf16 on the GPU); router_logits = x @ router_weight^T
  // (f32) is computed and written first. Saves the decode step a GEMM launch per MoE layer.
  Tensor x, router_weight;
};

Status moe_route_cpu(const MoeRouteArgs& args);

// ---- CUDA (kernels/cuda/moe/moe_route.cu) --------------------------------------------------
// The same routing on device tensors (logits f32, ids int32, weights f32): one warp per token,
// num_experts <= 256. Ids match moe_route_cpu's (descending probability, ties to the lower id).
// Permutation, grouped expert GEMM and un-permutation: kernels/moe_cuda.h.
}  // namespace kiln
#include <span>
struct CUstream_st;  // cudaStream_t, without the CUDA headers
namespace kiln {

// Variants: logits given (x = kF32 means "no router GEMM"), or x / router_weight bf16 (the dot
// products by one block per several tokens at prefill sizes, one block per token, or (an
// alternative moe_route_cuda does not pick: measured slower) a cluster of blocks per token on
// sm_90; then one warp routes as the logits variant).
// moe_route_cuda takes the first row whose dtypes match, whose [min_tokens, max_tokens] admits the
// batch and whose needs_clusters the device meets. Called directly, a row takes any batch (the
// cluster row at most max_tokens).
struct MoeRouteCudaVariant {
  const char* name;
  DType logits;
  DType x;
  Status (*launch)(const MoeRouteArgs& args, CUstream_st* stream);
  int64_t min_tokens;   // the fewest tokens moe_route_cuda picks the row for
  int64_t max_tokens;   // 0: any batch; else the most tokens moe_route_cuda picks the row for
  bool needs_clusters;  // thread-block clusters (sm_90+)
};
std::span<const MoeRouteCudaVariant> moe_route_cuda_variants();
Status moe_route_cuda(const MoeRouteArgs& args, CUstream_st* stream);

}  // namespace kiln
