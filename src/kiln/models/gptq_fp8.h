// GPTQ for fp8 e4m3 weights: round a linear layer's weights column by column, pushing each
// column's rounding error onto the columns not yet rounded through the inverse Hessian of the
// layer's inputs (H = sum over calibration tokens of x x^T), so the layer's outputs on such inputs
// move less than with round-to-nearest. The scales are round-to-nearest's (amax / 448 per output
// row, or per matrix), so the result loads anywhere an fp8 checkpoint does. Columns go in order of
// decreasing H diagonal ("act order"); H gets 1% of its mean diagonal added (dampening).
// Cost: one Cholesky of k x k plus n k^2 / 2 fused multiply-adds per matrix (rows in parallel).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/kernels/quantize.h"

namespace kiln {

// Sum of x x^T over the inputs a linear layer saw: [k, k] row-major, double.
struct InputHessian {
  int64_t k = 0;
  int64_t samples = 0;  // input rows accumulated
  std::vector<double> h;
  explicit InputHessian(int64_t cols = 0) : k(cols), h(static_cast<size_t>(cols * cols), 0.0) {}
  // x: [rows, k] f32 (rows may be strided).
  Status add(const Tensor& x);
};

// HF weight name ("model.layers.3.mlp.down_proj.weight") -> the Hessian of its inputs (weights
// that read one input share it).
using InputHessians = std::map<std::string, std::shared_ptr<InputHessian>>;

struct GptqOptions {
  bool per_tensor = false;
  double damp = 0.01;  // fraction of the mean diagonal added to H
};

// w: [n, k] f32 / f16 / bf16 host matrix; hessian.k == k with samples > 0. Same layout as
// quantize_fp8_weights_cpu.
Result<Fp8Weights> quantize_fp8_gptq_cpu(const Tensor& w, const InputHessian& hessian, const GptqOptions& options = {});

}  // namespace kiln
