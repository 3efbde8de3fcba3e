// CUDA MoE token permutation and weighted un-permutation.
//   permute:   one block counts assignments per expert, scans the counts into offsets (each
//              rounded up to align_rows; the gap rows marked -1), then places assignments chunk by
//              chunk (warp match + per-warp counts), keeping token order within each expert; a
//              second kernel gathers the x rows (16-byte vectors; zeros for the gap rows).
//   unpermute: one block per token gathers its k expert outputs and sums them with the router
//              weights in f32 (deterministic, no atomics).
// Variants: bf16 activations.
#include <cuda_bf16.h>

#include <algorithm>
#include <string>

#include "kiln/kernels/cuda/common/bf16.cuh"
#include "kiln/kernels/cuda/common/cuda_check.h"
#include "kiln/kernels/cuda/common/kernel_args.h"
#include "kiln/kernels/moe_cuda.h"
#include "kiln/kernels/cuda/common/pdl.cuh"

namespace kiln {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kMaxExperts = 256;
constexpr int kPlaceThreads = 1024;
constexpr int kPlaceWarps = kPlaceThreads / 32;
constexpr int kRowThreads = 128;

struct PlaceParams {
  const int32_t* topk_ids;  // [num_assignments]
  int32_t* offsets;         // [num_experts + 1]
  int32_t* permuted_src;    // [num_assignments]
  int32_t* inverse;         // [num_assignments]
  int64_t num_assignments;
  int num_experts, align_rows;
};

__global__ void __launch_bounds__(kPlaceThreads) moe_place_kernel(const __grid_constant__ PlaceParams p) {
  __shared__ int count[kMaxExperts];
  __shared__ int cursor[kMaxExperts];
  __shared__ int warp_base[kPlaceWarps][kMaxExperts];  // per chunk: where each warp's rows of e start
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  for (int e = tid; e < p.num_experts; e += kPlaceThreads) count[e] = 0;
  __syncthreads();
  for (int64_t a = tid; a < p.num_assignments; a += kPlaceThreads) atomicAdd(&count[p.topk_ids[a]], 1);
  __syncthreads();
  if (tid == 0) {
    int run = 0;
    for (int e = 0; e < p.num_experts; ++e) {
      p.offsets[e] = run;
      cursor[e] = run;
      run += count[e];
      if (e + 1 < p.num_experts) run = (run + p.align_rows - 1) / p.align_rows * p.align_rows;
    }
    p.offsets[p.num_experts] = run;
  }
  if (p.align_rows > 1) {  // the gap rows after each expert's assignments (cursor: its first row)
    __syncthreads();
    for (int i = tid; i < p.num_experts * p.align_rows; i += kPlaceThreads) {
      const int e = i / p.align_rows, row = cursor[e] + count[e] + i % p.align_rows;
      if (e + 1 < p.num_experts && row < cursor[e + 1]) p.permuted_src[row] = -1;
    }
  }
  int e_next = tid < p.num_assignments ? p.topk_ids[tid] : -1;  // the next chunk's load is in flight early
  for (int64_t base = 0; base < p.num_assignments; base += kPlaceThreads) {
    for (int i = tid; i < kPlaceWarps * p.num_experts; i += kPlaceThreads) warp_base[i / p.num_experts][i % p.num_experts] = 0;
    const int64_t a = base + tid;
    const int e = e_next;
    e_next = a + kPlaceThreads < p.num_assignments ? p.topk_ids[a + kPlaceThreads] : -1;
    __syncthreads();
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    const int rank = __popc(peers & ((1u << lane) - 1u));  // earlier lanes of this warp with the same expert
    if (e >= 0 && rank == 0) warp_base[warp][e] = __popc(peers);
    __syncthreads();
    for (int x = tid; x < p.num_experts; x += kPlaceThreads) {  // counts -> exclusive bases, warp order
      int run = cursor[x];
      for (int w = 0; w < kPlaceWarps; ++w) {
        const int c = warp_base[w][x];
        warp_base[w][x] = run;
        run += c;
      }
      cursor[x] = run;
    }
    __syncthreads();
    if (e >= 0) {
      const int row = warp_base[warp][e] + rank;
      p.permuted_src[row] = static_cast<int32_t>(a);
      p.inverse[a] = row;
    }
    __syncthreads();
  }
}

struct GatherParams {
  const int32_t* permuted_src;  // [rows]
  const int32_t* end;           // offsets[num_experts]: rows past it are not written
  const uint4* x;               // [num_tokens, hidden], row stride x_stride (vectors)
  uint4* x_permuted;            // [rows, hidden], row stride out_stride (vectors)
  int64_t x_stride, out_stride;
  int k, vecs_per_row;
};

__global__ void __launch_bounds__(kRowThreads) moe_gather_kernel(const __grid_constant__ GatherParams p) {
  const int64_t r = blockIdx.x;
  if (r >= *p.end) return;
  const int32_t a = p.permuted_src[r];
  uint4* dst = p.x_permuted + r * p.out_stride;
  if (a < 0) {  // a gap row (align_rows)
    for (int c = threadIdx.x; c < p.vecs_per_row; c += kRowThreads) dst[c] = make_uint4(0, 0, 0, 0);
    return;
  }
  const uint4* src = p.x + static_cast<int64_t>(a / p.k) * p.x_stride;
  for (int c = threadIdx.x; c < p.vecs_per_row; c += kRowThreads) dst[c] = src[c];
}

struct UnpermuteParams {
  const bf16* y;         // [rows, hidden], row stride y_stride
  const float* weights;  // [num_tokens, k]
  const int32_t* inverse;  // [num_tokens * k]
  bf16* out;             // [num_tokens, hidden], row stride out_stride
  int64_t y_stride, out_stride;
  int k, vecs_per_row;
  // dequant (MoeUnpermuteArgs::rows_per_expert > 0)
  const int32_t* ids;          // [num_tokens * k]
  const int32_t* padded_rows;  // [permuted rows]
  const float* row_scale;      // [rows of y]
  const int64_t* col_scale_ptrs;  // [num_experts]
};

template <bool kDequant>
__global__ void __launch_bounds__(kRowThreads) moe_unpermute_kernel(const __grid_constant__ UnpermuteParams p) {
  cuda::pdl_wait();  // inputs come from the kernel before (programmatic dependent launch)
  cuda::pdl_trigger();
  const int64_t t = blockIdx.x;
  for (int c = threadIdx.x; c < p.vecs_per_row; c += kRowThreads) {
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int j = 0; j < p.k; ++j) {
      int64_t row = p.inverse[t * p.k + j];
      const float w = p.weights[t * p.k + j];
      float v[8];
      if constexpr (kDequant) {
        const int e = p.ids[t * p.k + j];
        row = p.padded_rows[row];
        const float rs = p.row_scale[row];
        const float4* cs = reinterpret_cast<const float4*>(reinterpret_cast<const float*>(p.col_scale_ptrs[e]) + c * 8);
        const float4 c0 = cs[0], c1 = cs[1];
        const float col[8] = {c0.x, c0.y, c0.z, c0.w, c1.x, c1.y, c1.z, c1.w};
        cuda::load_bf16x8(p.y + row * p.y_stride + c * 8, v);
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = v[i] * rs * col[i];
      } else {
        cuda::load_bf16x8(p.y + row * p.y_stride + c * 8, v);
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[i] += w * v[i];
    }
    cuda::store_bf16x8(p.out + t * p.out_stride + c * 8, acc);
  }
}

Status launch_permute(const MoePermuteArgs& a, CUstream_st* stream) {
  constexpr const char* kName = "moe_permute_cuda";
  if (a.topk_ids.ndim != 2) return invalid_argument("moe_permute_cuda: topk_ids must be [num_tokens, k]");
  const int64_t n = a.topk_ids.shape[0], k = a.topk_ids.shape[1], num_assign = n * k, e = a.num_experts;
  if (e <= 0 || e > kMaxExperts)
    return unimplemented("moe_permute_cuda: " + std::to_string(e) + " experts (supported: 1 to 256)");
  if (a.align_rows < 1 || a.align_rows > 64 || (a.align_rows & (a.align_rows - 1)) != 0)
    return invalid_argument("moe_permute_cuda: align_rows " + std::to_string(a.align_rows) + " (want a power of two up to 64)");
  const int64_t rows = moe_permuted_rows(num_assign, e, a.align_rows);
  KILN_RETURN_IF_ERROR(cuda::expect_device(a.topk_ids, DType::kInt32, num_assign, kName, "topk_ids"));
  KILN_RETURN_IF_ERROR(cuda::expect_device(a.expert_offsets, DType::kInt32, e + 1, kName, "expert_offsets"));
  KILN_RETURN_IF_ERROR(cuda::expect_device(a.permuted_src, DType::kInt32, rows, kName, "permuted_src"));
  KILN_RETURN_IF_ERROR(cuda::expect_device(a.inverse, DType::kInt32, num_assign, kName, "inverse"));
  KILN_ASSIGN_OR_RETURN(const cuda::RowsView x, cuda::device_rows(a.x, DType::kBF16, kName, "x"));
  KILN_ASSIGN_OR_RETURN(const cuda::RowsView xp, cuda::device_rows(a.x_permuted, DType::kBF16, kName, "x_permuted"));
  if (x.rows != n || xp.rows != rows || xp.cols != x.cols)
    return invalid_argument("moe_permute_cuda: x " + a.x.shape_string() + " / x_permuted " +
                            a.x_permuted.shape_string() + " do not match topk_ids " + a.topk_ids.shape_string());
  if (x.cols % 8 || x.stride % 8 || xp.stride % 8 || !cuda::aligned16(a.x.data) || !cuda::aligned16(a.x_permuted.data))
    return unimplemented("moe_permute_cuda: hidden must be a multiple of 8 with 16-byte aligned rows");
  if (rows > 0x7fffffff) return out_of_range("moe_permute_cuda: too many assignments");
  PlaceParams pp{};
  pp.topk_ids = static_cast<const int32_t*>(a.topk_ids.data);
  pp.offsets = static_cast<int32_t*>(a.expert_offsets.data);
  pp.permuted_src = static_cast<int32_t*>(a.permuted_src.data);
  pp.inverse = static_cast<int32_t*>(a.inverse.data);
  pp.num_assignments = num_assign;
  pp.num_experts = static_cast<int>(e);
  pp.align_rows = static_cast<int>(a.align_rows);
  moe_place_kernel<<<1, kPlaceThreads, 0, stream>>>(pp);  // offsets are written even for 0 tokens
  KILN_CUDA_CHECK_LAUNCH();
  if (num_assign == 0) return ok_status();
  GatherParams gp{};
  gp.permuted_src = pp.permuted_src;
  gp.end = pp.offsets + e;
  gp.x = static_cast<const uint4*>(a.x.data);
  gp.x_permuted = static_cast<uint4*>(a.x_permuted.data);
  gp.x_stride = x.stride / 8;
  gp.out_stride = xp.stride / 8;
  gp.k = static_cast<int>(k);
  gp.vecs_per_row = static_cast<int>(x.cols / 8);
  moe_gather_kernel<<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(gp);
  KILN_CUDA_CHECK_LAUNCH();
  return ok_status();
}

Status launch_unpermute(const MoeUnpermuteArgs& a, CUstream_st* stream) {
  constexpr const char* kName = "moe_unpermute_cuda";
  if (a.topk_weights.ndim != 2) return invalid_argument("moe_unpermute_cuda: topk_weights must be [num_tokens, k]");
  const int64_t n = a.topk_weights.shape[0], k = a.topk_weights.shape[1];
  KILN_RETURN_IF_ERROR(cuda::expect_device(a.topk_weights, DType::kF32, n * k, kName, "topk_weights"));
  KILN_RETURN_IF_ERROR(cuda::expect_device(a.inverse, DType::kInt32, n * k, kName, "inverse"));
  KILN_ASSIGN_OR_RETURN(const cuda::RowsView y, cuda::device_rows(a.y_permuted, DType::kBF16, kName, "y_permuted"));
  KILN_ASSIGN_OR_RETURN(const cuda::RowsView out, cuda::device_rows(a.out, DType::kBF16, kName, "out"));
  if (y.rows < n * k || out.rows != n || out.cols != y.cols)
    return invalid_argument("moe_unpermute_cuda: y_permuted " + a.y_permuted.shape_string() + " / out " +
                            a.out.shape_string() + " do not match topk_weights " + a.topk_weights.shape_string());
  if (y.cols % 8 || y.stride % 8 || out.stride % 8 || !cuda::aligned16(a.y_permuted.data) || !cuda::aligned16(a.out.data))
    return unimplemented("moe_unpermute_cuda: hidden must be a multiple of 8 with 16-byte aligned rows");
  if (n == 0) return ok_status();
  if (n > 0x7fffffff) return out_of_range("moe_unpermute_cuda: too many tokens");
  UnpermuteParams p{};
  p.y = static_cast<const bf16*>(a.y_permuted.data);
  p.weights = static_cast<const float*>(a.topk_weights.data);
  p.inverse = static_cast<const int32_t*>(a.inverse.data);
  p.out = static_cast<bf16*>(a.out.data);
  p.y_stride = y.stride;
  p.out_stride = out.stride;
  p.k = static_cast<int>(k);
  p.vecs_per_row = static_cast<int>(y.cols / 8);
  const bool dequant = !a.padded_rows.empty();
  if (dequant) {
    KILN_RETURN_IF_ERROR(cuda::expect_device(a.topk_ids, DType::kInt32, n * k, kName, "topk_ids"));
    KILN_RETURN_IF_ERROR(cuda::expect_device(a.padded_rows, DType::kInt32, a.padded_rows.numel(), kName, "padded_rows"));
    KILN_RETURN_IF_ERROR(cuda::expect_device(a.row_scale, DType::kF32, y.rows, kName, "row_scale"));
    KILN_RETURN_IF_ERROR(cuda::expect_device(a.col_scale_ptrs, DType::kInt64, a.col_scale_ptrs.numel(), kName, "col_scale_ptrs"));
    p.ids = static_cast<const int32_t*>(a.topk_ids.data);
    p.padded_rows = static_cast<const int32_t*>(a.padded_rows.data);
    p.row_scale = static_cast<const float*>(a.row_scale.data);
    p.col_scale_ptrs = static_cast<const int64_t*>(a.col_scale_ptrs.data);
  }
  KILN_CUDA_CHECK(cuda::launch_pdl(dequant ? &moe_unpermute_kernel<true> : &moe_unpermute_kernel<false>,
                                   dim3(static_cast<unsigned>(n)), dim3(kRowThreads), 0, stream, p));
  KILN_CUDA_CHECK_LAUNCH();
  return ok_status();
}

constexpr MoeCudaVariant kVariants[] = {
    {DType::kBF16, &launch_permute, &launch_unpermute},
};

std::string supported_list() {
  std::string s;
  for (const auto& v : kVariants) s += std::string(s.empty() ? "" : ", ") + std::string(dtype_name(v.act));
  return s;
}

}  // namespace

std::span<const MoeCudaVariant> moe_cuda_variants() { return kVariants; }

int64_t moe_permuted_rows(int64_t assignments, int64_t num_experts, int64_t align_rows) {
  return assignments + (align_rows > 1 ? (align_rows - 1) * std::max<int64_t>(num_experts - 1, 0) : 0);
}

Status moe_permute_cuda(const MoePermuteArgs& a, CUstream_st* stream) {
  for (const auto& v : kVariants)
    if (v.act == a.x.dtype && v.act == a.x_permuted.dtype) return v.permute(a, stream);
  return unimplemented("moe_permute_cuda: x " + std::string(dtype_name(a.x.dtype)) + " (supported: " + supported_list() + ")");
}

Status moe_unpermute_cuda(const MoeUnpermuteArgs& a, CUstream_st* stream) {
  for (const auto& v : kVariants)
    if (v.act == a.y_permuted.dtype && v.act == a.out.dtype) return v.unpermute(a, stream);
  return unimplemented("moe_unpermute_cuda: y " + std::string(dtype_name(a.y_permuted.dtype)) +
                       " (supported: " + supported_list() + ")");
}

}  // namespace kiln
