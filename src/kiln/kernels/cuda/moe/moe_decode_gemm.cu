// MoE decode GEMM: y[s] = x[token(s) or s] @ W_{ids[s]}^T (* scale) for the t * top_k <=
// kMoeDecodeMaxSlots (512) slots of a decode step or a short prompt chunk, with the slots grouped by
// expert on the device (cta_group). CTA (blockIdx.x, blockIdx.y)
// takes 16 weight rows of the blockIdx.y-th distinct expert of ids (in order of first
// appearance; CTAs past the last distinct expert exit at once) for all the slots that picked it,
// through the decode GEMM's streaming core (cuda/gemm/skinny_gemm_core.cuh). Variants: experts
// bf16 | fp8 e4m3 with per-channel f32 scales (fp8 widened exactly to bf16, or to f16 with x
// rounded to f16, or x quantized per token to e4m3 by a pre-pass kernel into args.workspace and
// the e4m3 mma: moe_decode_gemm_variants.h); m tiles of 8 / 16 / 32 slots per expert, chosen in
// the kernel from the group's size (more than 32 slots on one expert: passes of 32; the wgmma rows:
// 8 / 16 / 32 / 64 / 96, moe_decode_wgmma.cuh). The parameters and the grouping by expert:
// moe_decode_group.cuh. No host synchronization: CUDA-graph capturable.
#include <cuda_bf16.h>

#include <algorithm>
#include <array>
#include <string>
#include <type_traits>

#include "kiln/kernels/cuda/common/cuda_check.h"
#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/cuda/gemm/skinny_gemm_core.cuh"
#include "kiln/kernels/cuda/gemm/skinny_wgmma.cuh"
#include "kiln/kernels/cuda/gemm/skinny_x_fp8.cuh"
#include "kiln/kernels/cuda/moe/moe_decode_gemm_variants.h"
#include "kiln/kernels/cuda/moe/moe_decode_group.cuh"
#include "kiln/kernels/cuda/moe/moe_decode_wgmma.cuh"
#include "kiln/kernels/moe_cuda.h"
#include "kiln/kernels/cuda/common/pdl.cuh"

