// For tests of kernels launched with programmatic dependent launch: a kernel before them that lets
// them launch at once and writes what they read only later, so that a read before their
// griddepcontrol.wait sees the old (poisoned) bytes.
#pragma once
#include <cstdint>

#include "kiln/kernels/cuda/common/pdl.cuh"

namespace kiln::test {

// Waits for the kernel before, lets the next one launch, then spins for `ns` nanoseconds of the
// global timer. The caller's writes follow.
__device__ inline void release_next_then_spin(uint64_t ns) {
  cuda::pdl_wait();
  cuda::pdl_trigger();
  uint64_t t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  } while (t - t0 < ns);
}

}  // namespace kiln::test
