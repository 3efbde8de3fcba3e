// CUDA RoPE (rotate-half) on q and k in place, fused with writing the rotated k and v into the
// paged KV cache. One block per token: the token's cos/sin table goes to shared memory once, then
// the threads walk (head, 8-pair chunk) items with 16-byte loads of both halves.
// Variants: bf16 q/k/v -> bf16 cache; bf16 q/k/v -> fp8 e4m3 cache, quantized on write from the f32
// rotated k (and the f32 v) as fp8_rne_sat(x / scale), bit-exact to rope_kv_write_cpu's fp8 path;
// the same with the q/k Hadamard rotation (hadamard.h), a warp per head (rope_kv_write_hadamard_kernel).
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "kiln/kernels/cuda/common/bf16.cuh"
#include "kiln/kernels/cuda/common/cuda_check.h"
#include "kiln/kernels/cuda/common/kernel_args.h"
#include "kiln/kernels/cuda/rope/rope_device.cuh"
#include "kiln/kernels/hadamard.h"
#include "kiln/kernels/rope.h"
#include "kiln/kernels/cuda/common/pdl.cuh"

namespace kiln {
namespace {

using bf16 = __nv_bfloat16;
constexpr int kThreads = 128;
constexpr int kHadamardThreads = 256;
constexpr int64_t kHadamardTargetBlocks = 1024;  // the launcher splits a token's heads over blocks up to about this many
constexpr int kMaxHalf = 256;  // head_dim <= 512

struct RopeParams {
  bf16* __restrict__ q;        // [n, hq, d], token stride q_stride
  bf16* __restrict__ q_out;    // [n, hq, d] contiguous, or null: q rotated in place
  bf16* __restrict__ k;        // [n, hkv, d], token stride k_stride
  const bf16* __restrict__ v;  // [n, hkv, d], token stride v_stride
  const int32_t* positions;    // [n]
  const float* inv_freq;       // [d / 2]
  const int32_t* slots;        // [n] or null
  void* __restrict__ k_cache;  // [num_slots, hkv, d] bf16 or fp8 e4m3
  void* __restrict__ v_cache;  // [num_slots, hkv, d] bf16 or fp8 e4m3
  int64_t q_stride, k_stride, v_stride;
  int64_t num_slots;
  int hq, hkv, head_dim;
  float k_scale, v_scale;  // fp8 caches: the cache holds fp8(x / scale)
  float hadamard_norm;     // 1 / sqrt(head_dim) as the CPU computes it (kHadamard)
};

using cuda::rope::quantize_fp8x8;
using cuda::rope::rotate_pair;

// The token's cos / sin table into shared memory (angles' sin / cos in double, as the reference;
// the block's threads share the work, then sync) and where its K / V go in the cache. Reads only
// positions, slots (the step's metadata upload, a copy that completed before the step's first
// kernel) and inv_freq (constant), so the kernels run it before their PDL wait, overlapping the
// previous kernel's tail.
struct TokenSlot {
  bool write;         // the slot is inside the cache
  int64_t cache_off;  // element offset of the slot's [hkv, d] rows
};
// threads: the block's size.
__device__ __forceinline__ TokenSlot token_table(const RopeParams& p, int64_t t, float* cos_s, float* sin_s, int threads) {
  cuda::rope::angle_table(static_cast<float>(p.positions[t]), p.inv_freq, p.head_dim / 2, cos_s, sin_s, threadIdx.x, threads);
  __syncthreads();
  const int64_t slot = p.slots ? p.slots[t] : -1;
  return {slot >= 0 && slot < p.num_slots, slot * p.hkv * p.head_dim};
}

// kFp8: the caches are fp8 e4m3 (quantized here), else bf16 (copies of the rounded k and v).
template <bool kFp8>
__global__ void __launch_bounds__(kThreads) rope_kv_write_kernel(const __grid_constant__ RopeParams p) {
  __shared__ float cos_s[kMaxHalf], sin_s[kMaxHalf];
  const int64_t t = blockIdx.x;
  const int half = p.head_dim / 2, chunks = half / 8;
  const TokenSlot ts = token_table(p, t, cos_s, sin_s, kThreads);  // before the wait: see token_table
  cuda::pdl_wait();  // q, k, v come from the kernel before (programmatic dependent launch)
  cuda::pdl_trigger();
  const bool write_cache = ts.write;
  const int64_t cache_off = ts.cache_off;

  // Rotation items: q heads then k heads, each split into `chunks` 8-pair pieces.
  const int rot_items = (p.hq + p.hkv) * chunks;
  for (int item = threadIdx.x; item < rot_items; item += kThreads) {
    const int head = item / chunks, c = item - head * chunks;
    const bool is_k = head >= p.hq;
    const int h = is_k ? head - p.hq : head;
    bf16* x = is_k ? p.k + t * p.k_stride + h * p.head_dim : p.q + t * p.q_stride + h * p.head_dim;
    float x1[8], x2[8];
    cuda::load_bf16x8(x + c * 8, x1);
    cuda::load_bf16x8(x + half + c * 8, x2);
    if (!is_k && p.q_out) x = p.q_out + (t * p.hq + h) * p.head_dim;
    rotate_pair(x1, x2, cos_s + c * 8, sin_s + c * 8);
    const uint4 r1 = cuda::f32_to_bf16x8(x1), r2 = cuda::f32_to_bf16x8(x2);
    *reinterpret_cast<uint4*>(x + c * 8) = r1;
    *reinterpret_cast<uint4*>(x + half + c * 8) = r2;
    if (is_k && write_cache) {
      if constexpr (kFp8) {
        uint8_t* kc = static_cast<uint8_t*>(p.k_cache) + cache_off + h * p.head_dim;
        *reinterpret_cast<uint2*>(kc + c * 8) = quantize_fp8x8(x1, p.k_scale);
        *reinterpret_cast<uint2*>(kc + half + c * 8) = quantize_fp8x8(x2, p.k_scale);
      } else {
        bf16* kc = static_cast<bf16*>(p.k_cache) + cache_off + h * p.head_dim;
        *reinterpret_cast<uint4*>(kc + c * 8) = r1;
        *reinterpret_cast<uint4*>(kc + half + c * 8) = r2;
      }
    }
  }
  if (!write_cache) return;
  const int v_vecs_per_head = p.head_dim / 8, v_items = p.hkv * v_vecs_per_head;
  for (int item = threadIdx.x; item < v_items; item += kThreads) {
    const int h = item / v_vecs_per_head, c = item - h * v_vecs_per_head;
    const bf16* src = p.v + t * p.v_stride + h * p.head_dim + c * 8;
    if constexpr (kFp8) {
      float x[8];
      cuda::load_bf16x8(src, x);
      *reinterpret_cast<uint2*>(static_cast<uint8_t*>(p.v_cache) + cache_off + h * p.head_dim + c * 8) =
          quantize_fp8x8(x, p.v_scale);
    } else {
      *reinterpret_cast<uint4*>(static_cast<bf16*>(p.v_cache) + cache_off + h * p.head_dim + c * 8) =
          *reinterpret_cast<const uint4*>(src);
    }
  }
}

// E consecutive bf16 <-> f32 and E floats -> E fp8 bytes, in one access where E allows (E 2 4 8:
// 4-, 8-, 16-byte aligned, as a lane's E elements of a 16-byte aligned head are).
template <int E>
__device__ __forceinline__ void load_bf16(const bf16* src, float (&x)[E]) {
  if constexpr (E == 8) {
    cuda::load_bf16x8(src, x);
  } else if constexpr (E == 4) {
    const uint2 u = *reinterpret_cast<const uint2*>(src);
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.x));
    const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.y));
    x[0] = a.x, x[1] = a.y, x[2] = b.x, x[3] = b.y;
  } else if constexpr (E == 2) {
    const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(src));
    x[0] = a.x, x[1] = a.y;
  } else {
    x[0] = __bfloat162float(src[0]);
  }
}
template <int E>
__device__ __forceinline__ void store_bf16(bf16* dst, const float (&x)[E]) {
  if constexpr (E == 8) {
    cuda::store_bf16x8(dst, x);
  } else if constexpr (E == 4) {
    const __nv_bfloat162 a = __floats2bfloat162_rn(x[0], x[1]), b = __floats2bfloat162_rn(x[2], x[3]);
    *reinterpret_cast<uint2*>(dst) = make_uint2(*reinterpret_cast<const uint32_t*>(&a), *reinterpret_cast<const uint32_t*>(&b));
  } else if constexpr (E == 2) {
    *reinterpret_cast<__nv_bfloat162*>(dst) = __floats2bfloat162_rn(x[0], x[1]);
  } else {
    dst[0] = __float2bfloat16_rn(x[0]);
  }
}
template <int E>
__device__ __forceinline__ void store_fp8(uint8_t* dst, const float (&x)[E], float scale) {
  if constexpr (E == 8) {
    *reinterpret_cast<uint2*>(dst) = quantize_fp8x8(x, scale);
  } else if constexpr (E == 4 || E == 2) {
    uint32_t w = 0;
#pragma unroll
    for (int j = 0; j < E; ++j) w |= cuda::rope::quantize_fp8(x[j], scale) << (8 * j);
    if constexpr (E == 4) *reinterpret_cast<uint32_t*>(dst) = w;
    else *reinterpret_cast<uint16_t*>(dst) = static_cast<uint16_t>(w);
  } else {
    dst[0] = static_cast<uint8_t>(cuda::rope::quantize_fp8(x[0], scale));
  }
}

