// x -> fp8 e4m3 per row (per token) for the e4m3 decode variants (skinny_gemm.cu, the MoE decode
// GEMM): a tiny pre-pass kernel, one CTA per row of x, into a fixed workspace. Same arithmetic as
// quantize_fp8_cpu and the prefill path's quantizer (gemm_fp8_activations.cu): amax over the row
// with fmaxf(|x|) (NaN ignored), scale = amax / 448 or 1 for an all-zero row, q = RNE-saturating
// e4m3 of x / scale (IEEE division). Programmatic dependent launch: the kernel lets the GEMM after
// it launch at once (which then streams its weights) and waits for the kernel before it before
// reading x; the GEMM's own griddepcontrol.wait then waits for this kernel to complete.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "kiln/kernels/cuda/common/pdl.cuh"
#include "kiln/kernels/cuda/quantize/fp8_row.cuh"

namespace kiln::skinny {

inline constexpr int kXFp8Threads = 256;
inline constexpr int64_t kXFp8MaxRows = 512;  // (the MoE decode GEMM's slots)
// Workspace layout: scales [kXFp8MaxRows] f32 at the base, then q [rows, k] (row stride k) at
// kXFp8ScaleBytes.
inline constexpr int64_t kXFp8ScaleBytes = kXFp8MaxRows * 4;
inline constexpr int64_t x_fp8_bytes(int64_t rows, int64_t k) { return kXFp8ScaleBytes + ((rows * k + 255) / 256) * 256; }

struct XFp8Params {
  const __nv_bfloat16* x;  // [rows, k], row stride ldx
  int64_t ldx;
  uint8_t* q;              // [rows, k] e4m3, row stride k
  float* scale;            // [rows]
  int k, pdl;
};

// Grid: one CTA of kXFp8Threads per row of x (k % 8 == 0, rows of x 16-byte aligned).
static __global__ void __launch_bounds__(kXFp8Threads) quantize_x_fp8_kernel(const __grid_constant__ XFp8Params p) {
  if (p.pdl) {
    cuda::pdl_trigger();  // the GEMM may launch and stream its weights now
    cuda::pdl_wait();     // x comes from the kernel before this one
  }
  const int64_t r = blockIdx.x;
  const __nv_bfloat16* row = p.x + r * p.ldx;
  float m = 0.0f;
  for (int c = threadIdx.x * 8; c < p.k; c += kXFp8Threads * 8) m = fmaxf(m, cuda::fp8row::abs_max8(*reinterpret_cast<const uint4*>(row + c)));
  const float s = cuda::fp8row::scale_for(cuda::fp8row::block_amax<kXFp8Threads>(m));
  if (threadIdx.x == 0) p.scale[r] = s;
  uint8_t* out = p.q + r * p.k;
  for (int c = threadIdx.x * 8; c < p.k; c += kXFp8Threads * 8)
    *reinterpret_cast<uint2*>(out + c) = cuda::fp8row::quantize8(*reinterpret_cast<const uint4*>(row + c), s);
}

}  // namespace kiln::skinny
