// host_memory_bytes and check_fits_host_memory (see host_memory.h).
#include "kiln/core/host_memory.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

namespace kiln {

int64_t host_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : 0;
}

Status check_fits_host_memory(double bytes, const std::string& what) {
  const int64_t have = host_memory_bytes();
  if (have == 0 || (std::isfinite(bytes) && bytes <= static_cast<double>(have))) return ok_status();
  char msg[160];
  std::snprintf(msg, sizeof(msg), " needs %.1f GiB of host memory; this machine has %.1f GiB", bytes / double(1 << 30),
                static_cast<double>(have) / double(1 << 30));
  return resource_exhausted(what + msg);
}

}  // namespace kiln
