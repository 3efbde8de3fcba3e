// CUDA embedding gather: one block per token copies its table row with 16-byte vectors.
// Variants: bf16 table -> bf16 out.
#include <cuda_bf16.h>

#include <string>

#include "kiln/kernels/cuda/common/bf16.cuh"
#include "kiln/kernels/cuda/common/cuda_check.h"
#include "kiln/kernels/cuda/common/kernel_args.h"
#include "kiln/kernels/embedding.h"

namespace kiln {
namespace {

constexpr int kThreads = 128;

struct EmbeddingParams {
  const int32_t* ids;  // [num_tokens]
  const uint4* table;  // [vocab, hidden], row stride table_stride (in 16-byte vectors)
  uint4* out;          // [num_tokens, hidden], row stride out_stride (in 16-byte vectors)
  int64_t table_stride, out_stride;
  int64_t vocab;
  int vecs_per_row;
};

__global__ void __launch_bounds__(kThreads) embedding_kernel(const __grid_constant__ EmbeddingParams p) {
  const int64_t t = blockIdx.x;
  const int64_t id = p.ids[t];
  uint4* out = p.out + t * p.out_stride;
  if (id < 0 || id >= p.vocab) {  // see embedding.h: zeros, no error from the device
    for (int c = threadIdx.x; c < p.vecs_per_row; c += kThreads) out[c] = make_uint4(0, 0, 0, 0);
    return;
  }
  const uint4* row = p.table + id * p.table_stride;
  for (int c = threadIdx.x; c < p.vecs_per_row; c += kThreads) out[c] = row[c];
}

Status launch_embedding(const EmbeddingArgs& a, CUstream_st* stream) {
  constexpr const char* kName = "embedding_cuda";
  KILN_ASSIGN_OR_RETURN(const cuda::RowsView table, cuda::device_rows(a.table, DType::kBF16, kName, "table"));
  KILN_ASSIGN_OR_RETURN(const cuda::RowsView out, cuda::device_rows(a.out, DType::kBF16, kName, "out"));
  KILN_RETURN_IF_ERROR(cuda::expect_device(a.ids, DType::kInt32, out.rows, kName, "ids"));
  if (a.table.ndim != 2 || out.cols != table.cols)
    return invalid_argument("embedding_cuda: table " + a.table.shape_string() + " and out " + a.out.shape_string() +
                            " differ in hidden size");
  if (table.cols % cuda::kBf16PerVec != 0)
    return unimplemented("embedding_cuda: hidden " + std::to_string(table.cols) + " (supported: multiples of 8)");
  if (table.stride % 8 || out.stride % 8 || !cuda::aligned16(a.table.data) || !cuda::aligned16(a.out.data))
    return invalid_argument("embedding_cuda: rows must be 16-byte aligned");
  if (out.rows == 0) return ok_status();
  if (out.rows > 0x7fffffff) return out_of_range("embedding_cuda: too many tokens");
  EmbeddingParams p{};
  p.ids = static_cast<const int32_t*>(a.ids.data);
  p.table = static_cast<const uint4*>(a.table.data);
  p.out = static_cast<uint4*>(a.out.data);
  p.table_stride = table.stride / cuda::kBf16PerVec;
  p.out_stride = out.stride / cuda::kBf16PerVec;
  p.vocab = table.rows;
  p.vecs_per_row = static_cast<int>(table.cols / cuda::kBf16PerVec);
  embedding_kernel<<<static_cast<unsigned>(out.rows), kThreads, 0, stream>>>(p);
  KILN_CUDA_CHECK_LAUNCH();
  return ok_status();
}

constexpr EmbeddingCudaVariant kVariants[] = {
    {DType::kBF16, DType::kBF16, &launch_embedding},
};

}  // namespace

std::span<const EmbeddingCudaVariant> embedding_cuda_variants() { return kVariants; }

Status embedding_cuda(const EmbeddingArgs& a, CUstream_st* stream) {
  for (const auto& v : kVariants)
    if (v.table == a.table.dtype && v.out == a.out.dtype) return v.launch(a, stream);
  std::string supported;
  for (const auto& v : kVariants)
    supported += std::string(supported.empty() ? "" : ", ") + std::string(dtype_name(v.table)) + " -> " +
                 std::string(dtype_name(v.out));
  return unimplemented("embedding_cuda: table " + std::string(dtype_name(a.table.dtype)) + " -> out " +
                       std::string(dtype_name(a.out.dtype)) + " (supported: " + supported + ")");
}

}  // namespace kiln
