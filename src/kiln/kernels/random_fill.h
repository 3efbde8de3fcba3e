// Random tensor fill for `--load-format dummy`: value = offset + scale * u, u uniform in [-1, 1)
// from a counter hash of (seed, index), so a model of any size is made on the device without a
// checkpoint. CPU variant for host tensors; CUDA variant for device tensors (f32 / bf16).
#pragma once
#include <cstdint>

#include "kiln/core/status.h"
#include "kiln/core/tensor.h"

struct CUstream_st;

namespace kiln {

struct RandomFillArgs {
  Tensor out;  // any shape, contiguous, f32 | bf16
  uint64_t seed = 0;
  float scale = 1.0f;
  float offset = 0.0f;
};

Status random_fill_cpu(const RandomFillArgs& args);
Status random_fill_cuda(const RandomFillArgs& args, CUstream_st* stream);

// The value at index i (shared by both variants).
inline float random_fill_value(uint64_t seed, uint64_t i, float scale, float offset) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + i;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  const float u = static_cast<float>(z >> 40) * (1.0f / 8388608.0f) - 1.0f;  // [-1, 1)
  return offset + scale * u;
}

}  // namespace kiln
