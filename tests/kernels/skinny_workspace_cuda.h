// The decode GEMM's own workspace (what Gemm owns), for tests that call skinny_gemm_cuda with
// explicit launch choices. CUDA test translation units only.
#pragma once
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <utility>

#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/cuda/gemm/skinny_gemm.h"

namespace kiln::test {

struct SkinnyWorkspace {
  DeviceBuffer partials, counters;
  SkinnyGemmWorkspace ws;
  SkinnyWorkspace() {
    auto p = DeviceBuffer::alloc(16 << 20);
    auto c = DeviceBuffer::alloc(8192 * 4);
    EXPECT_TRUE(p.ok() && c.ok());
    partials = std::move(p).value();
    counters = std::move(c).value();
    EXPECT_EQ(cudaMemset(counters.data(), 0, 8192 * 4), cudaSuccess);
    ws = {static_cast<float*>(partials.data()), (16 << 20) / 4, static_cast<int*>(counters.data()), 8192};
    int dev = 0;
    EXPECT_EQ(cudaGetDevice(&dev), cudaSuccess);
    EXPECT_EQ(cudaDeviceGetAttribute(&ws.num_sms, cudaDevAttrMultiProcessorCount, dev), cudaSuccess);
  }
};

}  // namespace kiln::test
