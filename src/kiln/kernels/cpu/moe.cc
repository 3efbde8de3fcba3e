// CPU MoE routing: softmax, top-k, optional renormalization (reference and fast path).
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kiln/kernels/linear.h"
#include "kiln/kernels/moe.h"

namespace kiln {

Status moe_route_cpu(const MoeRouteArgs& a) {
  const int64_t n = a.router_logits.shape[0], e = a.router_logits.shape[1], k = a.topk_ids.dim(-1);
  if (a.router_logits.dtype != DType::kF32 || k <= 0 || k > e || a.topk_ids.numel() != n * k ||
      a.topk_weights.numel() != n * k)
    return invalid_argument("moe_route_cpu: want logits f32 [n, experts], topk_ids/weights [n, k], 0 < k <= experts");
  if (!a.x.empty() || !a.router_weight.empty()) {
    if (a.x.ndim != 2 || a.router_weight.ndim != 2 || a.x.shape[0] != n || a.router_weight.shape[0] != e ||
        a.router_weight.shape[1] != a.x.shape[1])
      return invalid_argument("moe_route_cpu: want x [n, hidden] and router_weight [experts, hidden] for logits [n, experts]");
    KILN_RETURN_IF_ERROR(linear_cpu({a.x, a.router_weight, {}, a.router_logits, {}}));
  }
  std::vector<float> p(static_cast<size_t>(e));
  std::vector<int32_t> order(static_cast<size_t>(e));
  for (int64_t t = 0; t < n; ++t) {
    const float* l = a.router_logits.ptr<float>() + t * e;
    const float mx = *std::max_element(l, l + e);
    float sum = 0.f;
    for (int64_t i = 0; i < e; ++i) sum += p[static_cast<size_t>(i)] = std::exp(l[i] - mx);
    for (auto& v : p) v = std::isnan(v / sum) ? 0.f : v / sum;  // NaN logits: probability 0 (ids stay in range)
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t x, int32_t y) { return p[static_cast<size_t>(x)] > p[static_cast<size_t>(y)]; });
    float topsum = 0.f;
    for (int64_t j = 0; j < k; ++j) topsum += p[static_cast<size_t>(order[static_cast<size_t>(j)])];
    for (int64_t j = 0; j < k; ++j) {
      const int32_t id = order[static_cast<size_t>(j)];
      a.topk_ids.ptr<int32_t>()[t * k + j] = id;
      a.topk_weights.ptr<float>()[t * k + j] = a.renormalize ? p[static_cast<size_t>(id)] / topsum : p[static_cast<size_t>(id)];
    }
  }
  return ok_status();
}

}  // namespace kiln
