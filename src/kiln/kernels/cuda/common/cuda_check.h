// CUDA error handling as values: KILN_CUDA_CHECK / KILN_CUBLAS_CHECK return a Status (with the
// failing expression, file and line) from the enclosing function; KILN_CUDA_CHECK_LAUNCH checks
// the last launch. Included by .cu files only (it pulls in the CUDA runtime headers).
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>

#include "kiln/core/status.h"

namespace kiln {

Status cuda_error(cudaError_t err, const char* expr, const char* file, int line);
Status cublas_error(cublasStatus_t err, const char* expr, const char* file, int line);

}  // namespace kiln

#define KILN_CUDA_CHECK(expr)                                                        \
  do {                                                                               \
    const cudaError_t kiln_cuda_err_ = (expr);                                       \
    if (kiln_cuda_err_ != cudaSuccess)                                               \
      return ::kiln::cuda_error(kiln_cuda_err_, #expr, __FILE__, __LINE__);          \
  } while (0)

#define KILN_CUBLAS_CHECK(expr)                                                      \
  do {                                                                               \
    const cublasStatus_t kiln_cublas_err_ = (expr);                                  \
    if (kiln_cublas_err_ != CUBLAS_STATUS_SUCCESS)                                   \
      return ::kiln::cublas_error(kiln_cublas_err_, #expr, __FILE__, __LINE__);      \
  } while (0)

// After a <<<...>>> launch: configuration errors surface here, not at the launch. Get (not Peek)
// clears a non-sticky launch error, so one bad launch does not fail every later check.
#define KILN_CUDA_CHECK_LAUNCH() KILN_CUDA_CHECK(cudaGetLastError())
