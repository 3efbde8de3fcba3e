// The MoE decode GEMM's wgmma rows. Internal to cuda/moe/moe_decode_gemm.cu (its variant table).
// The wgmma rows: CTA (blockIdx.x, blockIdx.y) = kWG warpgroups on the 64 kWG weight rows
// [64 kWG blockIdx.x, + 64 kWG) of the blockIdx.y-th distinct expert, the group's slots as wgmma's
// N side (8 / 16 / 32 / 64 / 96 by the group's size and the row's kMaxN; more: passes), x
// pre-quantized per token to e4m3 (skinny_wgmma.cuh).
// kS: k tiles in the ring (MoeDecodeGemmVariant::stages).
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

#include "kiln/kernels/cuda/gemm/skinny_gemm_core.cuh"
#include "kiln/kernels/cuda/gemm/skinny_wgmma.cuh"
#include "kiln/kernels/cuda/moe/moe_decode_group.cuh"
#include "kiln/kernels/moe_cuda.h"

namespace kiln::moe_decode {

// ids_poll: before the wait, warp 0 reads the p.slots (<= 32) ids, a lane each, until every one is
// an expert (the kernel that writes them set them to -1 first: MoeDecodeGemmArgs::ids_poll), for at
// most kIdsPollNs; true (for every thread of the CTA): spec_ids holds that snapshot.
constexpr long long kIdsPollNs = 50000;  // a speculation that does not come is given up after 50 us
__device__ __forceinline__ long long global_ns() {
  long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
inline __device__ bool poll_ids(const MoeDecodeParams& p, int32_t* spec_ids, int* spec_ok) {
  if (threadIdx.x < 32) {
    const int j = threadIdx.x;
    const long long t0 = global_ns();
    int e = -1;
    bool ok = false;
    for (;;) {  // a short fixed pause: the ids come a few us after the launch, and each us counts
      e = j < p.slots ? __ldcv(p.ids + j) : 0;  // volatile: a fresh read of L2 each round
      ok = __all_sync(0xffffffffu, j >= p.slots || (e >= 0 && e < p.num_experts));
      if (ok || global_ns() - t0 > kIdsPollNs) break;
      __nanosleep(64);
    }
    if (j < p.slots) spec_ids[j] = e;
    if (j == 0) *spec_ok = ok ? 1 : 0;
  }
  __syncthreads();
  return *spec_ok != 0;
}

// After the wait (every thread): whether the ids still equal the snapshot the CTA grouped on.
struct SpecCheck {
  const MoeDecodeParams* p = nullptr;  // nullptr: nothing speculative to check
  const int32_t* spec_ids = nullptr;
  int* same = nullptr;  // shared
  __device__ bool operator()() const {
    if (!p) return true;
    if (threadIdx.x < 32) {
      const int j = threadIdx.x;
      const bool diff = __any_sync(0xffffffffu, j < p->slots && __ldcg(p->ids + j) != spec_ids[j]);
      if (j == 0) *same = diff ? 0 : 1;
    }
    __syncthreads();
    return *same != 0;
  }
};

// pdl: the first weight tiles are requested before the wait for the previous kernel (x); verify:
// WgmmaCore::stream's check after the wait (false returned: the tiles were a speculative
// expert's, nothing stored).
template <int kN, int kS, int kWG, typename SlotIndex>
__device__ bool expert_rows_wgmma(const MoeDecodeParams& p, const SlotIndex* slot_of, int m, const uint8_t* w, const float* scale,
                                  int row_base, uint8_t* smem, bool pdl, const SpecCheck& verify) {
  using Core = skinny::wg::WgmmaCore<kN, kS, kWG>;
  const int tid = threadIdx.x;
  auto x_row = [&](int j) { return static_cast<int64_t>(p.x_per_slot ? slot_of[j] : slot_of[j] / p.top_k); };
  const uint8_t* xrow[Core::kXRowsPerThread];
#pragma unroll
  for (int j = 0; j < Core::kXRowsPerThread; ++j) {
    const int r = (tid >> 3) + Core::kRowsPerPass * j;
    xrow[j] = r < m ? p.xq + x_row(r) * p.k : nullptr;
  }
  float acc[Core::kAcc];
  if (!Core::stream(w, p.k, p.n, p.k, row_base, xrow, 0, (p.k + skinny::wg::kTileK - 1) / skinny::wg::kTileK, smem, pdl,
                    acc, verify))
    return false;
#pragma unroll
  for (int i = 0; i < Core::kAcc; ++i) {
    const int n = row_base + skinny::wg::acc_row(i), j = skinny::wg::acc_col(i);
    if (n >= p.n || j >= m) continue;
    float v = acc[i] * p.x_scale[x_row(j)];
    if (scale) v *= scale[n];
    p.y[slot_of[j] * p.ldy + n] = __float2bfloat16(v);
  }
  return true;
}


// The CTA's rows for its group (grp, from cta_group), in passes of at most kMaxN slots. pdl: the
// weight tiles are requested before the wait for the previous kernel; false returned: the check
// after the wait failed (SpecCheck; nothing stored): group again on the final ids.
template <int kS, int kMaxN, int kWG, typename SlotIndex>
__device__ bool group_rows(const MoeDecodeParams& p, const CtaGroup& grp, const SlotIndex* slot_of, uint8_t* smem, bool pdl,
                           const SpecCheck& check) {
  constexpr int kRows = skinny::wg::kRows * kWG;
  const int m = grp.m, expert = grp.expert, row_base = blockIdx.x * kRows;
  if (m == 0) return true;
  if (expert < 0 || expert >= p.num_experts) {  // a bad id: zeros, not someone else's memory
    if (pdl) skinny::wait_for_previous_kernel();  // no writes before it
    zero_rows<kRows>(p, slot_of, m, row_base, threadIdx.x, blockDim.x);
    return true;
  }
  const uint8_t* w = reinterpret_cast<const uint8_t*>(p.expert_ptrs[expert]);
  const float* scale = p.scale_ptrs ? reinterpret_cast<const float*>(p.scale_ptrs[expert]) : nullptr;
  if (kMaxN == 8 || m <= 8) {
    for (int b = 0; b < m; b += 8) {
      if (b > 0) __syncthreads();  // the ring is reused
      if (!expert_rows_wgmma<8, kS, kWG>(p, slot_of + b, min(8, m - b), w, scale, row_base, smem, pdl, check)) return false;
    }
  } else if (m <= 16) {
    if (!expert_rows_wgmma<16, kS, kWG>(p, slot_of, m, w, scale, row_base, smem, pdl, check)) return false;
  } else if (kMaxN == 96 && m > 32) {  // one pass up to 96 slots (n = 64 or 96), then more
    for (int b = 0; b < m; b += kMaxN) {
      if (b > 0) __syncthreads();  // the ring is reused
      const int mb = min(kMaxN, m - b);
      if (mb <= 64) {
        if (!expert_rows_wgmma<64, kS, kWG>(p, slot_of + b, mb, w, scale, row_base, smem, pdl, check)) return false;
      } else {
        if (!expert_rows_wgmma<96, kS, kWG>(p, slot_of + b, mb, w, scale, row_base, smem, pdl, check)) return false;
      }
    }
  } else if (kMaxN == 64 && m > 32) {
    for (int b = 0; b < m; b += 64) {
      if (b > 0) __syncthreads();  // the ring is reused
      if (!expert_rows_wgmma<kMaxN == 64 ? 64 : 32, kS, kWG>(p, slot_of + b, min(64, m - b), w, scale, row_base, smem, pdl, check))
        return false;
    }
  } else {
    for (int b = 0; b < m; b += 32) {
      if (b > 0) __syncthreads();  // the ring is reused
      if (!expert_rows_wgmma<32, kS, kWG>(p, slot_of + b, min(32, m - b), w, scale, row_base, smem, pdl, check)) return false;
    }
  }
  // (after the wait: in stream)
  if (grp.zero_bad) zero_bad_rows<kRows>(p, row_base, threadIdx.x, blockDim.x);
  return true;
}

// kMaxN: the widest slot tile (8: every pass takes at most 8 slots, and the ring's x tiles are 8
// rows, for a smaller shared memory footprint; 64: more than 32 slots on an expert in passes of
// 64, so that its rows are read once where a router spreads up to 256 tokens x top-2; 96: up to
// 96 slots in one pass, n = 64 or 96 by the group's size, so that an expert with 65-96 slots is
// not read twice). kWG: warpgroups per CTA (64 weight rows each, sharing the x tiles). kMaxSlots:
// the most slots a call may have (MoeDecodeGemmVariant::max_slots; 256: one-byte slot indices).
// ids_poll is compiled into the rows of at most 32-slot tiles only: the wide rows run for more
// than 32 slots, where it is off, and their registers are near the limit.
template <int kS, int kMaxN = 32, int kMaxSlots = kMoeDecodeMaxSlots, int kWG = 1>
__global__ void __launch_bounds__(skinny::wg::kThreads * kWG) moe_decode_wgmma_kernel(const __grid_constant__ MoeDecodeParams p) {
  constexpr bool kCanPoll = kMaxN <= 32;
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ SlotIndexT<kMaxSlots> slot_of[kMaxSlots];
  // Before the wait for the previous kernel: ids_ready (they come from an earlier kernel, complete
  // before the previous one passed its wait); else after it.
  if constexpr (!kCanPoll) {
    if (p.pdl && !p.ids_ready) {
      skinny::wait_for_previous_kernel();  // ids and x come from the kernels before this one
      skinny::allow_next_kernel();
    }
    group_rows<kS, kMaxN, kWG>(p, cta_group(p, slot_of, smem), slot_of, smem, p.pdl && p.ids_ready, SpecCheck{});
  } else {
    // Or ids_poll: the previous kernel writes them; read as soon as they are there, grouped on
    // that snapshot, checked after the wait.
    __shared__ int32_t spec_ids[kMoeDecodeIdsPollSlots];
    __shared__ int spec_flag;
    bool spec = p.pdl && !p.ids_ready && p.ids_poll && poll_ids(p, spec_ids, &spec_flag);
    bool pdl = p.pdl && (p.ids_ready || spec);
    if (p.pdl && !pdl) {
      skinny::wait_for_previous_kernel();
      skinny::allow_next_kernel();
    }
    for (;;) {
      const CtaGroup grp = cta_group(p, slot_of, smem, spec ? spec_ids : nullptr);
      if (spec && (grp.m == 0 || grp.expert < 0 || grp.expert >= p.num_experts || grp.zero_bad)) {
        // No weights to request early for this group: settle the ids first, then group again.
        skinny::wait_for_previous_kernel();
        skinny::allow_next_kernel();
        spec = pdl = false;
        __syncthreads();  // cta_group's scratch is reused
        continue;
      }
      const SpecCheck check = spec ? SpecCheck{&p, spec_ids, &spec_flag} : SpecCheck{};
      if (group_rows<kS, kMaxN, kWG>(p, grp, slot_of, smem, pdl, check)) return;
      spec = pdl = false;  // the check failed after the wait (the ring drained): the final ids now
    }
  }
}
template <int kS, int kMaxN = 32, int kWG = 1>
constexpr int kWgmmaSmemBytes = skinny::wg::WgmmaCore<kMaxN, kS, kWG>::kSmemBytes;
constexpr int kFewSlots = 256;  // the few-token and sparse-grid rows' limit (one-byte slot indices)
static_assert(kWgmmaSmemBytes<4> >= kGroupScratchBytes && kWgmmaSmemBytes<4, 8> >= kGroupScratchBytes);

}  // namespace kiln::moe_decode
