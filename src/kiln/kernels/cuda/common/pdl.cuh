// Programmatic dependent launch (Hopper): a kernel launched with launch_pdl may be scheduled while
// the kernel before it in the stream is still running. Contract for such a kernel: call pdl_wait()
// before reading anything an earlier kernel wrote and before writing anything an earlier kernel
// reads (griddepcontrol.wait returns when the previous grid has completed and its writes are
// visible); pdl_trigger() lets the next PDL kernel (e.g. a decode GEMM that streams its weights
// before its own wait) be scheduled now. On GPUs before sm_90 both are no-ops and the attribute
// only serializes as usual. Inside a CUDA graph capture the dependency becomes a programmatic edge.
// KILN_PDL_OFF (see launch_pdl) launches chosen kernels plainly, for chasing ordering bugs.
#pragma once
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
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

// A read-only 16-byte load that stays where it is written, for weights a kernel requests before
// pdl_wait() (data no kernel of the chain writes). An __ldg there does not stay: ld.global.nc is
// an invariant load to the compiler, which moved the fused router's weight loads past
// griddepcontrol.wait and issued them a second time where they were used (H100 SASS, 2026-11-24).
// asm volatile keeps the load before the wait and its value in registers.
__device__ __forceinline__ uint4 ldg_nc_pinned(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

// The same for data an earlier kernel wrote that is complete before this kernel starts (written
// two or more kernels back in a PDL chain): read through L2 (ld.global.cg), where that kernel's
// writes are, not through a possibly stale L1 line.
__device__ __forceinline__ uint4 ldcg_pinned(const void* p) {
  uint4 v;
  asm volatile("ld.global.cg.v4.u32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

// A type-erased kernel (from a variant table) with its argument pointers; pdl = false launches it
// plainly (the attribute left out).
// cluster: thread-block cluster dimensions (1 x 1 x 1: none; the grid must be a multiple).
inline cudaError_t launch_pdl(const void* kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream, void** args,
                              bool pdl = true, dim3 cluster = dim3(1, 1, 1)) {
  cudaLaunchConfig_t lc{};
  lc.gridDim = grid;
  lc.blockDim = block;
  lc.dynamicSmemBytes = smem;
  lc.stream = stream;
  cudaLaunchAttribute attrs[2]{};
  attrs[0].id = cudaLaunchAttributeClusterDimension;
  attrs[0].val.clusterDim.x = cluster.x;
  attrs[0].val.clusterDim.y = cluster.y;
  attrs[0].val.clusterDim.z = cluster.z;
  attrs[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attrs[1].val.programmaticStreamSerializationAllowed = 1;
  const bool clustered = cluster.x * cluster.y * cluster.z > 1;
  lc.attrs = clustered ? attrs : attrs + 1;
  // Debugging: KILN_PDL_OFF=SUBSTR launches the kernels whose (mangled) name contains SUBSTR plainly
  // ("*": all of them).
  static const char* off = std::getenv("KILN_PDL_OFF");
  if (pdl && off && *off) {
    const char* name = nullptr;
    if (off[0] == '*' || (cudaFuncGetName(&name, kernel) == cudaSuccess && name && std::strstr(name, off))) pdl = false;
  }
  lc.numAttrs = (clustered ? 1 : 0) + (pdl ? 1 : 0);
  return cudaLaunchKernelExC(&lc, kernel, args);
}

// kernel<<<grid, block, smem, stream>>>(params) with programmatic stream serialization allowed.
template <typename Params>
cudaError_t launch_pdl(void (*kernel)(Params), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Params params,
                       dim3 cluster = dim3(1, 1, 1)) {
  void* args[] = {&params};
  return launch_pdl(reinterpret_cast<const void*>(kernel), grid, block, smem, stream, args, true, cluster);
}

}  // namespace kiln::cuda