// One head of rope_kv_write_hadamard_kernel (L lanes): v heads are quantized, q / k heads rotated,
// transformed and written.
template <int E, int L>
__device__ __forceinline__ void rope_hadamard_head(const RopeParams& p, int64_t t, int head, int lane, unsigned mask,
                                                   bool write_cache, int64_t cache_off, const float* cos_s, const float* sin_s) {
  float x[E];
  if (head >= p.hq + p.hkv) {  // v: quantize only
    if (!write_cache) return;
    const int h = head - p.hq - p.hkv;
    load_bf16<E>(p.v + t * p.v_stride + h * p.head_dim + lane * E, x);
    store_fp8<E>(static_cast<uint8_t*>(p.v_cache) + cache_off + h * p.head_dim + lane * E, x, p.v_scale);
    return;
  }
  const bool is_k = head >= p.hq;
  const int h = is_k ? head - p.hq : head;
  const bf16* src = is_k ? p.k + t * p.k_stride + h * p.head_dim : p.q + t * p.q_stride + h * p.head_dim;
  load_bf16<E>(src + lane * E, x);
  cuda::rope::rope_hadamard<E, L>(x, lane, mask, cos_s, sin_s, p.hadamard_norm);
  bf16* dst = is_k ? p.k + t * p.k_stride + h * p.head_dim
                   : (p.q_out ? p.q_out + (t * p.hq + h) * p.head_dim : p.q + t * p.q_stride + h * p.head_dim);
  store_bf16<E>(dst + lane * E, x);
  if (is_k && write_cache) store_fp8<E>(static_cast<uint8_t*>(p.k_cache) + cache_off + h * p.head_dim + lane * E, x, p.k_scale);
}

