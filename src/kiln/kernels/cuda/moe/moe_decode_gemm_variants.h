// The MoE decode GEMM's variant table (cuda/moe/moe_decode_gemm.cu), for its tests and benchmark:
// experts bf16 | fp8 e4m3, fp8 widened exactly to bf16 or to f16 (x rounded to f16, clamped to
// +-65504), or x quantized per token to e4m3 for the e4m3 mma. moe_decode_gemm_cuda runs the
// preferred row of the experts' dtype (a wgmma one: its sparse_grid row where the grid is sparse,
// its few_tokens row for at most max_n tokens, the last row whose min_tokens (and min_k) the call
// reaches: 64-slot tiles from 65 tokens, 96-slot ones from 208).
// CUDA-free header.
#pragma once
#include <span>

#include "kiln/core/status.h"
#include "kiln/kernels/moe_cuda.h"

struct CUstream_st;

namespace kiln {

struct MoeDecodeGemmVariant {
  DType w;
  bool f16;        // fp8 only: the f16 widening (skinny_gemm_core.cuh), else exact bf16
  bool e4m3;       // fp8 only: x quantized per token to e4m3 (needs args.workspace), the e4m3 mma
  bool preferred;  // the one moe_decode_gemm_cuda uses for w (e4m3 first when a workspace is given)
  bool wgmma = false;  // with e4m3: the native wgmma.m64nNk32.e4m3, 64 expert rows per warpgroup CTA
  int stages = 0;      // wgmma rows: 128-byte k tiles in each CTA's ring
  // wgmma rows: taken instead of the preferred one where the grid (64-row blocks x distinct experts)
  // has at most one CTA per SM.
  bool sparse_grid = false;
  int max_n = 32;  // wgmma rows: the widest slot tile (8: passes of 8 slots, a smaller ring)
  // wgmma rows: taken instead of the preferred one where the grid is not sparse and there are at
  // most max_n tokens (with each token's experts distinct, as a router picks them, no expert has
  // more than max_n slots: one pass; repeated ids still work, in more passes).
  bool few_tokens = false;
  // wgmma rows: taken instead of the preferred one where the grid is not sparse and there are at
  // least min_tokens tokens (0: never). max_n 64: passes of 64 slots.
  int min_tokens = 0;
  int max_slots = kMoeDecodeMaxSlots;  // t * top_k at most (moe_decode_gemm_cuda_variant refuses more)
  int warpgroups = 1;  // wgmma rows: 1 | 2 warpgroups of 64 weight rows per CTA, sharing its x tiles
  int min_k = 0;       // with min_tokens: taken only where k (the GEMM's reduction length) is at least this
};
std::span<const MoeDecodeGemmVariant> moe_decode_gemm_variants();

// moe_decode_gemm_cuda with the variant chosen (an index into moe_decode_gemm_variants(), whose w
// must be args.w_dtype).
Status moe_decode_gemm_cuda_variant(const MoeDecodeGemmArgs& args, int variant, CUstream_st* stream);

}  // namespace kiln
