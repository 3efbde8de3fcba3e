// The MoE decode GEMM's kernel parameters and its grouping of slots by expert on the device
// (cta_group), shared by its CUDA-core rows (moe_decode_gemm.cu) and its wgmma rows
// (moe_decode_wgmma.cuh). Internal to cuda/moe/moe_decode_gemm.cu.
#pragma once
#include <cuda_bf16.h>

#include <cstdint>
#include <type_traits>

#include "kiln/kernels/moe_cuda.h"

namespace kiln::moe_decode {

// A slot's index in shared memory: one byte for kernels of at most 256 slots, so that the
// few-token wgmma row's static shared memory (the CTA's slot list; cta_group's grouping scratch
// lies in the dynamic ring) leaves room for a fourth 55 KB CTA per SM on the H100 (228 KB an SM,
// 1 KB reserved a CTA); two bytes up to kMoeDecodeMaxSlots.
template <int kMaxSlots>
using SlotIndexT = std::conditional_t<(kMaxSlots <= 256), uint8_t, uint16_t>;
static_assert(kMoeDecodeMaxSlots <= 65536);

struct MoeDecodeParams {
  const __nv_bfloat16* x;    // [t or slots, k], row stride ldx
  const uint8_t* xq;         // e4m3 variant: x as e4m3 [t or slots, k] (row stride k) and its scales
  const float* x_scale;
  const int32_t* ids;        // [slots]
  const int64_t* expert_ptrs;  // [num_experts] -> [n, k] bf16 | fp8
  const int64_t* scale_ptrs;   // [num_experts] -> [n] f32, or nullptr
  __nv_bfloat16* y;          // [slots, n], row stride ldy
  int64_t ldx, ldy;
  int slots, top_k, x_per_slot, num_experts, n, k, pdl;
  int ids_ready;  // wgmma row: the ids may be read before griddepcontrol.wait (MoeDecodeGemmArgs::ids_ready)
  int ids_poll;   // wgmma row: poll the ids before the wait, verify them after it (MoeDecodeGemmArgs::ids_poll)
};

// cta_group's scratch in dynamic shared memory (free until the ring starts): the first slot of
// each expert id (+ one key for every id out of range) and each slot's key.
constexpr int kMaxGroupExperts = 256;  // experts a call may have (the router's limit too)
constexpr int kGroupScratchBytes = (kMaxGroupExperts + 1) * 4 + kMoeDecodeMaxSlots * 2;

// This CTA's group: the blockIdx.y-th distinct expert of ids (in order of first appearance) and
// its m slots in order (slot_of: shared [kMoeDecodeMaxSlots]); m = 0 past the last group. Every
// id outside [0, num_experts) maps to the one key num_experts (expert_out: out of range, so the
// kernels write zeros), a group after all the valid ones; where it does not fit in the grid (as
// many valid experts as CTA rows), the last row of CTAs zeros their rows as well (zero_bad: see
// zero_bad_rows). scratch: kGroupScratchBytes of shared memory. All threads of the CTA call it
// (barriers inside).
struct CtaGroup {
  int m = 0, expert = 0;
  bool zero_bad = false;
};
// spec_ids (shared memory, p.slots <= kMoeDecodeIdsPollSlots): group on this snapshot of the ids
// instead of reading them (ids_poll: the ids that the check after the wait compares).
template <typename SlotIndex>
__device__ CtaGroup cta_group(const MoeDecodeParams& p, SlotIndex* slot_of, uint8_t* scratch, const int32_t* spec_ids = nullptr) {
  int* first_slot = reinterpret_cast<int*>(scratch);                                    // [num_experts + 1]
  int16_t* key = reinterpret_cast<int16_t*>(scratch + (kMaxGroupExperts + 1) * 4);  // [slots]
  __shared__ CtaGroup group_out;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, bad = p.num_experts;
  for (int e = threadIdx.x; e <= bad; e += blockDim.x) first_slot[e] = kMoeDecodeMaxSlots;
  __syncthreads();
  // From L2 (ld.global.cg): with ids_ready this runs before griddepcontrol.wait, where PDL does not
  // promise that the ids written by an earlier kernel are visible through this SM's L1 (an older
  // layer's copy of the same scratch address may still sit there); L2 holds the router's writes.
  for (int j = threadIdx.x; j < p.slots; j += blockDim.x) {
    const int e = spec_ids ? spec_ids[j] : __ldcg(p.ids + j);
    const int kj = e >= 0 && e < bad ? e : bad;
    key[j] = static_cast<int16_t>(kj);
    atomicMin(first_slot + kj, j);
  }
  __syncthreads();
  if (warp == 0) {
    const int group = static_cast<int>(blockIdx.y);
    const unsigned below = (1u << lane) - 1u;
    // The group-th slot that is the first of its valid expert names the group.
    int valid = 0, expert = -1;
    bool any_bad = false;
    for (int c = 0; c < p.slots; c += 32) {
      const int j = c + lane;
      const unsigned b = __ballot_sync(0xffffffffu, j < p.slots && key[j] < bad && first_slot[key[j]] == j);
      if (expert < 0 && group < valid + __popc(b)) {
        unsigned bits = b;
        for (int r = group - valid; r > 0; --r) bits &= bits - 1;
        expert = key[c + __ffs(bits) - 1];
      }
      valid += __popc(b);
      any_bad |= __ballot_sync(0xffffffffu, j < p.slots && key[j] == bad) != 0u;
    }
    if (expert < 0 && any_bad && group == valid) expert = bad;
    int m = 0;  // the group's slots in order
    if (expert >= 0)
      for (int c = 0; c < p.slots; c += 32) {
        const bool in = c + lane < p.slots && key[c + lane] == expert;
        const unsigned b = __ballot_sync(0xffffffffu, in);
        if (in) slot_of[m + __popc(b & below)] = static_cast<SlotIndex>(c + lane);
        m += __popc(b);
      }
    const bool zero_bad = any_bad && valid >= static_cast<int>(gridDim.y) && group == static_cast<int>(gridDim.y) - 1;
    if (lane == 0) group_out = {m, expert, zero_bad};
  }
  __syncthreads();  // (the scratch is free again)
  return group_out;
}

// y = 0 on the kRows weight rows from row_base for the group's m slots (a slot routed to an
// expert id out of range), threads i0, i0 + stride, ... of the CTA.
template <int kRows, typename SlotIndex>
__device__ __forceinline__ void zero_rows(const MoeDecodeParams& p, const SlotIndex* slot_of, int m, int row_base, int i0, int stride) {
  for (int i = i0; i < m * kRows; i += stride) {
    const int n = row_base + i % kRows;
    if (n < p.n) p.y[slot_of[i / kRows] * p.ldy + n] = __float2bfloat16(0.f);
  }
}

// y = 0 on the kRows weight rows from row_base for every slot whose id is out of range (the ids
// read again: CtaGroup::zero_bad, a rare path), threads i0, i0 + stride, ... of the CTA.
template <int kRows>
__device__ __forceinline__ void zero_bad_rows(const MoeDecodeParams& p, int row_base, int i0, int stride) {
  for (int i = i0; i < p.slots * kRows; i += stride) {
    const int n = row_base + i % kRows, j = i / kRows, e = __ldcg(p.ids + j);
    if (n < p.n && (e < 0 || e >= p.num_experts)) p.y[static_cast<int64_t>(j) * p.ldy + n] = __float2bfloat16(0.f);
  }
}

}  // namespace kiln::moe_decode