namespace kiln {
namespace {

using skinny::frag_m;
using skinny::frag_n;
using skinny::kMaxWarps;
using moe_decode::cta_group;
using moe_decode::CtaGroup;
using moe_decode::kFewSlots;
using moe_decode::kGroupScratchBytes;
using moe_decode::kMaxGroupExperts;
using moe_decode::kWgmmaSmemBytes;
using moe_decode::moe_decode_wgmma_kernel;
using moe_decode::MoeDecodeParams;
using moe_decode::SlotIndexT;
using moe_decode::zero_bad_rows;
using moe_decode::zero_rows;

constexpr int kU = 2, kS = 6;  // k steps per chunk, ring slots (as the decode GEMM's m <= 8 kernels)

// The rows [row_base, row_base + 16) of expert w for the m slots slot_of[0..m).
template <bool kFp8, bool kF16, bool kE4m3, int kMT, typename SlotIndex>
__device__ void expert_rows(const MoeDecodeParams& p, const SlotIndex* slot_of, int m, const uint8_t* w, const float* scale,
                            int row_base, uint8_t* smem, int warp, int nwarps) {
  using Core = skinny::Core<kFp8, kMT, 1, kU, kS, kF16, kE4m3>;
  using F = typename Core::F;
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const typename Core::XT* xrow[kMT];
#pragma unroll
  for (int nt = 0; nt < kMT; ++nt) {
    const int j = nt * 8 + g;
    const int s = j < m ? slot_of[j] : 0;
    const int64_t r = p.x_per_slot ? s : s / p.top_k;
    if constexpr (kE4m3) xrow[nt] = j < m ? p.xq + r * p.k + t * F::kElemsPerVec : nullptr;
    else xrow[nt] = j < m ? p.x + r * p.ldx + t * F::kElemsPerVec : nullptr;
  }
  const int num_steps = (p.k + F::kStepK - 1) / F::kStepK;
  const int64_t ldw_bytes = static_cast<int64_t>(p.k) * (kFp8 ? 1 : 2);
  float acc[1][kMT][4] = {};
  Core::stream(w, ldw_bytes, p.n, p.k, row_base, xrow, 0, num_steps, warp, nwarps, smem + warp * Core::kSmemPerWarp,
               false, acc);
  Core::reduce_warps(acc, smem, warp, nwarps);
  if (warp != 0) return;
#pragma unroll
  for (int nt = 0; nt < kMT; ++nt)
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const int n = frag_n(row_base, 0, c, g), j = frag_m(nt, c, t);
      if (n >= p.n || j >= m) continue;
      float v = acc[0][nt][c];
      if constexpr (kE4m3) v *= p.x_scale[p.x_per_slot ? slot_of[j] : slot_of[j] / p.top_k];
      if (scale) v *= scale[n];
      p.y[slot_of[j] * p.ldy + n] = __float2bfloat16(v);
    }
}

template <bool kFp8, bool kF16, bool kE4m3>
__global__ void __launch_bounds__(kMaxWarps * 32, 2) moe_decode_gemm_kernel(const __grid_constant__ MoeDecodeParams p) {
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ SlotIndexT<kMoeDecodeMaxSlots> slot_of[kMoeDecodeMaxSlots];
  const int warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5, lane = threadIdx.x & 31;
  if (p.pdl) {
    skinny::wait_for_previous_kernel();  // ids and x come from the kernels before this one
    skinny::allow_next_kernel();
  }
  const CtaGroup grp = cta_group(p, slot_of, smem);
  const int m = grp.m, expert = grp.expert;
  if (m == 0) return;
  const int row_base = blockIdx.x * 16;
  if (grp.zero_bad) zero_bad_rows<16>(p, row_base, threadIdx.x, blockDim.x);
  if (expert < 0 || expert >= p.num_experts) {  // a bad id: zeros, not someone else's memory
    if (warp == 0) zero_rows<16>(p, slot_of, m, row_base, lane, 32);
    return;
  }
  const uint8_t* w = reinterpret_cast<const uint8_t*>(p.expert_ptrs[expert]);
  const float* scale = p.scale_ptrs ? reinterpret_cast<const float*>(p.scale_ptrs[expert]) : nullptr;
  if (m <= 8) expert_rows<kFp8, kF16, kE4m3, 1>(p, slot_of, m, w, scale, row_base, smem, warp, nwarps);
  else if (m <= 16) expert_rows<kFp8, kF16, kE4m3, 2>(p, slot_of, m, w, scale, row_base, smem, warp, nwarps);
  else  // passes of 32 slots (an expert's rows are read once per pass, after the first mostly from L2)
    for (int b = 0; b < m; b += 32) {
      if (b > 0) __syncthreads();  // the reduction area is reused
      expert_rows<kFp8, kF16, kE4m3, 4>(p, slot_of + b, min(32, m - b), w, scale, row_base, smem, warp, nwarps);
    }
}

struct MoeDecodeVariant {
  MoeDecodeGemmVariant v;
  const void* kernel;
  int wgmma_smem = 0;  // wgmma rows: dynamic shared memory bytes
};
// The shipped variants: bf16 experts; fp8 e4m3 experts with per-channel scales, widened exactly
// to bf16 or to f16 (skinny_gemm_core.cuh), or x quantized per token to e4m3 (needs
// args.workspace; without it the f16 row runs). H100 (Mixtral experts, % of 3000 GB/s), exact
// bf16 -> f16: t = 1 gate_up 71.8 -> 73.4, down 65.8 -> 68.3; t = 8 gate_up 70.8 -> 71.2, down
// 71.3 -> 72.3. f16 -> e4m3 (slower: sm_90 lowers the fp8 mma.sync to f16 unpacks + HMMA, see
// skinny_gemm.cu): t = 1 gate_up 69.2 -> 55.4, down 67.7 -> 60.7; t = 8 61.8 -> 54.5, 71.1 -> 67.9;
// t = 32 50.5 -> 45.2, 66.1 -> 59.0; t = 64 37.6 -> 30.6, 51.6 -> 36.8. <w, f16, e4m3, preferred>
const MoeDecodeVariant kMoeVariants[] = {
    {{DType::kBF16, false, false, true}, reinterpret_cast<const void*>(&moe_decode_gemm_kernel<false, false, false>)},
    {{DType::kFp8E4M3, false, false, false}, reinterpret_cast<const void*>(&moe_decode_gemm_kernel<true, false, false>)},
    {{DType::kFp8E4M3, true, false, true}, reinterpret_cast<const void*>(&moe_decode_gemm_kernel<true, true, false>)},
    {{DType::kFp8E4M3, false, true, false}, reinterpret_cast<const void*>(&moe_decode_gemm_kernel<true, false, true>)},
    // The wgmma row (x quantized per token to e4m3 into args.workspace, wgmma.m64nNk32.e4m3 on the
    // raw expert bytes, skinny_wgmma.cuh): preferred with a workspace until the 4-tile row at the
    // end of the table (2026-11-23) took its place. H100, graph-timed, % of 3000
    // GB/s, gate_up / down, f16 row -> wgmma row: t = 1 69.2 / 67.7 -> 91.5 / 76.3; t = 8 62.0 /
    // 71.2 -> 100.3 / 88.5; t = 32 50.9 / 66.1 -> 98.3 / 89.6; t = 64 37.6 / 51.7 -> 94.5 / 84.9.
    {{DType::kFp8E4M3, false, true, false, true, 6}, reinterpret_cast<const void*>(&moe_decode_wgmma_kernel<6>), kWgmmaSmemBytes<6>},
    // Sparse grids (at most one CTA per SM, so at most 2 slots: batch-1 down, 64 row blocks x 2
    // experts): 6 tiles in flight per SM are too few bytes. A 16-tile ring of 8-slot x tiles (145
    // KB; an 8-tile one, 75 KB, until session 28: below). H100, graph-timed down at t = 1,
    // % of 3000 GB/s: ring 6 / 10 / 16 (32-slot tiles) 79.1 / 85.4 / 85.2, ring 8 / 10 / 14 (8-slot)
    // 81.2 / 82.1 / 85.1. Yet in the Mixtral decode step (batch 1, fp8, tok/s, two interleaved
    // runs each) the larger rings lose what they gain: ring 6 167.5 / 167.2, 10 (32-slot, 133 KB)
    // 165.0 / 161.9, 10 (8-slot) 167.9 / 168.6, 14 (8-slot) 167.5 / 166.8, 8 (8-slot) 168.7 / 169.0
    // (shipped then) -- presumably as fewer of the next kernels' CTAs fit beside them early (PDL).
    // 2026-11-24 (session 28), after the layer-end norm began to trigger before its wait (the qkv
    // GEMM's CTAs now start during down): a 16-tile ring (145 KB; beside one gate_up CTA, so down's
    // CTAs still start in gate_up's tail) requests ~16 MB of down's weights while the SwiGLU runs
    // instead of ~8 MB. Mixtral fp8 batch-1 decode, tok/s, three rounds (one call): ring 8 186.5
    // -> 16 188.8, 18 188.4, 20 188.0; with fp8 KV and a 1K prompt 182.4 -> 184.0 / 183.6 / 183.8.
    // Timeline: the SwiGLU's share 5.1 -> 4.6 us a layer, the step 5317 -> 5261 us.
    {{DType::kFp8E4M3, false, true, false, true, 16, true, 8, false, 0, kFewSlots},
     reinterpret_cast<const void*>(&moe_decode_wgmma_kernel<16, 8, kFewSlots>), kWgmmaSmemBytes<16, 8>},
    // At most 8 tokens (so at most 8 slots per expert: a token's experts are distinct) on a grid
    // that is not sparse: a 6-tile ring of 8-slot x tiles (55 KB, four CTAs per SM instead of
    // three). H100, graph-timed, % of 3000 GB/s, against the row above it: t = 1 gate_up 92.1 vs
    // 91.4; t = 8 gate_up 100.0 vs 99.6, down 91.5 vs 90.1. Mixtral fp8 batch-1 decode 184.0 ->
    // 184.9 tok/s (two rounds each). Rings of 10 / 12 such tiles for the sparse batch-1 down:
    // 82.5 / 82.0 vs 83.1 (ring 8), 183.6 / 183.0 tok/s: not taken. (The four CTAs per SM came
    // only with one-byte slot indices (SlotIndex, 2026-11-23): with int ones the CTA took 136 bytes
    // too many and Nsight Compute showed three. Same call, int -> byte: t = 8 down 91.7 -> 95.8,
    // gate_up 100.5 -> 100.7; t = 1 gate_up 92.8 -> 93.3, down 83.6 -> 83.6; Mixtral fp8 batch-1
    // decode 185.2 -> 185.0, 1K prompt + fp8 KV 178.4 -> 178.3 tok/s, four rounds: unchanged;
    // `bench latency` decode step, batch 8: 16.0 -> 15.8 ms, batch 4: 12.1 -> 12.2 ms.)
    {{DType::kFp8E4M3, false, true, false, true, 6, false, 8, true, 0, kFewSlots},
     reinterpret_cast<const void*>(&moe_decode_wgmma_kernel<6, 8, kFewSlots>), kWgmmaSmemBytes<6, 8>},
    // The preferred row since 2026-11-23 (the 6-tile one above before): 32-slot x tiles in a
    // 4-tile ring, 51 KB, four CTAs per SM instead of three. H100, graph-timed, % of 3006 GB/s,
    // ring 6 -> 4: t = 32 gate_up 97.8 -> 98.6, down 91.9 -> 93.4; t = 64 gate_up 94.4 -> 95.7,
    // down 90.7 -> 91.8. Mixtral fp8 `bench latency` decode step (two rounds): batch 16 18.1 / 18.2
    // -> 17.9 / 17.8 ms, batch 32 19.5 / 19.8 -> 19.3 / 19.5 ms.
    {{DType::kFp8E4M3, false, true, true, true, 4}, reinterpret_cast<const void*>(&moe_decode_wgmma_kernel<4>), kWgmmaSmemBytes<4>},
    // Past 64 tokens (up to kMoeDecodeMaxSlots = 512 slots, 2026-11-24): 32 or more slots an
    // expert on average, more on some, so passes of 32 read those experts' rows twice or more.
    // 64-slot x tiles in a 3-tile ring (49 KB, four CTAs per SM: the down GEMM's 512 CTAs in one
    // wave). H100, graph-timed, % of 3000 GB/s, gate_up / down, ring 4 (65 KB, three per SM) ->
    // ring 3: t = 128 87.2 / 79.5 -> 89.8 / 89.0; t = 256 57.3 / 57.3 -> 60.1 / 57.7; t = 64 94.6 /
    // 87.7 -> 95.4 / 91.3 (the preferred row there: 96.3 / 92.7). 128-slot tiles (rings 4 / 3):
    // t = 128 78.3 / 85.4, 86.3 / 81.1; t = 256 60.1 / 66.1, 77.1 / 70.6 (not kept).
    {{DType::kFp8E4M3, false, true, false, true, 3, false, 64, false, 65}, reinterpret_cast<const void*>(&moe_decode_wgmma_kernel<3, 64>),
     kWgmmaSmemBytes<3, 64>},
    // From 208 tokens (2026-11-24): ~52+ slots an expert on average (Mixtral: 8 experts, top-2), so
    // many experts have more than 64 and the row above reads them twice. One pass of up to 96 slots
    // (wgmma n = 64 or 96 by the group's size): a 3-tile ring (61 KB, three CTAs per SM: 168
    // registers a thread); for long rows (k >= 8192: the down GEMM) two warpgroups (128 weight rows
    // a CTA sharing each x tile) in a 5-tile ring (141 KB, one CTA per SM), whose ramp the 112 k
    // tiles amortize. H100, graph-timed, % of 3000 GB/s, gate_up / down at t = 256: the 64-slot row
    // 60.2 / 57.6; one warpgroup, n 96: 68.8 / 70.0, n 128 (ring 3, 252 registers: two CTAs per SM)
    // 59.3 / 73.2; two warpgroups, n 96, ring 5: 64.8 / 78.4, ring 7: 66.1 / 78.1, n 64 ring 4:
    // 60.8 / 57.5. At t = 128 the 64-slot row stays ahead (89.5 / 88.9 against 85.6 / 78.0 and
    // 79.5 / 86.0).
    {{DType::kFp8E4M3, false, true, false, true, 3, false, 96, false, 208}, reinterpret_cast<const void*>(&moe_decode_wgmma_kernel<3, 96>),
     kWgmmaSmemBytes<3, 96>},
    {{DType::kFp8E4M3, false, true, false, true, 5, false, 96, false, 208, kMoeDecodeMaxSlots, 2, 8192},
     reinterpret_cast<const void*>(&moe_decode_wgmma_kernel<5, 96, kMoeDecodeMaxSlots, 2>), kWgmmaSmemBytes<5, 96, 2>},
};
constexpr int kNumMoeVariants = sizeof(kMoeVariants) / sizeof(kMoeVariants[0]);

// The ring (the largest m tile's reduction area is smaller) per warp, the same for every m tile.
constexpr int kSmemPerWarp = std::max(skinny::Core<true, 4, 1, kU, kS>::kSmemPerWarp, skinny::Core<false, 4, 1, kU, kS>::kSmemPerWarp);
static_assert(kSmemPerWarp >= kGroupScratchBytes, "cta_group's scratch fits one warp's ring");

Status check_device(const Tensor& t, DType dtype, int ndim, const char* name) {
  if (t.device != Device::kCuda || t.dtype != dtype || t.ndim != ndim || (t.strides[ndim - 1] != 1 && t.shape[ndim - 1] > 1))
    return invalid_argument(std::string("moe_decode_gemm: ") + name + " is " + t.shape_string() + ", want " +
                            std::to_string(ndim) + "-D " + std::string(dtype_name(dtype)) + " cuda with contiguous rows");
  return ok_status();
}

// The kernel parameters of a checked call (xq / x_scale: set by quantize_x).
MoeDecodeParams params(const MoeDecodeGemmArgs& a, int64_t top_k, int64_t slots, int64_t num_experts) {
  const bool fp8 = a.w_dtype == DType::kFp8E4M3;
  MoeDecodeParams p{};
  p.x = static_cast<const __nv_bfloat16*>(a.x.data);
  p.ids = a.ids.ptr<int32_t>();
  p.expert_ptrs = a.expert_ptrs.ptr<int64_t>();
  p.scale_ptrs = fp8 ? a.scale_ptrs.ptr<int64_t>() : nullptr;
  p.y = static_cast<__nv_bfloat16*>(a.y.data);
  p.ldx = a.x.strides[0];
  p.ldy = a.y.strides[0];
  p.slots = static_cast<int>(slots);
  p.top_k = static_cast<int>(top_k);
  p.x_per_slot = a.x.shape[0] == slots && top_k > 1;
  p.num_experts = static_cast<int>(num_experts);
  p.n = static_cast<int>(a.n);
  p.k = static_cast<int>(a.x.shape[1]);
  p.pdl = 1;
  return p;
}

// The e4m3 rows' pre-pass: x -> e4m3 per row into the workspace; points p at it.
Status quantize_x(const MoeDecodeGemmArgs& a, int64_t x_rows, MoeDecodeParams& p, cudaStream_t stream) {
  uint8_t* base = static_cast<uint8_t*>(a.workspace.data);
  skinny::XFp8Params qp{p.x, p.ldx, base + skinny::kXFp8ScaleBytes, reinterpret_cast<float*>(base), p.k, 1};
  void* qargs[] = {&qp};
  KILN_CUDA_CHECK(cuda::launch_pdl(reinterpret_cast<const void*>(&skinny::quantize_x_fp8_kernel), dim3(static_cast<unsigned>(x_rows)),
                                   dim3(skinny::kXFp8Threads), 0, stream, qargs));
  p.xq = base + skinny::kXFp8ScaleBytes;
  p.x_scale = reinterpret_cast<const float*>(base);
  return ok_status();
}

// x already quantized per row (MoeDecodeGemmArgs::x_scale): points p at it.
Status use_quantized_x(const MoeDecodeGemmArgs& a, MoeDecodeParams& p) {
  p.x = nullptr;
  p.xq = static_cast<const uint8_t*>(a.x.data);
  p.x_scale = static_cast<const float*>(a.x_scale.data);
  return ok_status();
}

}  // namespace

std::span<const MoeDecodeGemmVariant> moe_decode_gemm_variants() {
  static const auto table = [] {
    std::array<MoeDecodeGemmVariant, kNumMoeVariants> t{};
    for (int i = 0; i < kNumMoeVariants; ++i) t[static_cast<size_t>(i)] = kMoeVariants[i].v;
    return t;
  }();
  return table;
}

int64_t moe_decode_gemm_workspace_bytes(int64_t x_rows, int64_t k) { return skinny::x_fp8_bytes(x_rows, k); }

Status moe_decode_gemm_cuda(const MoeDecodeGemmArgs& a, CUstream_st* stream) {
  // The preferred row of the experts' dtype; an e4m3 one only with a workspace (else the other).
  int vi = -1;
  for (int i = 0; i < kNumMoeVariants; ++i) {
    const MoeDecodeGemmVariant& v = kMoeVariants[i].v;
    const bool x_fp8 = a.x.dtype == DType::kFp8E4M3;
    if (v.preferred && v.w == a.w_dtype && (!v.e4m3 || !a.workspace.empty() || x_fp8) && (!x_fp8 || v.e4m3) &&
        (vi < 0 || (v.e4m3 && !kMoeVariants[vi].v.e4m3)))
      vi = i;
  }
  if (vi >= 0 && kMoeVariants[vi].v.wgmma) {  // a sparse grid takes the deep-ring wgmma row
    const int64_t slots = a.ids.numel(), experts = a.expert_ptrs.numel(), tokens = a.ids.shape[0];
    const int64_t ctas = (a.n + skinny::wg::kRows - 1) / skinny::wg::kRows * std::min(slots, experts);
    // (more slots than the sparse-grid row takes: the rows by tokens, as on a full grid)
    const bool sparse = ctas <= cuda_sm_count() && slots <= kFewSlots;
    for (int i = 0; i < kNumMoeVariants; ++i) {
      const MoeDecodeGemmVariant& v = kMoeVariants[i].v;
      if (v.w != a.w_dtype) continue;
      if (slots > v.max_slots) continue;
      const bool many = v.min_tokens > 0 && tokens >= v.min_tokens && a.x.shape[1] >= v.min_k;
      if (sparse ? v.sparse_grid : (v.few_tokens && tokens <= v.max_n) || many) vi = i;
    }
  }
  if (vi >= 0) return moe_decode_gemm_cuda_variant(a, vi, stream);
  return unimplemented("moe_decode_gemm: experts " + std::string(dtype_name(a.w_dtype)) + " (supported: bf16, fp8_e4m3)");
}

Status moe_decode_gemm_cuda_variant(const MoeDecodeGemmArgs& a, int variant, CUstream_st* stream) {
  if (variant < 0 || variant >= kNumMoeVariants || kMoeVariants[variant].v.w != a.w_dtype)
    return invalid_argument("moe_decode_gemm: variant " + std::to_string(variant) + " does not take " +
                            std::string(dtype_name(a.w_dtype)) + " experts");
  const MoeDecodeVariant* var = &kMoeVariants[variant];
  const bool fp8 = a.w_dtype == DType::kFp8E4M3, x_fp8 = a.x.dtype == DType::kFp8E4M3;
  if (x_fp8 && !var->v.e4m3)
    return invalid_argument("moe_decode_gemm: fp8 x (pre-quantized) needs an e4m3 variant; variant " + std::to_string(variant) +
                            " takes bf16 x");
  KILN_RETURN_IF_ERROR(check_device(a.x, x_fp8 ? DType::kFp8E4M3 : DType::kBF16, 2, "x"));
  KILN_RETURN_IF_ERROR(check_device(a.ids, DType::kInt32, 2, "ids"));
  KILN_RETURN_IF_ERROR(check_device(a.expert_ptrs, DType::kInt64, 1, "expert_ptrs"));
  KILN_RETURN_IF_ERROR(check_device(a.y, DType::kBF16, 2, "y"));
  if (!a.ids.is_contiguous()) return invalid_argument("moe_decode_gemm: ids must be contiguous");
  const int64_t t = a.ids.shape[0], top_k = a.ids.shape[1], slots = t * top_k, k = a.x.shape[1], n = a.n;
  const int64_t num_experts = a.expert_ptrs.shape[0];
  if (slots == 0 || n == 0) return ok_status();
  if (num_experts > kMaxGroupExperts)
    return unimplemented("moe_decode_gemm: " + std::to_string(num_experts) + " experts > " + std::to_string(kMaxGroupExperts));
  if (slots > kMoeDecodeMaxSlots)
    return unimplemented("moe_decode_gemm: " + std::to_string(slots) + " slots (t * top_k) > " +
                         std::to_string(kMoeDecodeMaxSlots) + ": use the grouped GEMM (moe_grouped_gemm_cuda)");
  if (slots > var->v.max_slots)
    return unimplemented("moe_decode_gemm: variant " + std::to_string(variant) + " takes at most " +
                         std::to_string(var->v.max_slots) + " slots, not " + std::to_string(slots));
  if (a.x.shape[0] != t && a.x.shape[0] != slots)
    return invalid_argument("moe_decode_gemm: x " + a.x.shape_string() + " has neither t = " + std::to_string(t) +
                            " nor t * top_k = " + std::to_string(slots) + " rows");
  if (a.y.shape[0] != slots || a.y.shape[1] != n)
    return invalid_argument("moe_decode_gemm: y " + a.y.shape_string() + ", want [" + std::to_string(slots) + ", " +
                            std::to_string(n) + "]");
  if (fp8) {
    KILN_RETURN_IF_ERROR(check_device(a.scale_ptrs, DType::kInt64, 1, "scale_ptrs"));
    if (a.scale_ptrs.shape[0] != num_experts)
      return invalid_argument("moe_decode_gemm: " + std::to_string(a.scale_ptrs.shape[0]) + " scale pointers for " +
                              std::to_string(num_experts) + " experts");
  } else if (!a.scale_ptrs.empty()) {
    return invalid_argument("moe_decode_gemm: scale_ptrs are for fp8 experts only");
  }
  if (k == 0 || k % (fp8 ? 16 : 8) != 0)
    return unimplemented("moe_decode_gemm: k = " + std::to_string(k) + " must be a positive multiple of 16 bytes");
  if (reinterpret_cast<uintptr_t>(a.x.data) % 16 != 0 || (a.x.strides[0] * (x_fp8 ? 1 : 2)) % 16 != 0)
    return unimplemented("moe_decode_gemm: rows of x must start on 16-byte boundaries");
  if (x_fp8 && (a.x.strides[0] != k || a.x_scale.device != Device::kCuda || a.x_scale.dtype != DType::kF32 ||
                a.x_scale.numel() != a.x.shape[0] || !a.x_scale.is_contiguous()))
    return invalid_argument("moe_decode_gemm: fp8 x " + a.x.shape_string() + " needs contiguous rows and x_scale [" +
                            std::to_string(a.x.shape[0]) + "] f32 on the device; got x_scale " + a.x_scale.shape_string());
  if (!x_fp8 && !a.x_scale.empty()) return invalid_argument("moe_decode_gemm: x_scale is for fp8 x only");
  if (n >= (1ll << 31) || k >= (1ll << 31) || a.y.strides[0] * slots >= (1ll << 31) || a.x.strides[0] * slots >= (1ll << 31))
    return unimplemented("moe_decode_gemm: sizes past int32");
  const int64_t x_rows = a.x.shape[0];
  if (var->v.e4m3 && !x_fp8 && (a.workspace.empty() || a.workspace.device != Device::kCuda || a.workspace.nbytes() < skinny::x_fp8_bytes(x_rows, k) ||
                      reinterpret_cast<uintptr_t>(a.workspace.data) % 16 != 0 || x_rows > skinny::kXFp8MaxRows))
    return invalid_argument("moe_decode_gemm: the e4m3 variant needs a 16-byte aligned device workspace of " +
                            std::to_string(skinny::x_fp8_bytes(x_rows, k)) + " bytes");

  const int num_sms = cuda_sm_count();
  static bool smem_raised[kNumMoeVariants] = {};
  const int vi = variant;
  const int64_t groups = std::min(slots, num_experts);
  if (var->v.wgmma) {
    if (!smem_raised[vi]) {
      KILN_CUDA_CHECK(cudaFuncSetAttribute(var->kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, var->wgmma_smem));
      smem_raised[vi] = true;
    }
    MoeDecodeParams p = params(a, top_k, slots, num_experts);
    KILN_RETURN_IF_ERROR(x_fp8 ? use_quantized_x(a, p) : quantize_x(a, x_rows, p, stream));
    p.ids_ready = a.ids_ready ? 1 : 0;
    p.ids_poll = a.ids_poll && !a.ids_ready && slots <= kMoeDecodeIdsPollSlots ? 1 : 0;
    void* args[] = {&p};
    const int64_t rows = skinny::wg::kRows * var->v.warpgroups;
    KILN_CUDA_CHECK(cuda::launch_pdl(var->kernel, dim3(static_cast<unsigned>((n + rows - 1) / rows), static_cast<unsigned>(groups)),
                                     dim3(static_cast<unsigned>(skinny::wg::kThreads * var->v.warpgroups)),
                                     static_cast<size_t>(var->wgmma_smem), stream, args));
    return ok_status();
  }
  if (!smem_raised[vi]) {
    KILN_CUDA_CHECK(cudaFuncSetAttribute(var->kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxWarps * kSmemPerWarp));
    smem_raised[vi] = true;
  }
  // Warps per CTA as in the decode GEMM: the most warps resident on average over the waves, for
  // the CTAs of the distinct experts there may be (at most min(slots, num_experts)).
  const int64_t ctas = (n + 15) / 16 * groups;
  const int64_t num_chunks = ((k + (fp8 ? 63 : 31)) / (fp8 ? 64 : 32) + kU - 1) / kU;
  static int occ_cache[kNumMoeVariants][kMaxWarps + 1] = {};
  int warps = 0;
  double best = -1;
  for (int w = 1; w <= kMaxWarps; ++w) {
    if (occ_cache[vi][w] == 0) {
      int occ = 0;
      KILN_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, var->kernel, w * 32, static_cast<size_t>(w) * kSmemPerWarp));
      occ_cache[vi][w] = occ + 1;
    }
    const int occ = occ_cache[vi][w] - 1;
    if (occ == 0) continue;
    const int64_t slots_per_wave = static_cast<int64_t>(occ) * num_sms, waves = (ctas + slots_per_wave - 1) / slots_per_wave;
    const double score = static_cast<double>(ctas) * static_cast<double>(std::min<int64_t>(w, num_chunks)) / static_cast<double>(waves);
    if (score >= best) { best = score; warps = w; }
  }
  if (warps == 0) return internal_error("moe_decode_gemm: no launch shape fits on an SM");

  MoeDecodeParams p = params(a, top_k, slots, num_experts);
  if (var->v.e4m3) KILN_RETURN_IF_ERROR(x_fp8 ? use_quantized_x(a, p) : quantize_x(a, x_rows, p, stream));

  void* args[] = {&p};
  KILN_CUDA_CHECK(cuda::launch_pdl(var->kernel, dim3(static_cast<unsigned>((n + 15) / 16), static_cast<unsigned>(groups)),
                                   dim3(static_cast<unsigned>(warps * 32)), static_cast<size_t>(warps) * kSmemPerWarp, stream,
                                   args));
  return ok_status();
}

}  // namespace kiln