// The fp8 cache with the q/k Hadamard rotation: L lanes per head (a warp, or half a warp for
// head_dim 16; q heads, k heads, then v heads, which are only quantized). Lane l of a head holds
// elements [l E, l E + E) (E L = head_dim), so a RoPE pair (i, i + d/2) sits in lanes l and
// l ^ L/2 and the transform's stages of stride >= E are lane shuffles. Same float ops in the same
// order as the CPU (rotate_fma, then hadamard.h's stages, then the 1/sqrt(d) product): the cache
// bytes match. Block (token, blockIdx.y) of kHadamardThreads: heads blockIdx.y G + j, + G gridDim.y,
// ... (G = kHadamardThreads / L heads a pass); each block builds its token's cos / sin table in
// shared memory (double sincos: the launcher keeps gridDim.y, the tables per token, as small as
// the batch allows; at decode sizes one pass per block, the heads of a token in parallel blocks).
template <int E, int L>
__global__ void __launch_bounds__(kHadamardThreads) rope_kv_write_hadamard_kernel(const __grid_constant__ RopeParams p) {
  static_assert(L == 16 || L == 32);
  constexpr int kHeadsPerPass = kHadamardThreads / L;
  __shared__ float cos_s[kMaxHalf], sin_s[kMaxHalf];
  const int64_t t = blockIdx.x;
  const TokenSlot ts = token_table(p, t, cos_s, sin_s, kHadamardThreads);  // before the wait: see token_table
  cuda::pdl_wait();  // q, k, v come from the kernel before
  cuda::pdl_trigger();
  const int lane = threadIdx.x % L;
  const unsigned mask = L == 32 ? 0xffffffffu : 0xffffu << (threadIdx.x % 32 / L * L);  // this head's lanes
  const int heads = p.hq + 2 * p.hkv;
  for (int head = blockIdx.y * kHeadsPerPass + static_cast<int>(threadIdx.x) / L; head < heads;
       head += kHeadsPerPass * static_cast<int>(gridDim.y))
    rope_hadamard_head<E, L>(p, t, head, lane, mask, ts.write, ts.cache_off, cos_s, sin_s);
}

