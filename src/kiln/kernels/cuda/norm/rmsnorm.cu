// CUDA RMSNorm with the fused residual add. One block per row; each thread keeps up to
// kVecsPerThread 16-byte vectors of the row in registers, so the row is read once and written
// once. Variants: bf16 activations x bf16 weight, with and without the residual; with the residual,
// also x as the weighted sum of k rows (the MoE combine of a decode step) and / or out quantized
// per row to fp8 e4m3 (the pre-quantized x of the fp8 MoE decode GEMM).
#include <cuda_bf16.h>

#include <algorithm>
#include <string>

#include "kiln/kernels/cuda/common/bf16.cuh"
#include "kiln/kernels/cuda/common/cuda_check.h"
#include "kiln/kernels/cuda/common/kernel_args.h"
#include "kiln/kernels/cuda/common/reduce.cuh"
#include "kiln/kernels/rmsnorm.h"
#include "kiln/kernels/cuda/common/pdl.cuh"
#include "kiln/kernels/cuda/moe/route_token.cuh"
#include "kiln/kernels/cuda/quantize/fp8_row.cuh"

namespace kiln {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kMaxVecsPerThread = 4;  // 4 x 8 elements per thread: hidden <= 32 * 1024

struct RmsNormParams {
  const bf16* x;     // [rows, hidden], row stride x_stride
  bf16* residual;    // [rows, hidden], row stride res_stride, or null
  const bf16* weight;  // [hidden]
  bf16* out;         // [rows, hidden], row stride out_stride
  const float* slot_w;  // combine: [rows, k_slots]; x is then [rows * k_slots, hidden]
  uint8_t* q;        // quant: [rows, hidden] e4m3 (row stride hidden) and its scales [rows]
  float* q_scale;
  int64_t x_stride, res_stride, out_stride;
  int k_slots;
  int residual_early;  // RmsNormArgs::residual_written_earlier
  int clear_ids;       // RmsNormArgs::route_ids_cleared_early
  // route: the MoE router on out (moe_router_kernel's arithmetic): logits = out . router_w^T.
  const bf16* router_w;  // [num_experts, hidden], row stride rw_stride
  int64_t rw_stride;
  float* logits_out;     // [rows, num_experts] f32
  int32_t* topk_ids;     // [rows, k]
  float* topk_weights;   // [rows, k]
  int num_experts, k;
  bool renormalize;
  int num_vecs;      // hidden / 8
  float inv_hidden, eps;
};

constexpr int kMaxThreads = 1024;
constexpr int kRouteThreads = 512;  // the route row: moe_router_kernel's block, so its sums match bit for bit
constexpr int kRouteGroup = 8;      // experts per pass of the router's dot products

// kVecsPerThread: 1 (hidden <= 8192: no registers for vectors a thread never has) or kMaxVecsPerThread.
// This thread's router weight vectors of experts [e0, e0 + kRouteGroup).
// kVecsPerThread 1 (the route row's 512 threads: hidden <= 4096): pinned loads
// (cuda::ldg_nc_pinned), so that the first group, requested before the PDL wait, is in registers
// by the time the row is routed; with more vectors a thread the 8 x kVecsPerThread vectors would
// not fit in registers, and __ldg lets the compiler load them where they are used.
template <int kVecsPerThread>
__device__ __forceinline__ void load_router_w(const RmsNormParams& p, int e0, uint4 (&rw)[kRouteGroup][kVecsPerThread]) {
#pragma unroll
  for (int g = 0; g < kRouteGroup; ++g)
#pragma unroll
    for (int j = 0; j < kVecsPerThread; ++j) {
      const int c = threadIdx.x + j * blockDim.x;
      const uint4* src = reinterpret_cast<const uint4*>(p.router_w + (e0 + g) * p.rw_stride) + c;
      rw[g][j] = uint4{};
      if (e0 + g < p.num_experts && c < p.num_vecs) rw[g][j] = kVecsPerThread == 1 ? cuda::ldg_nc_pinned(src) : __ldg(src);
    }
}

// route: logits[row, e] = out[row] . router_w[e] (per-thread fmaf over the thread's vectors ->
// warp sums -> the warps' sums in order, as moe_router_kernel), then warp 0 routes the row.
template <int kVecsPerThread>
__device__ void route_row(const RmsNormParams& p, int64_t row, const uint4 (&out)[kVecsPerThread],
                          uint4 (&rw)[kRouteGroup][kVecsPerThread]) {
  __shared__ float logits[moe_route::kMaxExperts];
  __shared__ float warp_part[kRouteThreads / 32][kRouteGroup];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, num_warps = blockDim.x >> 5;
  for (int e0 = 0; e0 < p.num_experts; e0 += kRouteGroup) {
    if (e0 > 0) load_router_w<kVecsPerThread>(p, e0, rw);  // the first group was loaded before the PDL wait
    float acc[kRouteGroup];
#pragma unroll
    for (int g = 0; g < kRouteGroup; ++g) acc[g] = 0.f;
#pragma unroll
    for (int j = 0; j < kVecsPerThread; ++j) {
      if (threadIdx.x + j * blockDim.x >= p.num_vecs) continue;
      float xf[8];
      cuda::bf16x8_to_f32(out[j], xf);
#pragma unroll
      for (int g = 0; g < kRouteGroup; ++g) {
        float wf[8];
        cuda::bf16x8_to_f32(rw[g][j], wf);
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[g] = fmaf(xf[i], wf[i], acc[g]);
      }
    }
#pragma unroll
    for (int g = 0; g < kRouteGroup; ++g) {
      const float s = cuda::warp_sum(acc[g]);
      if (lane == 0) warp_part[warp][g] = s;
    }
    __syncthreads();
    if (threadIdx.x < kRouteGroup && e0 + static_cast<int>(threadIdx.x) < p.num_experts) {
      float s = 0.f;
      for (int w = 0; w < num_warps; ++w) s += warp_part[w][threadIdx.x];
      logits[e0 + threadIdx.x] = s;
      p.logits_out[row * p.num_experts + e0 + threadIdx.x] = s;
    }
    __syncthreads();
  }
  if (warp == 0) moe_route::route_token(p, row, logits, lane);
}

template <int kVecsPerThread, bool kResidual, bool kCombine, bool kQuant, bool kRoute = false>
__global__ void __launch_bounds__(kRoute ? kRouteThreads : kMaxThreads) rmsnorm_kernel(const __grid_constant__ RmsNormParams p) {
  uint4 rw[kRoute ? kRouteGroup : 1][kVecsPerThread];
  uint4 xv[kVecsPerThread], rv[kVecsPerThread], wv[kVecsPerThread];
  // One vector a thread (hidden <= 8192; the route row: <= 4096): the norm weight (no kernel of the
  // chain writes it), the router's first group and, where RmsNormArgs::residual_written_earlier,
  // the residual before the PDL wait, pinned there (cuda::ldg_nc_pinned). With more vectors a
  // thread they stay after it: held across the wait they would spill.
  constexpr bool kEarly = kVecsPerThread == 1;
  const int64_t row = blockIdx.x;
  bf16* res = kResidual ? p.residual + row * p.res_stride : nullptr;
  if constexpr (kEarly) {
    const int c = threadIdx.x;
    wv[0] = c < p.num_vecs ? cuda::ldg_nc_pinned(reinterpret_cast<const uint4*>(p.weight) + c) : uint4{};
    if (kResidual && p.residual_early && c < p.num_vecs) rv[0] = cuda::ldcg_pinned(reinterpret_cast<const uint4*>(res) + c);
  }
  if constexpr (kRoute) load_router_w<kVecsPerThread>(p, 0, rw);
  // route_ids_cleared_early: the ids' last reader is the previous layer's down GEMM, four or more
  // kernels back (complete before this kernel starts); the gate_up GEMM after this one polls them.
  if (kRoute && p.clear_ids)
    for (int i = threadIdx.x; i < p.k; i += blockDim.x) p.topk_ids[row * p.k + i] = -1;
  // The plain rows let the next kernel (a decode GEMM that requests its weights before its own
  // wait) be scheduled before this one's wait: its wait still covers this whole grid, so only
  // where its CTAs start moves. H100, Mixtral fp8 batch-1 decode (tok/s, three rounds, after ->
  // before the wait): 186.4 -> 187.3, with fp8 KV and a 1K prompt 181.2 -> 183.0; Llama-3-8B
  // fp8 280.5 -> 282.2. The route row keeps it after (no gain measured: its GEMM polls the ids).
  if constexpr (!kRoute) cuda::pdl_trigger();
  cuda::pdl_wait();  // inputs come from the kernel before (programmatic dependent launch)
  if constexpr (kRoute) cuda::pdl_trigger();
  // Issue every load of the row before the first use: x (combine: its k rows) and the residual.
  float v[kVecsPerThread][8];
  if constexpr (kCombine) {
    // x[row] = bf16(sum_j w_j * x[row * k + j]), in moe_unpermute_kernel's order and rounding.
#pragma unroll
    for (int j = 0; j < kVecsPerThread; ++j)
#pragma unroll
      for (int i = 0; i < 8; ++i) v[j][i] = 0.f;
    constexpr int kGroup = 4;  // slots whose loads are in flight together
    for (int s0 = 0; s0 < p.k_slots; s0 += kGroup) {
      float w[kGroup];
      uint4 yv[kGroup][kVecsPerThread];
#pragma unroll
      for (int u = 0; u < kGroup; ++u) {
        if (s0 + u >= p.k_slots) continue;
        w[u] = p.slot_w[row * p.k_slots + s0 + u];
        const bf16* xs = p.x + (row * p.k_slots + s0 + u) * p.x_stride;
#pragma unroll
        for (int j = 0; j < kVecsPerThread; ++j) {
          const int c = threadIdx.x + j * blockDim.x;
          if (c < p.num_vecs) yv[u][j] = reinterpret_cast<const uint4*>(xs)[c];
        }
      }
#pragma unroll
      for (int u = 0; u < kGroup; ++u) {
        if (s0 + u >= p.k_slots) continue;
#pragma unroll
        for (int j = 0; j < kVecsPerThread; ++j) {
          const int c = threadIdx.x + j * blockDim.x;
          if (c >= p.num_vecs) continue;
          float y[8];
          cuda::bf16x8_to_f32(yv[u][j], y);
#pragma unroll
          for (int i = 0; i < 8; ++i) v[j][i] += w[u] * y[i];
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kVecsPerThread; ++j) xv[j] = cuda::f32_to_bf16x8(v[j]);
  }
  const bf16* x = p.x + row * p.x_stride;
#pragma unroll
  for (int j = 0; j < kVecsPerThread; ++j) {
    const int c = threadIdx.x + j * blockDim.x;
    if (c < p.num_vecs) {
      if constexpr (!kCombine) xv[j] = reinterpret_cast<const uint4*>(x)[c];
      if (kResidual && !(kEarly && p.residual_early)) rv[j] = reinterpret_cast<const uint4*>(res)[c];
      if constexpr (!kEarly) wv[j] = reinterpret_cast<const uint4*>(p.weight)[c];
    }
  }
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < kVecsPerThread; ++j) {
    const int c = threadIdx.x + j * blockDim.x;
    if (c >= p.num_vecs) continue;
    cuda::bf16x8_to_f32(xv[j], v[j]);
    if constexpr (kResidual) {
      float r[8];
      cuda::bf16x8_to_f32(rv[j], r);
#pragma unroll
      for (int i = 0; i < 8; ++i) r[i] += v[j][i];
      const uint4 stored = cuda::f32_to_bf16x8(r);
      reinterpret_cast<uint4*>(res)[c] = stored;
      cuda::bf16x8_to_f32(stored, v[j]);  // normalize what the residual stream now holds
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) ss += v[j][i] * v[j][i];
  }
  const float inv_rms = rsqrtf(cuda::block_sum(ss) * p.inv_hidden + p.eps);
  bf16* out = p.out + row * p.out_stride;
  float amax = 0.f;
#pragma unroll
  for (int j = 0; j < kVecsPerThread; ++j) {
    const int c = threadIdx.x + j * blockDim.x;
    if (c >= p.num_vecs) continue;
    float w[8], o[8];
    cuda::bf16x8_to_f32(wv[j], w);
#pragma unroll
    for (int i = 0; i < 8; ++i) o[i] = v[j][i] * inv_rms * w[i];
    xv[j] = cuda::f32_to_bf16x8(o);  // (kQuant: the stored bf16 values are what gets quantized)
    reinterpret_cast<uint4*>(out)[c] = xv[j];
    if constexpr (kQuant) amax = fmaxf(amax, cuda::fp8row::abs_max8(xv[j]));
  }
  // The route row routes before it quantizes: the ids, which the gate_up GEMM after it polls for
  // before its wait (MoeDecodeGemmArgs::ids_poll), come one block reduction and a store earlier.
  // H100, Mixtral fp8, tok/s, three rounds (quantize first -> route first): batch-1 decode 187.0 /
  // 188.2 / 187.5 -> 187.8 / 188.7 / 188.2; fp8 KV, 1K prompt 180.5 / 181.2 / 180.9 -> 182.1 /
  // 182.0 / 180.6.
  if constexpr (kRoute) route_row<kVecsPerThread>(p, row, xv, rw);
  if constexpr (kQuant) {
    const float s = cuda::fp8row::scale_for(cuda::block_max(amax));
    if (threadIdx.x == 0) p.q_scale[row] = s;
    uint8_t* q = p.q + row * (static_cast<int64_t>(p.num_vecs) * 8);
#pragma unroll
    for (int j = 0; j < kVecsPerThread; ++j) {
      const int c = threadIdx.x + j * blockDim.x;
      if (c < p.num_vecs) reinterpret_cast<uint2*>(q)[c] = cuda::fp8row::quantize8(xv[j], s);
    }
  }
}

template <bool kResidual, bool kCombine, bool kQuant, bool kRoute = false>
Status launch_rmsnorm(const RmsNormArgs& a, CUstream_st* stream) {
  constexpr const char* kName = "rmsnorm_cuda";
  KILN_ASSIGN_OR_RETURN(const cuda::RowsView x, cuda::device_rows(a.x, DType::kBF16, kName, "x"));
  KILN_ASSIGN_OR_RETURN(const cuda::RowsView out, cuda::device_rows(a.out, DType::kBF16, kName, "out"));
  KILN_RETURN_IF_ERROR(cuda::expect_device(a.weight, DType::kBF16, x.cols, kName, "weight"));
  cuda::RowsView res{out.rows, x.cols, 0};
  if constexpr (kResidual) {
    KILN_ASSIGN_OR_RETURN(res, cuda::device_rows(a.residual, DType::kBF16, kName, "residual"));
  }
  const int64_t hidden = x.cols, rows = out.rows;
  int64_t k_slots = 1;
  if constexpr (kCombine) {
    if (a.slot_weights.ndim != 2 || a.slot_weights.shape[0] != rows || a.slot_weights.shape[1] < 1)
      return invalid_argument("rmsnorm_cuda: slot_weights " + a.slot_weights.shape_string() + ", want [" + std::to_string(rows) + ", k]");
    k_slots = a.slot_weights.shape[1];
    KILN_RETURN_IF_ERROR(cuda::expect_device(a.slot_weights, DType::kF32, rows * k_slots, kName, "slot_weights"));
  }
  if (x.rows != rows * k_slots || out.cols != hidden || res.rows != rows || res.cols != hidden)
    return invalid_argument("rmsnorm_cuda: x " + a.x.shape_string() + ", residual " + a.residual.shape_string() +
                            " and out " + a.out.shape_string() + " differ in shape" +
                            (kCombine ? " (x: k = " + std::to_string(k_slots) + " rows per token)" : std::string()));
  if constexpr (kQuant) {
    if (a.out_q.device != Device::kCuda || a.out_q.dtype != DType::kFp8E4M3 || a.out_q.ndim != 2 || a.out_q.shape[0] != rows ||
        a.out_q.shape[1] != hidden || !a.out_q.is_contiguous() || !cuda::aligned16(a.out_q.data))
      return invalid_argument("rmsnorm_cuda: out_q " + a.out_q.shape_string() + ", want a contiguous 16-byte aligned [" +
                              std::to_string(rows) + ", " + std::to_string(hidden) + "] fp8 e4m3 device tensor");
    KILN_RETURN_IF_ERROR(cuda::expect_device(a.out_scale, DType::kF32, rows, kName, "out_scale"));
  }
  const int64_t num_vecs = hidden / cuda::kBf16PerVec;
  if (hidden % cuda::kBf16PerVec != 0 || num_vecs > int64_t{kMaxVecsPerThread} * kMaxThreads)
    return unimplemented("rmsnorm_cuda: hidden " + std::to_string(hidden) + " (supported: multiples of 8 up to 32768)");
  if (x.stride % 8 || out.stride % 8 || res.stride % 8 || !cuda::aligned16(a.x.data) ||
      !cuda::aligned16(a.out.data) || !cuda::aligned16(a.weight.data) || (kResidual && !cuda::aligned16(a.residual.data)))
    return invalid_argument("rmsnorm_cuda: rows must be 16-byte aligned");
  if (rows == 0) return ok_status();
  if (x.rows > 0x7fffffff) return out_of_range("rmsnorm_cuda: too many rows");

  RmsNormParams p{};
  p.x = static_cast<const bf16*>(a.x.data);
  p.residual = kResidual ? static_cast<bf16*>(a.residual.data) : nullptr;
  p.weight = static_cast<const bf16*>(a.weight.data);
  p.out = static_cast<bf16*>(a.out.data);
  p.slot_w = kCombine ? static_cast<const float*>(a.slot_weights.data) : nullptr;
  p.q = kQuant ? static_cast<uint8_t*>(a.out_q.data) : nullptr;
  p.q_scale = kQuant ? static_cast<float*>(a.out_scale.data) : nullptr;
  p.x_stride = x.stride; p.res_stride = res.stride; p.out_stride = out.stride;
  p.k_slots = static_cast<int>(k_slots);
  p.residual_early = kResidual && a.residual_written_earlier ? 1 : 0;
  p.clear_ids = kRoute && a.route_ids_cleared_early ? 1 : 0;
  p.num_vecs = static_cast<int>(num_vecs);
  p.inv_hidden = 1.0f / static_cast<float>(hidden);
  p.eps = a.eps;
  if constexpr (kRoute) {
    const MoeRouteArgs& r = *a.route;
    if (r.router_weight.ndim != 2 || r.router_logits.ndim != 2 || r.topk_ids.ndim != 2)
      return invalid_argument("rmsnorm_cuda: route wants router_weight [experts, hidden], router_logits [rows, experts], topk [rows, k]");
    const int64_t e = r.router_weight.shape[0], k = r.topk_ids.shape[1];
    KILN_ASSIGN_OR_RETURN(const cuda::RowsView rw, cuda::device_rows(r.router_weight, DType::kBF16, kName, "router_weight"));
    KILN_RETURN_IF_ERROR(cuda::expect_device(r.router_logits, DType::kF32, rows * e, kName, "router_logits"));
    KILN_RETURN_IF_ERROR(cuda::expect_device(r.topk_ids, DType::kInt32, rows * k, kName, "topk_ids"));
    KILN_RETURN_IF_ERROR(cuda::expect_device(r.topk_weights, DType::kF32, rows * k, kName, "topk_weights"));
    if (rw.cols != hidden || r.router_logits.shape[0] != rows || r.router_logits.shape[1] != e || r.topk_ids.shape[0] != rows)
      return invalid_argument("rmsnorm_cuda: route shapes: router_weight " + r.router_weight.shape_string() + ", router_logits " +
                              r.router_logits.shape_string() + ", topk_ids " + r.topk_ids.shape_string() + " for out " +
                              a.out.shape_string());
    if (e < 1 || e > moe_route::kMaxExperts || k < 1 || k > e)
      return unimplemented("rmsnorm_cuda: route with " + std::to_string(e) + " experts, top-" + std::to_string(k) +
                           " (supported: up to 256 experts, 1 <= k <= experts)");
    if (num_vecs > int64_t{kMaxVecsPerThread} * kRouteThreads || rw.stride % 8 || !cuda::aligned16(r.router_weight.data))
      return unimplemented("rmsnorm_cuda: route needs hidden <= 16384 and 16-byte aligned router rows");
    if (rows > 0 && !r.x.empty()) return invalid_argument("rmsnorm_cuda: route routes out; its x must be empty");
    p.router_w = static_cast<const bf16*>(r.router_weight.data);
    p.rw_stride = rw.stride;
    p.logits_out = static_cast<float*>(r.router_logits.data);
    p.topk_ids = static_cast<int32_t*>(r.topk_ids.data);
    p.topk_weights = static_cast<float*>(r.topk_weights.data);
    p.num_experts = static_cast<int>(e);
    p.k = static_cast<int>(k);
    p.renormalize = r.renormalize;
    const int threads = static_cast<int>(std::min<int64_t>(kRouteThreads, (num_vecs + 31) / 32 * 32));
    if (num_vecs <= kRouteThreads) {
      KILN_CUDA_CHECK(cuda::launch_pdl(rmsnorm_kernel<1, kResidual, kCombine, kQuant, true>, dim3(static_cast<unsigned>(rows)),
                                       dim3(threads), 0, stream, p));
    } else if (num_vecs <= 2 * kRouteThreads) {  // (4 vectors per thread spill registers here: hidden > 8192 only)
      KILN_CUDA_CHECK(cuda::launch_pdl(rmsnorm_kernel<2, kResidual, kCombine, kQuant, true>, dim3(static_cast<unsigned>(rows)),
                                       dim3(threads), 0, stream, p));
    } else {
      KILN_CUDA_CHECK(cuda::launch_pdl(rmsnorm_kernel<kMaxVecsPerThread, kResidual, kCombine, kQuant, true>,
                                       dim3(static_cast<unsigned>(rows)), dim3(threads), 0, stream, p));
    }
    return ok_status();
  }
  // One vector per thread up to 1024 threads (more loads in flight: decode rows are latency-bound),
  // then up to kMaxVecsPerThread each.
  const int threads = static_cast<int>(std::min<int64_t>(kMaxThreads, (num_vecs + 31) / 32 * 32));
  if (num_vecs <= kMaxThreads) {
    KILN_CUDA_CHECK(cuda::launch_pdl(rmsnorm_kernel<1, kResidual, kCombine, kQuant>, dim3(static_cast<unsigned>(rows)), dim3(threads),
                                     0, stream, p));
  } else {
    KILN_CUDA_CHECK(cuda::launch_pdl(rmsnorm_kernel<kMaxVecsPerThread, kResidual, kCombine, kQuant>, dim3(static_cast<unsigned>(rows)),
                                     dim3(threads), 0, stream, p));
  }
  return ok_status();
}

// <act, weight, residual, combine, quant>
constexpr RmsNormCudaVariant kVariants[] = {
    {DType::kBF16, DType::kBF16, true, false, false, &launch_rmsnorm<true, false, false>},
    {DType::kBF16, DType::kBF16, false, false, false, &launch_rmsnorm<false, false, false>},
    {DType::kBF16, DType::kBF16, true, true, false, &launch_rmsnorm<true, true, false>},
    {DType::kBF16, DType::kBF16, true, false, true, &launch_rmsnorm<true, false, true>},
    {DType::kBF16, DType::kBF16, true, true, true, &launch_rmsnorm<true, true, true>},
    // The MoE decode step's ffn norm: residual, fp8 out and the router on out (RmsNormArgs::route).
    {DType::kBF16, DType::kBF16, true, false, true, &launch_rmsnorm<true, false, true, true>, true},
};

}  // namespace

std::span<const RmsNormCudaVariant> rmsnorm_cuda_variants() { return kVariants; }

Status rmsnorm_cuda(const RmsNormArgs& a, CUstream_st* stream) {
  const bool residual = !a.residual.empty(), combine = !a.slot_weights.empty(), quant = !a.out_q.empty() || !a.out_scale.empty();
  const bool route = a.route != nullptr;
  for (const auto& v : kVariants)
    if (v.act == a.x.dtype && v.weight == a.weight.dtype && v.residual == residual && v.combine == combine && v.quant == quant &&
        v.route == route)
      return v.launch(a, stream);
  auto flags = [](bool r, bool c, bool q, bool rt = false) {
    return std::string(r ? " +residual" : "") + (c ? " +combine" : "") + (q ? " +fp8 out" : "") + (rt ? " +route" : "");
  };
  std::string supported;
  for (const auto& v : kVariants)
    supported += std::string(supported.empty() ? "" : ", ") + "act " + std::string(dtype_name(v.act)) + " weight " +
                 std::string(dtype_name(v.weight)) + flags(v.residual, v.combine, v.quant, v.route);
  return unimplemented("rmsnorm_cuda: act " + std::string(dtype_name(a.x.dtype)) + " weight " +
                       std::string(dtype_name(a.weight.dtype)) + flags(residual, combine, quant, route) +
                       " (supported: " + supported + ")");
}

}  // namespace kiln
