// Mixtral MoE block on the CPU: tokens are grouped by expert so each expert runs one GEMM.
#include "kiln/models/mixtral.h"

#include <algorithm>
#include <cstring>

#include "kiln/kernels/activation.h"
#include "kiln/kernels/linear.h"
#include "kiln/kernels/moe.h"
#include "kiln/kernels/quantize.h"

namespace kiln {

Status mixtral_moe_cpu(const LayerWeights& lw, int64_t top_k, bool renormalize, const Tensor& h, Tensor out,
                       bool fp8_activations, const MoeExpertObserver& observe) {
  const int64_t n = h.shape[0], hidden = h.shape[1];
  const int64_t num_experts = static_cast<int64_t>(lw.experts.size());
  if (top_k <= 0 || top_k > num_experts)
    return invalid_argument("moe top-k " + std::to_string(top_k) + " outside [1, " + std::to_string(num_experts) + "]");
  HostTensor logits = HostTensor::zeros(DType::kF32, {n, num_experts});
  KILN_RETURN_IF_ERROR(linear_cpu({h, lw.router.tensor, {}, logits.tensor, {}}));
  HostTensor ids = HostTensor::zeros(DType::kInt32, {n, top_k});
  HostTensor weights = HostTensor::zeros(DType::kF32, {n, top_k});
  KILN_RETURN_IF_ERROR(moe_route_cpu({logits.tensor, ids.tensor, weights.tensor, renormalize}));
  std::memset(out.data, 0, static_cast<size_t>(out.nbytes()));
  for (int64_t e = 0; e < num_experts; ++e) {
    std::vector<int64_t> rows;
    std::vector<float> gates;
    for (int64_t i = 0; i < n * top_k; ++i) {
      if (ids.tensor.ptr<int32_t>()[i] != e) continue;
      rows.push_back(i / top_k);
      gates.push_back(weights.tensor.ptr<float>()[i]);
    }
    if (rows.empty()) continue;
    const auto& ew = lw.experts[static_cast<size_t>(e)];
    const int64_t m = static_cast<int64_t>(rows.size()), inter = ew.down.tensor.shape[1];
    HostTensor x = HostTensor::zeros(DType::kF32, {m, hidden});
    for (int64_t r = 0; r < m; ++r)
      std::memcpy(x.tensor.ptr<float>() + r * hidden, h.ptr<float>() + rows[static_cast<size_t>(r)] * hidden, static_cast<size_t>(hidden) * 4);
    HostTensor gate_up = HostTensor::zeros(DType::kF32, {m, 2 * inter});
    HostTensor act = HostTensor::zeros(DType::kF32, {m, inter});
    HostTensor y = HostTensor::zeros(DType::kF32, {m, hidden});
    if (observe) KILN_RETURN_IF_ERROR(observe(e, false, x.tensor));
    if (fp8_activations) KILN_RETURN_IF_ERROR(fp8_round_trip_cpu(x.tensor, x.tensor, false));
    KILN_RETURN_IF_ERROR(linear_cpu({x.tensor, ew.gate_up.tensor, {}, gate_up.tensor, {}}));
    KILN_RETURN_IF_ERROR(silu_mul_cpu({gate_up.tensor, act.tensor}));
    if (observe) KILN_RETURN_IF_ERROR(observe(e, true, act.tensor));
    if (fp8_activations) KILN_RETURN_IF_ERROR(fp8_round_trip_cpu(act.tensor, act.tensor, false));
    KILN_RETURN_IF_ERROR(linear_cpu({act.tensor, ew.down.tensor, {}, y.tensor, {}}));
    for (int64_t r = 0; r < m; ++r) {
      float* dst = out.ptr<float>() + rows[static_cast<size_t>(r)] * hidden;
      const float* src = y.tensor.ptr<float>() + r * hidden;
      for (int64_t i = 0; i < hidden; ++i) dst[i] += gates[static_cast<size_t>(r)] * src[i];
    }
  }
  return ok_status();
}

}  // namespace kiln
