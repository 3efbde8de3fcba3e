// Gemm: the linear layer y = x @ w^T (+ bias) on the GPU through cuBLASLt: bf16 x and w (w in the
// Hugging Face [out_features, in_features] layout), f32 accumulation, bf16 or f32 y. One Gemm
// object owns a cuBLASLt handle and workspace and caches the heuristic's choice per shape, so a
// decode step looks its plans up instead of asking the heuristic again. Not thread-safe.
// CUDA-free header (defined in kernels/cuda/gemm/gemm.cu).
#pragma once
#include <cstdint>
#include <memory>
#include <span>

#include "kiln/core/status.h"
#include "kiln/kernels/linear.h"

struct CUstream_st;  // cudaStream_t, without the CUDA headers

namespace kiln {

// The shipped dtype combinations (the bias, when given, has y's dtype). Tests iterate this.
struct GemmCudaVariant {
  DType x, w, y;
};
std::span<const GemmCudaVariant> gemm_cuda_variants();

struct GemmOptions {
  int64_t workspace_bytes = 32 << 20;  // what cuBLAS asks for on Hopper
  // Time the heuristic's top 8 candidates on the first call of each shape and keep the fastest
  // (that first call synchronizes the stream; skipped while the stream is being captured).
  // Measured on H200 (bench/gemm_bench): +3 to +9 points of copy bandwidth for decode shapes
  // with large weights (lm_head, gate_up and down at m = 64), but worse for the 32 MB o_proj at
  // m = 1 (47% vs 56%): the candidates are timed on the same, L2-warm weights. Off by default.
  bool autotune = false;
};

class Gemm {
 public:
  static Result<Gemm> create(const GemmOptions& options = {});
  Gemm(Gemm&&) noexcept;
  Gemm& operator=(Gemm&&) noexcept;
  ~Gemm();

  // args: x [m, k], w [n, k], bias [n] or empty, y [m, n], all device tensors; rows of x, w and y
  // may be strided (last dimension contiguous). m == 0 is a no-op.
  Status run(const LinearArgs& args, CUstream_st* stream);
  int64_t cached_plans() const;

 private:
  struct Impl;
  explicit Gemm(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln
