// CPU embedding gather (reference and fast path).
#include <string>

#include "kiln/kernels/embedding.h"

namespace kiln {

Status embedding_cpu(const EmbeddingArgs& a) {
  const int64_t n = a.ids.numel(), vocab = a.table.shape[0], hidden = a.table.shape[1];
  if (a.out.dtype != DType::kF32 || a.out.numel() != n * hidden || a.ids.dtype != DType::kInt32)
    return invalid_argument("embedding_cpu: want ids int32 [n], out f32 [n, hidden]");
  const int32_t* ids = a.ids.ptr<int32_t>();
  for (int64_t t = 0; t < n; ++t) {
    if (ids[t] < 0 || ids[t] >= vocab)
      return out_of_range("token id " + std::to_string(ids[t]) + " outside the vocabulary [0, " +
                          std::to_string(vocab) + ")");
  }
  for (int64_t t = 0; t < n; ++t) {
    const int64_t off = static_cast<int64_t>(ids[t]) * a.table.strides[0];
    KILN_RETURN_IF_ERROR(convert(static_cast<const char*>(a.table.data) + dtype_bytes(a.table.dtype, off),
                                 a.table.dtype, a.out.ptr<float>() + t * hidden, DType::kF32, hidden));
  }
  return ok_status();
}

}  // namespace kiln
