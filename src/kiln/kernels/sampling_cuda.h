// CudaSampler: sample_cpu on the GPU, token for token. Same filtering order (temperature,
// top-k, top-p, min-p), same tie-breaking (lower token id first), same uniform draw
// sampling_uniform(seed, step), and the same sequential f32 sums, so it picks the ids sample_cpu
// picks for the same logits. It owns its sort workspace; not thread-safe.
// CUDA-free header (defined in kernels/cuda/sampling/sampling.cu).
#pragma once
#include <memory>
#include <span>

#include "kiln/core/status.h"
#include "kiln/kernels/sampling.h"

struct CUstream_st;  // cudaStream_t, without the CUDA headers

namespace kiln {

struct SampleCudaVariant {
  DType logits;
};
std::span<const SampleCudaVariant> sample_cuda_variants();

class CudaSampler {
 public:
  static Result<CudaSampler> create();
  CudaSampler(CudaSampler&&) noexcept;
  CudaSampler& operator=(CudaSampler&&) noexcept;
  ~CudaSampler();

  // args.logits [batch, vocab] f32 and args.out_ids [batch] int32 on the device; params, steps and
  // banned on the host (as in SampleArgs). Asynchronous on `stream`. Unlike sample_cpu, banned
  // logits are overwritten with -inf in place.
  Status sample(const SampleArgs& args, CUstream_st* stream);

 private:
  struct Impl;
  explicit CudaSampler(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiln
