// Gemm: the linear layer y = x @ w^T (* w_scale) (+ bias) on the GPU: bf16 x, bf16 or fp8 e4m3 w
// (the Hugging Face [out_features, in_features] layout; fp8 with w_scale [n] or [1] f32), f32
// accumulation, bf16 or f32 y. Gemm::run dispatches on m and the weight dtype (gemm_path):
//   m <= skinny_max_m_*  the decode kernel (cuda/gemm/skinny_gemm.cu): weights streamed once
//                        (fp8: up to skinny_max_m_fp8_large for weights of 48 MiB or more)
//   bf16 above           cuBLASLt bf16
//   fp8 above            x quantized to fp8 (per token, or per tensor: GemmOptions), cuBLASLt
//                        fp8 x fp8 that applies the x and weight scales itself and writes y
//                        (prefill); where cuBLASLt refuses the scales, an unscaled GEMM followed
//                        by a scale epilogue kernel
// One Gemm object owns a cuBLASLt handle, the workspaces, and the heuristic's choice per shape,
// so a decode step looks its plans up instead of asking the heuristic again. Not thread-safe.
// CUDA-free header (defined in kernels/cuda/gemm/gemm.cu).
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "kiln/core/status.h"
#include "kiln/kernels/linear.h"

struct CUstream_st;  // cudaStream_t, without the CUDA headers

namespace kiln {

// The shipped dtype combinations (the bias, when given, has y's dtype). Tests iterate this.
struct GemmCudaVariant {
  DType x, w, y;
};
std::span<const GemmCudaVariant> gemm_cuda_variants();

// Dispatch thresholds (largest m that takes the decode kernel), from bench/gemm_bench on H100
// (weight GB/s in a CUDA graph, decode kernel vs cuBLASLt): bf16 beats or ties cuBLASLt at
// m = 1..8 (m = 1: qkv 92 vs 82%, o_proj 88 vs 72%) and loses from m = 16 on. fp8 at m = 16 is
// about even with the fp8 cuBLASLt path (which also quantizes x to fp8: the decode kernel keeps
// x bf16) and loses at m = 32 on every shape (28-51% vs 46-80%), so m > 16 took cuBLASLt fp8.
// With the wgmma rows (x quantized per token to e4m3 like cuBLASLt's path, 128 weight rows per
// CTA, N = 32 / 64) the decode kernel wins at m = 32 on the Llama-3-8B layer as a whole (% of
// copy vs cuBLASLt fp8: qkv 49.5 / 53.5, o_proj 38.6 / 37.0, gate_up 86.0 / 77.3, down 60.4 /
// 45.5: 12% less time over the four) but only ties at m = 64 (qkv 41 / 53, o_proj 29 / 37, gate_up
// 78 / 75, down 51 / 46), so fp8 takes the decode kernel up to m = 32.
// Large fp8 weights (at least kGemmSkinnyLargeFp8Bytes) keep the decode kernel up to m = 64 (H100,
// 2026-11-22, one call, % of copy at m = 64, decode kernel vs cuBLASLt fp8: gate_up 28672 x 4096
// 79.6 vs 73.2, down 4096 x 14336 55.2 vs 47.3, LM head 128256 x 4096 86.0 vs 82.7; the smaller
// qkv 44.0 vs 53.9 and o_proj 34.6 vs 37.5 stay on cuBLASLt): 8% less time over a Llama-3-8B layer
// than cuBLASLt for all four.
inline constexpr int64_t kGemmSkinnyMaxMBf16 = 8;
inline constexpr int64_t kGemmSkinnyMaxMFp8 = 32;
inline constexpr int64_t kGemmSkinnyMaxMFp8Large = 64;
inline constexpr int64_t kGemmSkinnyLargeFp8Bytes = 48ll << 20;

// How the fp8 prefill path quantizes x (dynamically, every call; quantize.h gives the arithmetic).
// Either way cuBLASLt applies the x and weight scales as its outer-vector scales (fp8 on Hopper).
//   kPerToken   one scale per row of x (the default: more accurate than per tensor, and as fast)
//   kPerTensor  one scale for all of x (amax / 448, vLLM's dynamic default), broadcast to [m]
enum class Fp8Activations { kPerToken, kPerTensor };

struct GemmOptions {
  int64_t workspace_bytes = 32 << 20;  // what cuBLAS asks for on Hopper
  // Time the heuristic's top 8 candidates on the first call of each shape and keep the fastest
  // (that first call synchronizes the stream; skipped while the stream is being captured).
  // Measured on H200 (bench/gemm_bench): +3 to +9 points of copy bandwidth for decode shapes
  // with large weights (lm_head, gate_up and down at m = 64), but worse for the 32 MB o_proj at
  // m = 1 (47% vs 56%): the candidates are timed on the same, L2-warm weights. Off by default.
  bool autotune = false;
  int64_t skinny_max_m_bf16 = kGemmSkinnyMaxMBf16;  // 0: cuBLASLt for every m
  int64_t skinny_max_m_fp8 = kGemmSkinnyMaxMFp8;    // 0: the fp8 cuBLASLt path for every m
  // fp8 weights of kGemmSkinnyLargeFp8Bytes or more: the decode kernel up to this m (at least
  // skinny_max_m_fp8 counts; 0 with skinny_max_m_fp8 = 0: cuBLASLt for every m).
  int64_t skinny_max_m_fp8_large = kGemmSkinnyMaxMFp8Large;
  int64_t skinny_workspace_bytes = 16 << 20;       // split-K partial sums of the decode kernel
  // The decode kernel is launched with programmatic dependent launch: it starts streaming its
  // weights while the kernel before it on the stream finishes (it waits for that kernel before
  // reading x or writing y). The weights must therefore not be written by the kernel just before.
  bool skinny_pdl = true;
  // cuBLASLt fp8: skip the periodic f32 promotion of the MMA accumulators. On by default: on H100 it
  // takes the fp8 prefill GEMM from 964-1118 to 1045-1266 TFLOP/s at m = 4096 (Llama-3-8B shapes),
  // and at k = 14336 the error grows from 2.3e-3 to 4.5e-3 of max |y| with a bf16 y (1.5e-4 to
  // 7e-3 with f32 y), well below what quantizing x and w to fp8 costs (tests/kernels/gemm_fp8_*).
  bool fp8_fast_accum = true;
  Fp8Activations fp8_activations = Fp8Activations::kPerToken;
  // false: never hand the scales to cuBLASLt (an unscaled GEMM, then gemm_epilogue_cuda): the
  // first version of the fp8 prefill path, kept for comparison; it is also the fallback wherever
  // cuBLASLt refuses a scaled plan.
  bool fp8_native_scales = true;
};

// An fp8 GEMM whose x is already quantized per row (e.g. by silu_mul_fp8_cuda): y = (xq * x_scale)
// @ (w * w_scale)^T (+ bias), cuBLASLt fp8 applying both scales (or the epilogue kernel where it
// refuses), no quantization pass. Any m (no decode kernel: it wants bf16 x).
struct QuantizedLinearArgs {
  Tensor xq;       // [m, k] fp8 e4m3 device, rows may be strided (16-byte aligned rows, k % 16 == 0)
  Tensor x_scale;  // [m] f32 device, contiguous
  Tensor w;        // [n, k] fp8 e4m3
  Tensor bias;     // [n] in y's dtype, or empty
  Tensor y;        // [m, n] bf16 | f32
  Tensor w_scale;  // [n] | [1] f32
};

enum class GemmPath { kSkinny, kCublasBf16, kCublasFp8 };
// The path Gemm::run takes for m rows of x and weights of dtype w and w_bytes bytes (when the
// shape and alignment allow the decode kernel: 16-byte aligned rows, k % 8 (bf16) or % 16 (fp8)).
GemmPath gemm_path(const GemmOptions& options, int64_t m, DType w, int64_t w_bytes = 0);

class Gemm {
 public:
  static Result<Gemm> create(const GemmOptions& options = {});
  Gemm(Gemm&&) noexcept;
  Gemm& operator=(Gemm&&) noexcept;
  ~Gemm();