// [n, heads, d] with contiguous heads and a (possibly larger) token stride.
Status check_heads(const Tensor& t, int64_t n, int64_t d, const char* name) {
  if (t.device != Device::kCuda || t.dtype != DType::kBF16 || t.ndim != 3 || t.shape[0] != n || t.shape[2] != d)
    return invalid_argument(std::string("rope_kv_write_cuda: ") + name + " is " + t.shape_string() +
                            ", want [num_tokens, heads, head_dim] bf16 cuda");
  if (t.strides[2] != 1 || t.strides[1] != d || t.strides[0] < t.shape[1] * d || t.strides[0] % 8 ||
      !cuda::aligned16(t.data))
    return invalid_argument(std::string("rope_kv_write_cuda: ") + name +
                            " needs contiguous heads and 16-byte aligned token rows");
  return ok_status();
}

template <bool kFp8, bool kHadamard>
Status launch_rope_kv_write(const RopeKvWriteArgs& a, CUstream_st* stream) {
  constexpr DType kCache = kFp8 ? DType::kFp8E4M3 : DType::kBF16;
  constexpr const char* kName = "rope_kv_write_cuda";
  if (a.q.ndim != 3 || a.k.ndim != 3) return invalid_argument("rope_kv_write_cuda: q and k must be [n, heads, head_dim]");
  const int64_t n = a.q.shape[0], hq = a.q.shape[1], hkv = a.k.shape[1], d = a.q.shape[2];
  KILN_RETURN_IF_ERROR(check_heads(a.q, n, d, "q"));
  KILN_RETURN_IF_ERROR(check_heads(a.k, n, d, "k"));
  KILN_RETURN_IF_ERROR(check_heads(a.v, n, d, "v"));
  if (!a.q_out.empty()) {
    KILN_RETURN_IF_ERROR(check_heads(a.q_out, n, d, "q_out"));
    if (a.q_out.shape != a.q.shape || !a.q_out.is_contiguous())
      return invalid_argument("rope_kv_write_cuda: q_out must be " + a.q.shape_string() + ", contiguous");
  }
  if (a.v.shape[1] != hkv) return invalid_argument("rope_kv_write_cuda: k and v differ in heads");
  if (d % 16 != 0 || d / 2 > kMaxHalf)
    return unimplemented("rope_kv_write_cuda: head_dim " + std::to_string(d) + " (supported: multiples of 16 up to 512)");
  KILN_RETURN_IF_ERROR(cuda::expect_device(a.positions, DType::kInt32, n, kName, "positions"));
  KILN_RETURN_IF_ERROR(cuda::expect_device(a.inv_freq, DType::kF32, d / 2, kName, "inv_freq"));
  int64_t num_slots = 0;
  if (!a.slot_mapping.empty()) {
    KILN_RETURN_IF_ERROR(cuda::expect_device(a.slot_mapping, DType::kInt32, n, kName, "slot_mapping"));
    for (const Tensor* c : {&a.k_cache, &a.v_cache}) {
      KILN_RETURN_IF_ERROR(cuda::expect_device(*c, kCache, -1, kName, "k_cache / v_cache"));
      if (c->ndim != 4 || c->shape[2] != hkv || c->shape[3] != d || !cuda::aligned16(c->data))
        return invalid_argument("rope_kv_write_cuda: cache " + c->shape_string() + ", want [blocks, block_size, " +
                                std::to_string(hkv) + ", " + std::to_string(d) + "]");
    }
    if (a.k_cache.numel() != a.v_cache.numel()) return invalid_argument("rope_kv_write_cuda: k/v caches differ");
    num_slots = a.k_cache.shape[0] * a.k_cache.shape[1];
    if (kFp8 && !(a.k_scale > 0.f && a.v_scale > 0.f && std::isfinite(a.k_scale) && std::isfinite(a.v_scale)))
      return invalid_argument("rope_kv_write_cuda: fp8 cache scales must be finite and > 0");
  }
  if (a.hadamard_qk != kHadamard) return invalid_argument("rope_kv_write_cuda: hadamard_qk does not match the variant");
  const void* kernel = reinterpret_cast<const void*>(&rope_kv_write_kernel<kFp8>);
  dim3 grid(static_cast<unsigned>(n));
  if constexpr (kHadamard) {
    switch (d) {
      case 16: kernel = reinterpret_cast<const void*>(&rope_kv_write_hadamard_kernel<1, 16>); break;
      case 32: kernel = reinterpret_cast<const void*>(&rope_kv_write_hadamard_kernel<1, 32>); break;
      case 64: kernel = reinterpret_cast<const void*>(&rope_kv_write_hadamard_kernel<2, 32>); break;
      case 128: kernel = reinterpret_cast<const void*>(&rope_kv_write_hadamard_kernel<4, 32>); break;
      case 256: kernel = reinterpret_cast<const void*>(&rope_kv_write_hadamard_kernel<8, 32>); break;
      default:
        return unimplemented("rope_kv_write_cuda: the q/k Hadamard rotation supports head_dim 16, 32, 64, 128, 256, got " + std::to_string(d));
    }
    // One pass of heads per block where the batch is small (decode: a token's heads in parallel),
    // fewer blocks per token (fewer cos / sin tables, each pass looping) where it fills the GPU.
    const int64_t heads_per_pass = kHadamardThreads / std::min<int64_t>(d, 32);
    const int64_t passes = (hq + 2 * hkv + heads_per_pass - 1) / heads_per_pass;
    grid.y = static_cast<unsigned>(std::clamp<int64_t>((kHadamardTargetBlocks + n - 1) / std::max<int64_t>(n, 1), 1, passes));
  }
  if (n == 0) return ok_status();
  if (n > 0x7fffffff) return out_of_range("rope_kv_write_cuda: too many tokens");
  RopeParams p{};
  p.q = static_cast<bf16*>(a.q.data);
  p.q_out = a.q_out.empty() ? nullptr : static_cast<bf16*>(a.q_out.data);
  p.k = static_cast<bf16*>(a.k.data);
  p.v = static_cast<const bf16*>(a.v.data);
  p.positions = static_cast<const int32_t*>(a.positions.data);
  p.inv_freq = static_cast<const float*>(a.inv_freq.data);
  p.slots = a.slot_mapping.empty() ? nullptr : static_cast<const int32_t*>(a.slot_mapping.data);
  p.k_cache = a.k_cache.data;
  p.v_cache = a.v_cache.data;
  p.k_scale = a.k_scale;
  p.v_scale = a.v_scale;
  p.q_stride = a.q.strides[0]; p.k_stride = a.k.strides[0]; p.v_stride = a.v.strides[0];
  p.num_slots = num_slots;
  p.hq = static_cast<int>(hq); p.hkv = static_cast<int>(hkv); p.head_dim = static_cast<int>(d);
  p.hadamard_norm = hadamard_norm(d);
  void* args[] = {&p};
  KILN_CUDA_CHECK(cuda::launch_pdl(kernel, grid, dim3(kHadamard ? kHadamardThreads : kThreads), 0, stream, args, true));
  return ok_status();
}

