// Calibration of static fp8 KV cache scales (`kiln quantize --kv-cache-scales calibrate`): run the
// model over sample tokens with an f32 cache, then per layer scale = amax / 448 of the cached K
// (after RoPE, as the cache stores it; with a power-of-two head_dim the larger of that and the
// Hadamard-rotated K's, see ModelOptions::fp8_kv_hadamard) and of V, so fp8(x / scale) never
// saturates on that text.
#pragma once
#include <vector>

#include "kiln/models/model.h"

namespace kiln::eval {

struct KvScales {
  std::vector<float> k, v;  // [num_layers]
};

// model: a CPU model with an f32 KV cache. tokens: one sequence (at most the model's context).
Result<KvScales> calibrate_kv_scales(Model& model, const std::vector<int32_t>& tokens, int64_t chunk = 256);

}  // namespace kiln::eval
