// Host memory: the machine's physical memory, and an up-front check that a large host allocation
// (a KV cache, a batch's logits) fits in it, so that an absurd request is a clear error naming
// what needed the memory rather than a std::bad_alloc.
#pragma once
#include <cstdint>
#include <string>

#include "kiln/core/status.h"

namespace kiln {

// Physical memory in bytes (sysconf pages x page size); 0 when the system does not say.
int64_t host_memory_bytes();

// resource_exhausted "<what> needs X GiB of host memory; this machine has Y GiB" when bytes (a
// double, so that overflowing products still compare) exceed physical memory.
Status check_fits_host_memory(double bytes, const std::string& what);

}  // namespace kiln
