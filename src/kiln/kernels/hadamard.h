// The orthonormal Walsh-Hadamard transform of one head vector (d a power of two), as the fp8 KV
// cache's key rotation applies it (RopeKvWriteArgs::hadamard_qk). The operation order is part of
// the contract: the GPU kernel does the same float adds in the same order, so both give the same
// bits. Stages len = 1, 2, ..., d / 2: for every j with (j & len) == 0,
// (x[j], x[j + len]) <- (x[j] + x[j + len], x[j] - x[j + len]); then x[i] *= 1 / sqrt(d) (float).
#pragma once
#include <cmath>
#include <cstdint>

namespace kiln {

inline bool is_power_of_two(int64_t d) { return d > 0 && (d & (d - 1)) == 0; }

inline float hadamard_norm(int64_t d) { return 1.0f / std::sqrt(static_cast<float>(d)); }

inline void hadamard_inplace(float* x, int64_t d) {
  for (int64_t len = 1; len < d; len <<= 1)
    for (int64_t j = 0; j < d; ++j) {
      if (j & len) continue;
      const float u = x[j], v = x[j + len];
      x[j] = u + v;
      x[j + len] = u - v;
    }
  const float s = hadamard_norm(d);
  for (int64_t i = 0; i < d; ++i) x[i] *= s;
}

}  // namespace kiln
