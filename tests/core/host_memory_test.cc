// host_memory: the physical memory is known on Linux, and check_fits_host_memory refuses what
// exceeds it (NaN and infinite sizes included) with a message naming what needed the memory.
#include "kiln/core/host_memory.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace kiln {
namespace {

TEST(HostMemory, KnowsThePhysicalMemory) { EXPECT_GT(host_memory_bytes(), int64_t{64} << 20); }

TEST(HostMemory, ChecksAllocationsAgainstIt) {
  EXPECT_TRUE(check_fits_host_memory(1 << 20, "a small buffer").ok());
  const double too_big = 2.0 * static_cast<double>(host_memory_bytes());
  for (double bytes : {too_big, 1e30, std::numeric_limits<double>::infinity(), std::nan("")}) {
    Status s = check_fits_host_memory(bytes, "--thing 7: the cache");
    ASSERT_FALSE(s.ok()) << bytes;
    EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
    EXPECT_EQ(s.message().rfind("--thing 7: the cache needs ", 0), 0u) << s.message();
    EXPECT_NE(s.message().find("GiB of host memory; this machine has"), std::string::npos) << s.message();
  }
}

}  // namespace
}  // namespace kiln
