// One warp routes one token from its router logits (global or shared memory): softmax, top-k by
// repeated warp argmax (ties to the lower expert id, as the CPU's stable sort), optional
// renormalization; lane l holds experts l, l + 32, ... (num_experts <= kMaxExperts). Shared by the
// router kernels (moe_route.cu) and the norm + router row of rmsnorm_cuda (norm/rmsnorm.cu). P: any
// parameter struct with topk_ids [n, k] int32, topk_weights [n, k] f32, num_experts, k, renormalize.
#pragma once
#include <cfloat>
#include <cstdint>

#include "kiln/kernels/cuda/common/reduce.cuh"

namespace kiln::moe_route {

inline constexpr int kPerLane = 8;
inline constexpr int kMaxExperts = 32 * kPerLane;
inline constexpr int kHeldChoices = 8;  // top-k weights route_token keeps in registers

// The better of (value, id) pairs: larger value, then lower id. Taken ids carry value -1,
// lanes past the experts -3.
__device__ __forceinline__ void keep_better(float& v, int& id, float ov, int oid) {
  if (ov > v || (ov == v && oid < id)) { v = ov; id = oid; }
}

// One warp routes token t from its logits (global or shared memory).
template <typename P>
__device__ void route_token(const P& p, int64_t t, const float* logits, int lane) {
  float prob[kPerLane];
  float mx = -FLT_MAX;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int e = lane + 32 * j;
    prob[j] = e < p.num_experts ? logits[e] : -FLT_MAX;
    mx = fmaxf(mx, prob[j]);
  }
  mx = cuda::warp_max(mx);
  float sum = 0.f;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    prob[j] = lane + 32 * j < p.num_experts ? expf(prob[j] - mx) : 0.f;
    sum += prob[j];
  }
  sum = cuda::warp_sum(sum);
#pragma unroll
  // Lanes past the experts can never be picked (-3 < the -2 a search starts from); a NaN
  // probability (NaN activations) counts as 0, so the ids stay in range whatever the input.
  for (int j = 0; j < kPerLane; ++j) {
    const float v = prob[j] / sum;
    prob[j] = lane + 32 * j < p.num_experts ? (v == v ? v : 0.f) : -3.f;
  }

  int32_t* ids = p.topk_ids + t * p.k;
  float* weights = p.topk_weights + t * p.k;
  float top_sum = 0.f;
  // The first kHeldChoices weights stay in registers until the renormalization, so that it does not
  // read back from global memory what this warp just stored (a round trip per choice on the
  // batch-1 decode step's path to the expert GEMMs).
  float held[kHeldChoices];
  for (int r = 0; r < p.k; ++r) {
    float best = -2.f;
    int best_id = 0x7fffffff;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) keep_better(best, best_id, prob[j], lane + 32 * j);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, best, o);
      const int oid = __shfl_xor_sync(0xffffffffu, best_id, o);
      keep_better(best, best_id, ov, oid);
    }
#pragma unroll
    for (int j = 0; j < kPerLane; ++j)
      if (lane + 32 * j == best_id) prob[j] = -1.f;  // taken
    if (lane == 0) {
      ids[r] = best_id;
      top_sum += best;  // in choice order, as the CPU
      if (r < kHeldChoices) {
#pragma unroll
        for (int h = 0; h < kHeldChoices; ++h)  // a constant index: held stays in registers
          if (h == r) held[h] = best;
      }
      if (r >= kHeldChoices || !p.renormalize) weights[r] = best;
    }
  }
  if (lane == 0 && p.renormalize) {
#pragma unroll
    for (int h = 0; h < kHeldChoices; ++h)
      if (h < p.k) weights[h] = held[h] / top_sum;
    for (int r = kHeldChoices; r < p.k; ++r) weights[r] = weights[r] / top_sum;
  }
}

}  // namespace kiln::moe_route
