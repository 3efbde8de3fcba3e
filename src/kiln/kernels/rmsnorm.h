// RMSNorm, optionally fused with the residual add that precedes it in a pre-norm decoder:
//   if residual: residual += x; out = rmsnorm(residual) * weight   (residual updated in place)
//   else:        out = rmsnorm(x) * weight
// Variants (CPU): f32 activations, f32/f16/bf16 weight.
#pragma once
#include "kiln/core/status.h"
#include "kiln/core/tensor.h"
#include "kiln/kernels/moe.h"

namespace kiln {

struct RmsNormArgs {
  Tensor x;         // [num_tokens, hidden] f32
  Tensor residual;  // [num_tokens, hidden] f32, or empty
  Tensor weight;    // [hidden]
  Tensor out;       // [num_tokens, hidden] f32 (may alias x)
  float eps = 1e-5f;
  // CUDA only, optional fusions (rmsnorm_cuda_variants rows with combine / quant):
  // combine: x holds k rows per token, [num_tokens * k, hidden], summed into the token's row as
  //   x[t] = bf16(sum_j slot_weights[t, j] * x[t * k + j])   (moe_unpermute_cuda's arithmetic:
  //   the MoE output of a decode step added to the residual without its own kernel)
  Tensor slot_weights;  // [num_tokens, k] f32, or empty
  // quant: out also quantized per row to fp8 e4m3 (quantize_fp8_cuda's bits on the bf16 out): the
  //   pre-quantized x of an fp8 GEMM after the norm (moe_decode_gemm_cuda's x_scale)
  Tensor out_q;      // [num_tokens, hidden] fp8 e4m3, contiguous, or empty
  Tensor out_scale;  // [num_tokens] f32, or empty
  // route: the MoE router on out in the same kernel (moe_route_cuda's fused-router arithmetic: the
  //   same logits bits for hidden <= 4096): router_weight, router_logits, topk_ids, topk_weights and
  //   renormalize of *route are used (its x must be empty: out is routed).
  const MoeRouteArgs* route = nullptr;
  // CUDA only: the residual was written two or more kernels back on the stream, and the kernel
  // just before this one waits for its own predecessor before it lets this one launch (as the
  // model's o_proj and down GEMMs do): then the writer has completed by the time this kernel
  // starts, and it may read the residual before its programmatic-dependent-launch wait. (A
  // kernel that triggers before its wait breaks that chain: skinny_x_fp8's quantizer, and the
  // plain rows of this kernel itself (not the route row), so never set this right after one.)
  // False: read after the wait.
  bool residual_written_earlier = false;
  // CUDA only, route: topk_ids set to -1 before the PDL wait, so that an expert GEMM launched
  // right after this kernel can poll for the new ids (MoeDecodeGemmArgs::ids_poll).
  bool route_ids_cleared_early = false;
};

Status rmsnorm_cpu(const RmsNormArgs& args);

// ---- CUDA (kernels/cuda/norm/rmsnorm.cu) ---------------------------------------------------
// The same operation on device tensors: x, residual and out bf16, weight bf16, math in f32. The
// residual sum is stored in bf16 and the norm is taken of that stored value. hidden % 8 == 0,
// hidden <= 32768, rows 16-byte aligned. One table row per shipped variant; tests iterate it.
}  // namespace kiln
#include <span>
struct CUstream_st;  // cudaStream_t, without the CUDA headers
namespace kiln {

struct RmsNormCudaVariant {
  DType act;      // x, residual, out
  DType weight;
  bool residual;  // fused residual add
  bool combine;   // x as k weighted rows per token (slot_weights)
  bool quant;     // out also as per-row fp8 (out_q, out_scale)
  Status (*launch)(const RmsNormArgs& args, CUstream_st* stream);
  bool route = false;  // the MoE router on out (route)
};
std::span<const RmsNormCudaVariant> rmsnorm_cuda_variants();
Status rmsnorm_cuda(const RmsNormArgs& args, CUstream_st* stream);

}  // namespace kiln
