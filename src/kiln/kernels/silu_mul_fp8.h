// SwiGLU straight to fp8 e4m3, per token: the input of an fp8 down projection without the bf16
// round trip (silu_mul, then the GEMM's own activation quantization pass). For each row t:
//   v[t, i]   = bf16(silu(gate_up[t, i]) * gate_up[t, inter + i])   (what silu_mul_cuda writes)
//   scale[t]  = max_i |v[t, i]| / 448, or 1 for an all-zero row
//   q[t, i]   = e4m3(v[t, i] / scale[t])  (round to nearest even, saturating)
// i.e. silu_mul followed by quantize_fp8 per row: the same bits as that two-kernel path.
#pragma once
#include <span>

#include "kiln/core/status.h"
#include "kiln/core/tensor.h"

struct CUstream_st;  // cudaStream_t, without the CUDA headers

namespace kiln {

// Dequant (rows_per_group > 0): gate_up is an unscaled fp8 GEMM output in groups of rows_per_group
// rows (a group: an entry of MoeBatchedGemm's layout, groups[g] = (expert, begin, end)). Row
// t = g * rows_per_group + r is a row only for r < end - begin; the other rows of q and scale are
// left as they are. Each value is first scaled to
//   bf16(gate_up[t, j] * row_scale[begin + r] * col_scale_ptrs[expert][j])
// (f32, in that order, round to nearest even), then the row goes on as above.
struct SiluMulFp8Dequant {
  int64_t rows_per_group = 0;  // 0: off
  Tensor groups;          // [groups, 3] int32: (expert, begin, end)
  Tensor row_scale;       // [permuted rows] f32 (x's per-row scales, rows numbered as begin / end count them)
  Tensor col_scale_ptrs;  // [experts] int64: pointers to [2 * inter] f32 each (the weights' per-channel scales)
};

struct SiluMulFp8Args {
  Tensor gate_up;  // [rows, 2 * inter] bf16 (CPU: f32 or bf16), rows may be strided
  Tensor q;        // [rows, inter] fp8 e4m3 out, contiguous rows
  Tensor scale;    // [rows] f32 out
  SiluMulFp8Dequant dequant;  // CPU: host tensors and host pointers; CUDA: device ones
  // CUDA: let the next kernel launch before this one's programmatic-dependent-launch wait (its own
  // wait still covers this whole kernel; a GEMM after it then requests its first weight tiles
  // during the kernel before this one). Set only where the kernel after this one waits before it
  // lets a third one launch (as the decode GEMMs do): otherwise "the kernel before waited first"
  // no longer holds two kernels on (RmsNormArgs::residual_written_earlier).
  bool trigger_early = false;
};

// Host tensors. The reference.
Status silu_mul_fp8_cpu(const SiluMulFp8Args& args);

// ---- CUDA (kernels/cuda/activation/silu_mul_fp8.cu) ----------------------------------------
// Device tensors, bf16 gate_up; one block per row holding the row in registers. Variants: threads
// per block x 16-byte vectors per thread (inter <= threads * 8 * vecs; 1024-thread rows for few
// rows); inter % 8 == 0, 16-byte aligned gate_up rows, contiguous q.
struct SiluMulFp8CudaVariant {
  int threads;  // per block (one row)
  int vecs;     // 8-element vectors per thread
  int64_t max_inter;
  int64_t max_rows;  // 0: any
  bool dequant;      // takes SiluMulFp8Args::dequant (and only such calls)
};
std::span<const SiluMulFp8CudaVariant> silu_mul_fp8_cuda_variants();
Status silu_mul_fp8_cuda(const SiluMulFp8Args& args, CUstream_st* stream);
// One row of the table (tests, benchmarks); kUnimplemented where the row does not take the shape.
Status silu_mul_fp8_cuda_variant(const SiluMulFp8Args& args, size_t variant, CUstream_st* stream);

}  // namespace kiln