constexpr RopeKvWriteCudaVariant kVariants[] = {
    {DType::kBF16, DType::kBF16, false, &launch_rope_kv_write<false, false>},
    {DType::kBF16, DType::kFp8E4M3, false, &launch_rope_kv_write<true, false>},
    {DType::kBF16, DType::kFp8E4M3, true, &launch_rope_kv_write<true, true>},
};

}  // namespace

std::span<const RopeKvWriteCudaVariant> rope_kv_write_cuda_variants() { return kVariants; }

Status rope_kv_write_cuda(const RopeKvWriteArgs& a, CUstream_st* stream) {
  const DType cache = a.k_cache.empty() ? DType::kBF16 : a.k_cache.dtype;
  for (const auto& v : kVariants)
    if (v.act == a.q.dtype && v.cache == cache && v.hadamard_qk == a.hadamard_qk) return v.launch(a, stream);
  std::string supported;
  for (const auto& v : kVariants)
    supported += std::string(supported.empty() ? "" : ", ") + std::string(dtype_name(v.act)) + " -> cache " +
                 std::string(dtype_name(v.cache)) + (v.hadamard_qk ? " with hadamard_qk" : "");
  return unimplemented("rope_kv_write_cuda: " + std::string(dtype_name(a.q.dtype)) + " -> cache " + std::string(dtype_name(cache)) +
                       (a.hadamard_qk ? " with hadamard_qk" : "") + " (supported: " + supported + ")");
}

}  // namespace kiln
