// Portable paged attention: any head_dim <= 256 (even), any GQA group, bf16 q/out with a bf16 or
// fp8 e4m3 cache (K and V scales applied to the scores and the output). One CTA of 128
// threads per (query token, query head); keys in chunks of 128 (one score per thread), online
// softmax across chunks, the output accumulated by threads over head_dim. Slow but simple: the
// fallback for shapes outside the tuned decode/prefill tables (e.g. the tiny test models).
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <string>

#include "kiln/kernels/cuda/attention/attention_params.h"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kMaxHeadDim = 256;

__device__ float block_reduce(float v, float* scratch, bool is_max) {
  for (int o = 16; o > 0; o >>= 1) {
    const float w = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, w) : v + w;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = scratch[0];
  for (int i = 1; i < kThreads / 32; ++i) r = is_max ? fmaxf(r, scratch[i]) : r + scratch[i];
  return r;
}

__device__ __forceinline__ float load_f32(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ float load_f32(const __nv_fp8_e4m3* p) { return static_cast<float>(*p); }

// TCache: __nv_bfloat16 or __nv_fp8_e4m3.
template <typename TCache>
__global__ void __launch_bounds__(kThreads) generic_attention_kernel(const __grid_constant__ PagedAttentionParams p) {
  const int t = blockIdx.x, h = blockIdx.y, d = p.head_dim;
  int b = 0;
  while (b + 1 < p.batch && p.cu_seqlens_q[b + 1] <= t) ++b;
  const int q_len = p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b];
  const int pos = p.kv_lens[b] - q_len + (t - p.cu_seqlens_q[b]);
  const int first = p.sliding_window > 0 ? max(0, pos - p.sliding_window + 1) : 0;
  const int kvh = h / p.group, bs = 1 << p.block_size_log2;
  const int32_t* table = p.block_tables + static_cast<int64_t>(b) * p.table_stride;
  const __nv_bfloat16* q = static_cast<const __nv_bfloat16*>(p.q) + (static_cast<int64_t>(t) * p.num_q_heads + h) * d;
  __shared__ float qs[kMaxHeadDim], probs[kThreads], scratch[kThreads / 32];
  for (int i = threadIdx.x; i < d; i += kThreads) qs[i] = __bfloat162float(q[i]);
  __syncthreads();
  auto row = [&](const void* cache, int j) {
    const int64_t slot = static_cast<int64_t>(table[j >> p.block_size_log2]) * bs + (j & (bs - 1));
    return static_cast<const TCache*>(cache) + (slot * p.num_kv_heads + kvh) * d;
  };
  float m = -INFINITY, l = 0.f, acc0 = 0.f, acc1 = 0.f;  // acc for dims threadIdx.x and +128
  for (int base = first; base <= pos; base += kThreads) {
    const int j = base + threadIdx.x;
    float s = -INFINITY;
    if (j <= pos) {
      const TCache* k = row(p.k_cache, j);
      float dot = 0.f;
      for (int i = 0; i < d; ++i) dot += qs[i] * load_f32(k + i);
      s = dot * (p.scale * p.k_scale);
    }
    const float m_new = fmaxf(m, block_reduce(s, scratch, true));
    const float e = j <= pos ? __expf(s - m_new) : 0.f;
    probs[threadIdx.x] = e;
    const float sum = block_reduce(e, scratch, false);
    const float correction = __expf(m - m_new);
    l = l * correction + sum;
    acc0 *= correction;
    acc1 *= correction;
    m = m_new;
    __syncthreads();
    const int n = min(kThreads, pos + 1 - base);
    for (int jj = 0; jj < n; ++jj) {
      const TCache* v = row(p.v_cache, base + jj);
      if (threadIdx.x < d) acc0 += probs[jj] * load_f32(v + threadIdx.x);
      if (threadIdx.x + kThreads < d) acc1 += probs[jj] * load_f32(v + threadIdx.x + kThreads);
    }
    __syncthreads();
  }
  __nv_bfloat16* out = static_cast<__nv_bfloat16*>(p.out) + (static_cast<int64_t>(t) * p.num_q_heads + h) * d;
  const float inv = p.v_scale / l;
  if (threadIdx.x < d) out[threadIdx.x] = __float2bfloat16_rn(acc0 * inv);
  if (threadIdx.x + kThreads < d) out[threadIdx.x + kThreads] = __float2bfloat16_rn(acc1 * inv);
}

}  // namespace

Status generic_attention_launch(const PagedAttentionParams& p, DType cache, CUstream_st* stream) {
  if (p.head_dim > kMaxHeadDim || p.head_dim <= 0)
    return unimplemented("generic paged attention: head_dim " + std::to_string(p.head_dim) + " (supported: 1..256)");
  if (cache != DType::kBF16 && cache != DType::kFp8E4M3)
    return unimplemented("generic paged attention: cache dtype " + std::string(dtype_name(cache)) +
                         " (supported: bf16, fp8_e4m3)");
  if (p.num_tokens == 0) return ok_status();
  const dim3 grid(p.num_tokens, p.num_q_heads);
  if (cache == DType::kFp8E4M3) {
    generic_attention_kernel<__nv_fp8_e4m3><<<grid, kThreads, 0, stream>>>(p);
  } else {
    generic_attention_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(p);
  }
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return internal_error(std::string("generic paged attention: ") + cudaGetErrorString(e));
  return ok_status();
}

}  // namespace kiln::cuda
