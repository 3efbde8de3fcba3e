// Mixture-of-experts routing: softmax over the router logits, top-k experts per token, and
// optional renormalization of the k weights to sum to one (Mixtral). The expert MLPs themselves
// run as linear layers over the tokens routed to each expert (see models/mixtral.cc).
#pragma once
#include "kiln/core/status.h"
#include "kiln/core/tensor.h"

namespace kiln {

struct MoeRouteArgs {
  Tensor router_logits;  // [num_tokens, num_experts] f32
  Tensor topk_ids;       // [num_tokens, k] int32 out (descending weight; ties -> lower id first)
  Tensor topk_weights;   // [num_tokens, k] f32 out
  bool renormalize = true;
};

Status moe_route_cpu(const MoeRouteArgs& args);

}  // namespace kiln
