// CPU random fill (reference for the CUDA one).
#include <string>

#include "kiln/kernels/random_fill.h"

namespace kiln {

Status random_fill_cpu(const RandomFillArgs& a) {
  if (a.out.dtype != DType::kF32 && a.out.dtype != DType::kBF16)
    return unimplemented("random_fill_cpu: dtype " + std::string(dtype_name(a.out.dtype)) + " (supported: f32, bf16)");
  const int64_t n = a.out.numel();
  for (int64_t i = 0; i < n; ++i) {
    const float v = random_fill_value(a.seed, static_cast<uint64_t>(i), a.scale, a.offset);
    if (a.out.dtype == DType::kF32) a.out.ptr<float>()[i] = v;
    else a.out.ptr<uint16_t>()[i] = f32_to_bf16(v);
  }
  return ok_status();
}

}  // namespace kiln
