// The GPU model tests' shared set-up: whether a GPU is there, and a golden model on it.
#pragma once
#include <memory>
#include <string>

#include "kiln/io/model_loader.h"
#include "kiln/models/model.h"
#ifdef KILN_WITH_CUDA
#include "kiln/kernels/cuda/common/device_buffer.h"
#endif

namespace kiln {

inline bool have_gpu() {
#ifdef KILN_WITH_CUDA
  return cuda_available();
#else
  return false;
#endif
}

// The golden model tests/golden/NAME in bf16 on the GPU.
inline Result<std::unique_ptr<Model>> golden_cuda_model(const char* name) {
  KILN_ASSIGN_OR_RETURN(LoadedModel loaded, load_model(std::string(KILN_SOURCE_DIR) + "/tests/golden/" + name, DType::kBF16));
  ModelOptions o;
  o.device = Device::kCuda;
  return create_model(std::move(loaded), o);
}

}  // namespace kiln
