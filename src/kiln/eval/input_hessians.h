// Calibration for GPTQ (`kiln quantize --method gptq`): run a CPU model over sample text and sum,
// per linear weight, x x^T of the inputs it read (models/gptq_fp8.h). Weights that read the same
// input share one Hessian (q/k/v_proj, gate/up_proj, an expert's w1/w3). An expert sees only the
// tokens routed to it; one that saw none gets no Hessian (round to nearest).
#pragma once
#include <functional>
#include <vector>

#include "kiln/models/gptq_fp8.h"
#include "kiln/models/model.h"

namespace kiln::eval {

// model: a CPU LlamaModel (f32 KV cache). tokens are cut into independent sequences of `window`
// tokens (the last one may be shorter). progress(done_tokens, total_tokens) after each window.
Result<InputHessians> collect_input_hessians(Model& model, const std::vector<int32_t>& tokens, int64_t window,
                                             const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace kiln::eval
