// Programmatic dependent launch (Hopper): a kernel launched with launch_pdl may be scheduled while
// the kernel before it in the stream is still running. Contract for such a kernel: call pdl_wait()
// before reading anything an earlier kernel wrote and before writing anything an earlier kernel
// reads (griddepcontrol.wait returns when the previous grid has completed and its writes are
// visible); pdl_trigger() lets the next PDL kernel (e.g. a decode GEMM that streams its weights
// before its own wait) be scheduled now. On GPUs before sm_90 both are no-ops and the attribute
// only serializes as usual. Inside a CUDA graph capture the dependency becomes a programmatic edge.
#pragma once
#include <cuda_runtime.h>

#include <utility>

namespace kiln::cuda {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// kernel<<<grid, block, smem, stream>>>(args...) with programmatic stream serialization allowed.
template <typename... KernelArgs, typename... Args>
cudaError_t launch_pdl(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                       Args&&... args) {
  cudaLaunchConfig_t lc{};
  lc.gridDim = grid;
  lc.blockDim = block;
  lc.dynamicSmemBytes = smem;
  lc.stream = stream;
  cudaLaunchAttribute attr{};
  attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr.val.programmaticStreamSerializationAllowed = 1;
  lc.attrs = &attr;
  lc.numAttrs = 1;
  return cudaLaunchKernelEx(&lc, kernel, std::forward<Args>(args)...);
}

}  // namespace kiln::cuda