  // args: x [m, k], w [n, k], bias [n] or empty, y [m, n], w_scale [n] | [1] f32 (fp8 w only),
  // all device tensors; rows of x, w and y may be strided (last dimension contiguous). m == 0 is
  // a no-op. CUDA-graph capturable for m <= 64 and for bf16; the fp8 prefill path grows its
  // activation workspace on first use of a larger m (an error while the stream is captured).
  Status run(const LinearArgs& args, CUstream_st* stream);
  // The fp8 GEMM on a pre-quantized x (QuantizedLinearArgs). Graph-capturable once each shape ran.
  // Decode sizes whose decode-kernel row quantizes x per token take that row without its pre-pass
  // (contiguous xq); the rest cuBLASLt.
  Status run_quantized(const QuantizedLinearArgs& args, CUstream_st* stream);
  // SwiGLU fused into the GEMM's epilogue: w [2I, k] = [gate; up] (the fused gate_up layout), y
  // [m, I] bf16 = silu_mul_cuda(run's [m, 2I] y), the same bits, with no [m, 2I] tensor and no
  // second kernel. Where run would take the decode kernel's grid rows (fp8 weights m <= 8; bf16
  // weights m = 1, or m <= 8 below 96 MiB; I % 8 == 0, no bias); elsewhere unimplemented, nothing
  // launched: the caller runs run + silu_mul_cuda.
  Status run_swiglu(const LinearArgs& args, CUstream_st* stream);
  // Whether run(x) at m rows of w would quantize x per token to e4m3 (quantize_fp8_cuda's bits)
  // before its product, so that run_quantized on x quantized so gives the same result.
  bool quantizes_x_per_token(int64_t m, const Tensor& w, DType y) const;
  int64_t cached_plans() const;
  // Bumped whenever a workspace moves (the fp8 activation buffers grow on first use of a larger
  // m x k, freeing the old ones): a CUDA graph that captured run() holds the old addresses, so a
  // caller replaying graphs keys them on this too.
  int64_t workspace_generation() const;
  // How the fp8 prefill path applied its scales so far: shapes with cuBLASLt's outer-vector
  // scales / alpha vector, shapes with the epilogue kernel (and why cuBLASLt refused).
  std::string fp8_prefill_scales() const;

 private:
  struct Impl;
  explicit Gemm(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln
