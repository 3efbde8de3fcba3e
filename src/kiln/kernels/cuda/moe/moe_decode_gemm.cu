// MoE decode GEMM: y[s] = x[token(s) or s] @ W_{ids[s]}^T (* scale) for the t * top_k <= 64 slots
// of a decode step, with the slots grouped by expert on the device. CTA (blockIdx.x, blockIdx.y)
// takes 16 weight rows of the blockIdx.y-th distinct expert of ids (in order of first
// appearance; CTAs past the last distinct expert exit at once) for all the slots that picked it,
// through the decode GEMM's streaming core (cuda/gemm/skinny_gemm_core.cuh). Variants: experts
// bf16 | fp8 e4m3 with per-channel f32 scales (fp8 widened exactly to bf16, or to f16 with x
// rounded to f16: moe_decode_gemm_variants.h); m tiles of 8 / 16 / 32 slots per expert, chosen
// in the kernel from the group's size (33..64 slots on one expert: two passes of 32). No host synchronization: CUDA-graph capturable.
#include <cuda_bf16.h>

#include <algorithm>
#include <array>
#include <string>

#include "kiln/kernels/cuda/common/cuda_check.h"
#include "kiln/kernels/cuda/gemm/skinny_gemm_core.cuh"
#include "kiln/kernels/cuda/moe/moe_decode_gemm_variants.h"
#include "kiln/kernels/moe_cuda.h"
#include "kiln/kernels/cuda/common/pdl.cuh"

namespace kiln {
namespace {

using skinny::frag_m;
using skinny::frag_n;
using skinny::kMaxWarps;

constexpr int kU = 2, kS = 6;  // k steps per chunk, ring slots (as the decode GEMM's m <= 8 kernels)

struct MoeDecodeParams {
  const __nv_bfloat16* x;    // [t or slots, k], row stride ldx
  const int32_t* ids;        // [slots]
  const int64_t* expert_ptrs;  // [num_experts] -> [n, k] bf16 | fp8
  const int64_t* scale_ptrs;   // [num_experts] -> [n] f32, or nullptr
  __nv_bfloat16* y;          // [slots, n], row stride ldy
  int64_t ldx, ldy;
  int slots, top_k, x_per_slot, num_experts, n, k, pdl;
};

// The rows [row_base, row_base + 16) of expert w for the m slots slot_of[0..m).
template <bool kFp8, bool kF16, int kMT>
__device__ void expert_rows(const MoeDecodeParams& p, const int* slot_of, int m, const uint8_t* w, const float* scale,
                            int row_base, uint8_t* smem, int warp, int nwarps) {
  using Core = skinny::Core<kFp8, kMT, 1, kU, kS, kF16>;
  using F = typename Core::F;
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const __nv_bfloat16* xrow[kMT];
#pragma unroll
  for (int nt = 0; nt < kMT; ++nt) {
    const int j = nt * 8 + g;
    const int s = j < m ? slot_of[j] : 0;
    xrow[nt] = j < m ? p.x + (p.x_per_slot ? s : s / p.top_k) * p.ldx + t * F::kElemsPerVec : nullptr;
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
      if (scale) v *= scale[n];
      p.y[slot_of[j] * p.ldy + n] = __float2bfloat16(v);
    }
}

template <bool kFp8, bool kF16>
__global__ void __launch_bounds__(kMaxWarps * 32, 2) moe_decode_gemm_kernel(const __grid_constant__ MoeDecodeParams p) {
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ int slot_of[kMoeDecodeMaxSlots];
  __shared__ int group_m, group_expert;
  const int warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5, lane = threadIdx.x & 31;
  if (p.pdl) {
    skinny::wait_for_previous_kernel();  // ids and x come from the kernels before this one
    skinny::allow_next_kernel();
  }
  if (warp == 0) {
    // Slots lane and lane + 32: which are the first of their expert; the blockIdx.y-th such slot
    // names this CTA's expert; its slots in order.
    const int id0 = lane < p.slots ? p.ids[lane] : -1, id1 = lane + 32 < p.slots ? p.ids[lane + 32] : -1;
    bool first0 = lane < p.slots, first1 = lane + 32 < p.slots;
    for (int j = 0; j < p.slots; ++j) {
      const int a = __shfl_sync(0xffffffffu, id0, j & 31), b = __shfl_sync(0xffffffffu, id1, j & 31);
      const int idj = j < 32 ? a : b;
      if (j < lane && idj == id0) first0 = false;
      if (j < lane + 32 && idj == id1) first1 = false;
    }
    const unsigned f0 = __ballot_sync(0xffffffffu, first0), f1 = __ballot_sync(0xffffffffu, first1);
    const int group = static_cast<int>(blockIdx.y);
    int expert = -1, m = 0;
    if (group < __popc(f0) + __popc(f1)) {
      // The group-th set bit of f1:f0.
      const bool low = group < __popc(f0);
      unsigned bits = low ? f0 : f1;
      for (int r = low ? group : group - __popc(f0); r > 0; --r) bits &= bits - 1;
      const int leader = __ffs(bits) - 1 + (low ? 0 : 32);
      expert = __shfl_sync(0xffffffffu, leader < 32 ? id0 : id1, leader & 31);
      const bool in0 = lane < p.slots && id0 == expert, in1 = lane + 32 < p.slots && id1 == expert;
      const unsigned m0 = __ballot_sync(0xffffffffu, in0), m1 = __ballot_sync(0xffffffffu, in1);
      const unsigned below = (1u << lane) - 1u;
      if (in0) slot_of[__popc(m0 & below)] = lane;
      if (in1) slot_of[__popc(m0) + __popc(m1 & below)] = lane + 32;
      m = __popc(m0) + __popc(m1);
    }
    if (lane == 0) {
      group_m = m;
      group_expert = expert;
    }
  }
  __syncthreads();
  const int m = group_m, expert = group_expert;
  if (m == 0) return;
  const int row_base = blockIdx.x * 16;
  if (expert < 0 || expert >= p.num_experts) {  // a bad id: zeros, not someone else's memory
    if (warp == 0)
      for (int i = lane; i < m * 16; i += 32) {
        const int n = row_base + i % 16;
        if (n < p.n) p.y[slot_of[i / 16] * p.ldy + n] = __float2bfloat16(0.f);
      }
    return;
  }
  const uint8_t* w = reinterpret_cast<const uint8_t*>(p.expert_ptrs[expert]);
  const float* scale = p.scale_ptrs ? reinterpret_cast<const float*>(p.scale_ptrs[expert]) : nullptr;
  if (m <= 8) expert_rows<kFp8, kF16, 1>(p, slot_of, m, w, scale, row_base, smem, warp, nwarps);
  else if (m <= 16) expert_rows<kFp8, kF16, 2>(p, slot_of, m, w, scale, row_base, smem, warp, nwarps);
  else if (m <= 32) expert_rows<kFp8, kF16, 4>(p, slot_of, m, w, scale, row_base, smem, warp, nwarps);
  else {  // more than 32 slots on one expert: two passes of 32 (its rows are read twice, mostly from L2)
    expert_rows<kFp8, kF16, 4>(p, slot_of, 32, w, scale, row_base, smem, warp, nwarps);
    __syncthreads();  // the reduction area is reused
    expert_rows<kFp8, kF16, 4>(p, slot_of + 32, m - 32, w, scale, row_base, smem, warp, nwarps);
  }
}

struct MoeDecodeVariant {
  MoeDecodeGemmVariant v;
  const void* kernel;
};
// The shipped variants: bf16 experts; fp8 e4m3 experts with per-channel scales, widened exactly
// to bf16 or to f16 (skinny_gemm_core.cuh). H100 (Mixtral experts, % of 3000 GB/s), exact bf16 ->
// f16: t = 1 gate_up 71.8 -> 73.4, down 65.8 -> 68.3; t = 8 gate_up 70.8 -> 71.2, down 71.3 -> 72.3.
const MoeDecodeVariant kMoeVariants[] = {
    {{DType::kBF16, false, true}, reinterpret_cast<const void*>(&moe_decode_gemm_kernel<false, false>)},
    {{DType::kFp8E4M3, false, false}, reinterpret_cast<const void*>(&moe_decode_gemm_kernel<true, false>)},
    {{DType::kFp8E4M3, true, true}, reinterpret_cast<const void*>(&moe_decode_gemm_kernel<true, true>)},
};
constexpr int kNumMoeVariants = sizeof(kMoeVariants) / sizeof(kMoeVariants[0]);

// The ring (the largest m tile's reduction area is smaller) per warp, the same for every m tile.
constexpr int kSmemPerWarp = std::max(skinny::Core<true, 4, 1, kU, kS>::kSmemPerWarp, skinny::Core<false, 4, 1, kU, kS>::kSmemPerWarp);

Status check_device(const Tensor& t, DType dtype, int ndim, const char* name) {
  if (t.device != Device::kCuda || t.dtype != dtype || t.ndim != ndim || (t.strides[ndim - 1] != 1 && t.shape[ndim - 1] > 1))
    return invalid_argument(std::string("moe_decode_gemm: ") + name + " is " + t.shape_string() + ", want " +
                            std::to_string(ndim) + "-D " + std::string(dtype_name(dtype)) + " cuda with contiguous rows");
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

Status moe_decode_gemm_cuda(const MoeDecodeGemmArgs& a, CUstream_st* stream) {
  for (int i = 0; i < kNumMoeVariants; ++i)
    if (kMoeVariants[i].v.preferred && kMoeVariants[i].v.w == a.w_dtype) return moe_decode_gemm_cuda_variant(a, i, stream);
  return unimplemented("moe_decode_gemm: experts " + std::string(dtype_name(a.w_dtype)) + " (supported: bf16, fp8_e4m3)");
}

Status moe_decode_gemm_cuda_variant(const MoeDecodeGemmArgs& a, int variant, CUstream_st* stream) {
  if (variant < 0 || variant >= kNumMoeVariants || kMoeVariants[variant].v.w != a.w_dtype)
    return invalid_argument("moe_decode_gemm: variant " + std::to_string(variant) + " does not take " +
                            std::string(dtype_name(a.w_dtype)) + " experts");
  const MoeDecodeVariant* var = &kMoeVariants[variant];
  const bool fp8 = a.w_dtype == DType::kFp8E4M3;
  KILN_RETURN_IF_ERROR(check_device(a.x, DType::kBF16, 2, "x"));
  KILN_RETURN_IF_ERROR(check_device(a.ids, DType::kInt32, 2, "ids"));
  KILN_RETURN_IF_ERROR(check_device(a.expert_ptrs, DType::kInt64, 1, "expert_ptrs"));
  KILN_RETURN_IF_ERROR(check_device(a.y, DType::kBF16, 2, "y"));
  if (!a.ids.is_contiguous()) return invalid_argument("moe_decode_gemm: ids must be contiguous");
  const int64_t t = a.ids.shape[0], top_k = a.ids.shape[1], slots = t * top_k, k = a.x.shape[1], n = a.n;
  const int64_t num_experts = a.expert_ptrs.shape[0];
  if (slots == 0 || n == 0) return ok_status();
  if (slots > kMoeDecodeMaxSlots)
    return unimplemented("moe_decode_gemm: " + std::to_string(slots) + " slots (t * top_k) > " +
                         std::to_string(kMoeDecodeMaxSlots) + ": use the grouped GEMM (moe_grouped_gemm_cuda)");
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
  if (reinterpret_cast<uintptr_t>(a.x.data) % 16 != 0 || (a.x.strides[0] * 2) % 16 != 0)
    return unimplemented("moe_decode_gemm: rows of x must start on 16-byte boundaries");
  if (n >= (1ll << 31) || k >= (1ll << 31) || a.y.strides[0] * slots >= (1ll << 31) || a.x.strides[0] * slots >= (1ll << 31))
    return unimplemented("moe_decode_gemm: sizes past int32");

  int device = 0, num_sms = 0;
  KILN_CUDA_CHECK(cudaGetDevice(&device));
  KILN_CUDA_CHECK(cudaDeviceGetAttribute(&num_sms, cudaDevAttrMultiProcessorCount, device));
  static bool smem_raised[kNumMoeVariants] = {};
  const int vi = variant;
  if (!smem_raised[vi]) {
    KILN_CUDA_CHECK(cudaFuncSetAttribute(var->kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxWarps * kSmemPerWarp));
    smem_raised[vi] = true;
  }
  // Warps per CTA as in the decode GEMM: the most warps resident on average over the waves, for
  // the CTAs of the distinct experts there may be (at most min(slots, num_experts)).
  const int64_t groups = std::min(slots, num_experts);
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
  p.n = static_cast<int>(n);
  p.k = static_cast<int>(k);
  p.pdl = 1;

  void* args[] = {&p};
  KILN_CUDA_CHECK(cuda::launch_pdl(var->kernel, dim3(static_cast<unsigned>((n + 15) / 16), static_cast<unsigned>(groups)),
                                   dim3(static_cast<unsigned>(warps * 32)), static_cast<size_t>(warps) * kSmemPerWarp, stream,
                                   args));
  return ok_status();
}

}  // namespace kiln
