// x -> fp8 e4m3 for the fp8 prefill GEMM (internal to kernels/cuda/gemm): per token (one scale per
// row) or per tensor (one dynamic scale), bit for bit the arithmetic of quantize_fp8_cpu
// (quantize.h). Per token it reads each row once (held in registers: k <= 8192); per tensor it
// runs an amax pass and a quantize pass (the second read mostly hits L2). Shapes it does not take
// (k % 8, unaligned rows, k > 8192 per token) go to quantize_fp8_cuda. CUDA-free header.
#pragma once
#include <cstdint>

#include "kiln/core/status.h"
#include "kiln/kernels/quantize.h"

struct CUstream_st;

namespace kiln {

// args.src [m, k] bf16 (rows may be strided), args.q [m, k] fp8 e4m3 (contiguous rows), args.scale
// [m] f32 (per token) or [1] f32 (per tensor), all device. amax_scratch: one device word the per-
// tensor mode zeroes and reduces into (unused per token). Graph-capturable.
Status quantize_fp8_activations_cuda(const Fp8QuantizeArgs& args, uint32_t* amax_scratch, CUstream_st* stream);

}  // namespace kiln
