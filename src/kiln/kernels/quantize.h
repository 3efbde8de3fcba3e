// FP8 (e4m3) quantization. Rows of a matrix src [rows, k] -> q [rows, k] fp8 e4m3 and scales, with
// src ~= float(q[r, c]) * scale[r] (per row, scale [rows]) or * scale[0] (per tensor, [1]).
// scale = amax / 448 over the row (or the whole matrix); an all-zero row gets scale 1. Each value
// is q = fp8_rne_sat(src / scale) (core/dtype.h f32_to_fp8_e4m3), so the CPU result is the
// reference that the GPU quantizer reproduces bit for bit. Two uses of the same arithmetic:
//   weights     [n, k]: per output channel (or per tensor), once at load (quantize_fp8_weights_*)
//   activations [m, k]: per row = per token, dynamic, before the fp8 prefill GEMM (gemm_cuda.h)
// Variants: CPU src f32 | f16 | bf16; CUDA src bf16 (device), q fp8 e4m3, scale f32.
#pragma once
#include "kiln/core/status.h"
#include "kiln/core/tensor.h"

struct CUstream_st;  // cudaStream_t, without the CUDA headers

namespace kiln {

struct Fp8QuantizeArgs {
  Tensor src;    // [rows, k] f32 | f16 | bf16 (CUDA: bf16), rows may be strided
  Tensor q;      // [rows, k] fp8 e4m3 out, rows may be strided
  Tensor scale;  // [rows] f32 out (per row), or [1] f32 out (per tensor)
};

// Host tensors. The reference.
Status quantize_fp8_cpu(const Fp8QuantizeArgs& args);
// Device tensors, src bf16; same bits as quantize_fp8_cpu. Graph-capturable (no allocation, no
// synchronization); the per-tensor mode runs three short kernels (row amax, scale, quantize).
Status quantize_fp8_cuda(const Fp8QuantizeArgs& args, CUstream_st* stream);

struct Fp8Weights {
  HostTensor q;      // [n, k] fp8 e4m3
  HostTensor scale;  // [n] f32, or [1] f32 when per_tensor
};

// w: [n, k] f32, f16 or bf16, host memory (rows may be strided). quantize_fp8_cpu into new tensors.
Result<Fp8Weights> quantize_fp8_weights_cpu(const Tensor& w, bool per_tensor);

// out[r, c] = float(q[r, c]) * scale[r or 0], converted to out's dtype (f32, f16 or bf16): the CPU
// models' fp8 weights (same numbers as the GPU's fp8 GEMM inputs, computed in the compute dtype).
Status dequantize_fp8_weights_cpu(const Tensor& q, const Tensor& scale, const Tensor& out);

// Activations as the GPU's fp8 prefill GEMM sees them: x [rows, k] f32 -> fp8 per row (or per
// tensor) -> f32 into out (same shape; may be x itself). CPU models use it for
// ModelOptions::fp8_activations, so a CPU run reproduces that rounding.
Status fp8_round_trip_cpu(const Tensor& x, const Tensor& out, bool per_tensor);

}  // namespace kiln
