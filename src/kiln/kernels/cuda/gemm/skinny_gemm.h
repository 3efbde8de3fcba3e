// Decode-regime ("skinny", m = 1..64) GEMM: y[m, n] = x[m, k] @ w[n, k]^T (* w_scale) (+ bias),
// weights streamed once from HBM. Internal to kernels/cuda/gemm (Gemm::run dispatches to it).
// Variants (the table in skinny_gemm.cu): w bf16 | fp8 e4m3 (w_scale [n] or [1] f32) x
// m tiles of 8 / 16 / 32 / 64 rows x y bf16 | f32; x bf16. CUDA-free header.
#pragma once
#include <cstdint>
#include <span>

#include "kiln/core/status.h"
#include "kiln/kernels/linear.h"

struct CUstream_st;

namespace kiln {

inline constexpr int64_t kSkinnyGemmMaxM = 64;

// Scratch for split-K (owned by the Gemm object so that a captured graph never allocates):
// f32 partial tiles and one arrival counter per row block (zero between calls: the last block
// to arrive resets it).
struct SkinnyGemmWorkspace {
  float* partials = nullptr;
  int64_t partial_floats = 0;
  int* counters = nullptr;
  int64_t num_counters = 0;
  int num_sms = 132;
};

struct SkinnyGemmVariant {
  DType w, y;
  int max_m;  // this kernel pads m up to max_m (8 * its n-tiles)
};
std::span<const SkinnyGemmVariant> skinny_gemm_variants();

// Whether skinny_gemm_cuda can run these arguments (dtypes, m <= 64, 16-byte aligned rows of
// w and x, k a multiple of 8 (bf16) or 16 (fp8)); the reason otherwise.
Status skinny_gemm_check(const LinearArgs& args);

// args as in Gemm::run (x bf16, w bf16 | fp8 e4m3 + w_scale, y bf16 | f32, bias y's dtype);
// split_k 0: chosen from the shape and the SM count.
Status skinny_gemm_cuda(const LinearArgs& args, const SkinnyGemmWorkspace& ws, CUstream_st* stream, int split_k = 0);

}  // namespace kiln
