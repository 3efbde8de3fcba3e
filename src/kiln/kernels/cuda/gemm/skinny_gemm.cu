// Decode GEMM for m = 1..64 on tensor cores with the operands swapped ("swap AB"): the weight rows
// are the M side of mma.m16n8k16 (16 rows per tile) and the activation rows its N side (8 per
// tile), so one weight tile serves all m. Each thread streams 16-byte vectors of two weight rows
// straight into registers (no shared memory), kU vectors per row in flight; the k order inside
// an mma is permuted to match those vectors (a dot product does not care), and x's fragments are
// loaded in the same order. fp8 e4m3 weights are widened in registers to exact bf16 (bit shifts
// give w * 2^-120, one bf16 multiply by 2^120 restores it, subnormals included). A CTA = 8 warps
// on 8 * kRT row tiles over one k range; split-K over blockIdx.y, reduced in a fixed order by the
// last CTA of each row block to arrive (deterministic, one launch, CUDA-graph safe).
#include <cuda_bf16.h>

#include <algorithm>
#include <string>

#include "kiln/kernels/cuda/common/cuda_check.h"
#include "kiln/kernels/cuda/gemm/skinny_gemm.h"

namespace kiln {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
// Split K at most until the partial sums written (f32, m columns) reach this fraction of the
// weight bytes, and never below kMinChunksPerSplit chunks of kU vectors per thread.
constexpr double kMaxPartialTraffic = 0.5;
constexpr int kMinChunksPerSplit = 2;

struct SkinnyParams {
  const uint8_t* w;         // [n, k] bf16 | fp8 bytes, row stride ldw_bytes
  const __nv_bfloat16* x;   // [m, k], row stride ldx (elements)
  const float* w_scale;     // [n] | [1] | nullptr
  const void* bias;         // [n] in y's dtype | nullptr
  void* y;                  // [m, n], row stride ldy (elements)
  float* partials;          // [split_k, gridDim.x, kRT * kMT * 4, kThreads] when split_k > 1
  int* counters;            // [gridDim.x]
  int m, n, k;
  int64_t ldw_bytes, ldx, ldy;
  int scale_per_tensor;
  int steps_per_split;      // k steps (4 threads x one 16-byte vector each) per blockIdx.y
};

// Streamed once: do not keep in L1.
__device__ __forceinline__ uint4 load_weights(const uint8_t* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

__device__ __forceinline__ uint4 load_x(const __nv_bfloat16* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }

// c[16 x 8] += a[16 x 16] (rows: weights) * b[16 x 8] (columns: activation rows), bf16 in, f32 acc.
__device__ __forceinline__ void mma_bf16_16x8x16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                                 uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// 4 fp8 e4m3 (bytes b0..b3 of q) -> bf16 pairs lo = (b0, b1), hi = (b2, b3), exact. The sign and
// the 7 magnitude bits moved into bf16 position read as w * 2^-120 (e4m3 subnormals become bf16
// subnormals); the bf16 multiply by 2^120 is exact.
__device__ __forceinline__ void fp8x4_to_bf16x4(uint32_t q, uint32_t& lo, uint32_t& hi) {
  const uint32_t t0 = __byte_perm(q, 0u, 0x1404), t1 = __byte_perm(q, 0u, 0x3424);  // b0,b1 / b2,b3 -> bytes 1 and 3
  uint32_t l = (t0 & 0x80008000u) | ((t0 & 0x7f007f00u) >> 4);
  uint32_t h = (t1 & 0x80008000u) | ((t1 & 0x7f007f00u) >> 4);
  const __nv_bfloat162 two_pow_120 = __halves2bfloat162(__ushort_as_bfloat16(0x7B80), __ushort_as_bfloat16(0x7B80));
  const __nv_bfloat162 lf = __hmul2(*reinterpret_cast<__nv_bfloat162*>(&l), two_pow_120);
  const __nv_bfloat162 hf = __hmul2(*reinterpret_cast<__nv_bfloat162*>(&h), two_pow_120);
  lo = *reinterpret_cast<const uint32_t*>(&lf);
  hi = *reinterpret_cast<const uint32_t*>(&hf);
}

template <bool kFp8>
struct WeightFormat {
  static constexpr int kElemsPerVec = kFp8 ? 16 : 8;  // per 16-byte vector
  static constexpr int kMmasPerVec = kElemsPerVec / 4;  // each thread gives an mma 4 k values
  static constexpr int kStepK = 4 * kElemsPerVec;      // k per step: the 4 threads of an mma row group
};

__device__ __forceinline__ void store_y(float* y, float v) { *y = v; }
__device__ __forceinline__ void store_y(__nv_bfloat16* y, float v) { *y = __float2bfloat16(v); }
__device__ __forceinline__ float load_bias(const float* b) { return *b; }
__device__ __forceinline__ float load_bias(const __nv_bfloat16* b) { return __bfloat162float(*b); }

// Fragment element c of tile (rt, nt) of this thread: weight row and activation row.
__device__ __forceinline__ int frag_n(int row_base, int rt, int c, int g) { return row_base + rt * 16 + g + (c >= 2 ? 8 : 0); }
__device__ __forceinline__ int frag_m(int nt, int c, int t) { return nt * 8 + 2 * t + (c & 1); }

template <bool kFp8, int kMT, int kRT, int kU, int kMinBlocks, typename Y>
__global__ void __launch_bounds__(kThreads, kMinBlocks) skinny_gemm_kernel(const __grid_constant__ SkinnyParams p) {
  using F = WeightFormat<kFp8>;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int row_base = (blockIdx.x * kWarps + warp) * kRT * 16;

  const uint8_t* wrow[kRT][2];  // rows g and g + 8 of each tile (clamped into range), at this thread's vector
#pragma unroll
  for (int rt = 0; rt < kRT; ++rt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = min(row_base + rt * 16 + g + 8 * h, p.n - 1);
      wrow[rt][h] = p.w + r * p.ldw_bytes + t * 16;
    }
  const __nv_bfloat16* xrow[kMT];  // activation row nt * 8 + g, or nullptr past m
#pragma unroll
  for (int nt = 0; nt < kMT; ++nt) {
    const int mr = nt * 8 + g;
    xrow[nt] = mr < p.m ? p.x + mr * p.ldx + t * F::kElemsPerVec : nullptr;
  }

  const int num_steps = (p.k + F::kStepK - 1) / F::kStepK;
  const int s_begin = blockIdx.y * p.steps_per_split, s_end = min(num_steps, s_begin + p.steps_per_split);
  float acc[kRT][kMT][4] = {};

  // kU vectors of each of this thread's 2 * kRT rows, steps [s0, s0 + kU) (zeros past the end).
  auto load_chunk = [&](uint4 (&wv)[kU][kRT][2], int s0) {
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int64_t k0 = static_cast<int64_t>(s0 + u) * F::kStepK;
      const bool ok = s0 + u < s_end && k0 + t * F::kElemsPerVec < p.k;
      const int64_t off = kFp8 ? k0 : 2 * k0;
#pragma unroll
      for (int rt = 0; rt < kRT; ++rt)
#pragma unroll
        for (int h = 0; h < 2; ++h) wv[u][rt][h] = ok ? load_weights(wrow[rt][h] + off) : make_uint4(0, 0, 0, 0);
    }
  };
  auto compute_chunk = [&](const uint4 (&wv)[kU][kRT][2], int s0) {
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int64_t k0 = static_cast<int64_t>(s0 + u) * F::kStepK;
      const bool ok = s0 + u < s_end && k0 + t * F::kElemsPerVec < p.k;
      // Weights as bf16 words: word 2j / 2j + 1 hold this thread's k values 4j..4j+1 / 4j+2..4j+3.
      uint32_t a[kRT][2][2 * F::kMmasPerVec];
#pragma unroll
      for (int rt = 0; rt < kRT; ++rt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const uint32_t q[4] = {wv[u][rt][h].x, wv[u][rt][h].y, wv[u][rt][h].z, wv[u][rt][h].w};
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            if constexpr (kFp8) fp8x4_to_bf16x4(q[i], a[rt][h][2 * i], a[rt][h][2 * i + 1]);
            else a[rt][h][i] = q[i];
          }
        }
#pragma unroll
      for (int nt = 0; nt < kMT; ++nt) {
        uint32_t b[2 * F::kMmasPerVec];  // x[row][k0 + t * kElemsPerVec + ...] as bf16 pairs
        const bool x_ok = ok && xrow[nt] != nullptr;
#pragma unroll
        for (int v = 0; v < F::kMmasPerVec / 2; ++v) {
          const uint4 xv = x_ok ? load_x(xrow[nt] + k0 + 8 * v) : make_uint4(0, 0, 0, 0);
          b[4 * v] = xv.x; b[4 * v + 1] = xv.y; b[4 * v + 2] = xv.z; b[4 * v + 3] = xv.w;
        }
#pragma unroll
        for (int j = 0; j < F::kMmasPerVec; ++j)
#pragma unroll
          for (int rt = 0; rt < kRT; ++rt)
            mma_bf16_16x8x16(acc[rt][nt], a[rt][0][2 * j], a[rt][1][2 * j], a[rt][0][2 * j + 1], a[rt][1][2 * j + 1],
                             b[2 * j], b[2 * j + 1]);
      }
    }
  };
  // Two register buffers: the next chunk's loads are in flight while this one is multiplied.
  uint4 buf0[kU][kRT][2], buf1[kU][kRT][2];
  load_chunk(buf0, s_begin);
  for (int s0 = s_begin; s0 < s_end; s0 += 2 * kU) {
    load_chunk(buf1, s0 + kU);
    compute_chunk(buf0, s0);
    if (s0 + kU >= s_end) break;
    load_chunk(buf0, s0 + 2 * kU);
    compute_chunk(buf1, s0 + kU);
  }

  if (gridDim.y > 1) {  // split K: park the partial sums; the last CTA of this row block adds them up
    constexpr int kElems = kRT * kMT * 4;
    float* part = p.partials + static_cast<int64_t>(blockIdx.y * gridDim.x + blockIdx.x) * kElems * kThreads + threadIdx.x;
#pragma unroll
    for (int rt = 0; rt < kRT; ++rt)
#pragma unroll
      for (int nt = 0; nt < kMT; ++nt)
#pragma unroll
        for (int c = 0; c < 4; ++c)
          if (frag_m(nt, c, t) < p.m) part[((rt * kMT + nt) * 4 + c) * kThreads] = acc[rt][nt][c];
    __threadfence();
    __syncthreads();
    __shared__ int is_last;
    if (threadIdx.x == 0) is_last = atomicAdd(p.counters + blockIdx.x, 1) == static_cast<int>(gridDim.y) - 1;
    __syncthreads();
    if (!is_last) return;
    __threadfence();
#pragma unroll
    for (int rt = 0; rt < kRT; ++rt)
#pragma unroll
      for (int nt = 0; nt < kMT; ++nt)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          if (frag_m(nt, c, t) >= p.m) continue;
          float s = 0.f;
          for (int sk = 0; sk < static_cast<int>(gridDim.y); ++sk)
            s += __ldcg(p.partials + (static_cast<int64_t>(sk * gridDim.x + blockIdx.x) * kElems + (rt * kMT + nt) * 4 + c) * kThreads +
                        threadIdx.x);
          acc[rt][nt][c] = s;
        }
    if (threadIdx.x == 0) p.counters[blockIdx.x] = 0;  // ready for the next call (or graph replay)
  }

  Y* y = static_cast<Y*>(p.y);
  const Y* bias = static_cast<const Y*>(p.bias);
#pragma unroll
  for (int rt = 0; rt < kRT; ++rt)
#pragma unroll
    for (int nt = 0; nt < kMT; ++nt)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int n = frag_n(row_base, rt, c, g), m = frag_m(nt, c, t);
        if (n >= p.n || m >= p.m) continue;
        float v = acc[rt][nt][c];
        if (p.w_scale) v *= p.w_scale[p.scale_per_tensor ? 0 : n];
        if (bias) v += load_bias(bias + n);
        store_y(y + m * p.ldy + n, v);
      }
}

using Launch = void (*)(const SkinnyParams&, dim3, cudaStream_t);

template <bool kFp8, int kMT, int kRT, int kU, int kMinBlocks, typename Y>
void launch(const SkinnyParams& p, dim3 grid, cudaStream_t stream) {
  skinny_gemm_kernel<kFp8, kMT, kRT, kU, kMinBlocks, Y><<<grid, kThreads, 0, stream>>>(p);
}

struct Variant {
  SkinnyGemmVariant v;
  int row_tiles, unroll, ctas_per_sm;  // kRT, kU, kMinBlocks (resident CTAs per SM)
  Launch fn;
};

// One line per shipped kernel: {w, y, max m}, row tiles per warp, vectors per row and chunk (two
// chunks in flight), resident CTAs per SM.
// fp8 at m = 64 takes two row tiles per warp so that each x fragment feeds two mmas (L1 traffic).
const Variant kVariants[] = {
    {{DType::kBF16, DType::kBF16, 8}, 1, 4, 2, &launch<false, 1, 1, 4, 2, __nv_bfloat16>},
    {{DType::kBF16, DType::kBF16, 16}, 1, 3, 2, &launch<false, 2, 1, 3, 2, __nv_bfloat16>},
    {{DType::kBF16, DType::kBF16, 32}, 1, 2, 2, &launch<false, 4, 1, 2, 2, __nv_bfloat16>},
    {{DType::kBF16, DType::kBF16, 64}, 1, 1, 2, &launch<false, 8, 1, 1, 2, __nv_bfloat16>},
    {{DType::kBF16, DType::kF32, 8}, 1, 4, 2, &launch<false, 1, 1, 4, 2, float>},
    {{DType::kBF16, DType::kF32, 16}, 1, 3, 2, &launch<false, 2, 1, 3, 2, float>},
    {{DType::kBF16, DType::kF32, 32}, 1, 2, 2, &launch<false, 4, 1, 2, 2, float>},
    {{DType::kBF16, DType::kF32, 64}, 1, 1, 2, &launch<false, 8, 1, 1, 2, float>},
    {{DType::kFp8E4M3, DType::kBF16, 8}, 1, 4, 2, &launch<true, 1, 1, 4, 2, __nv_bfloat16>},
    {{DType::kFp8E4M3, DType::kBF16, 16}, 1, 4, 2, &launch<true, 2, 1, 4, 2, __nv_bfloat16>},
    {{DType::kFp8E4M3, DType::kBF16, 32}, 1, 1, 2, &launch<true, 4, 1, 1, 2, __nv_bfloat16>},
    {{DType::kFp8E4M3, DType::kBF16, 64}, 2, 1, 1, &launch<true, 8, 2, 1, 1, __nv_bfloat16>},
    {{DType::kFp8E4M3, DType::kF32, 8}, 1, 4, 2, &launch<true, 1, 1, 4, 2, float>},
    {{DType::kFp8E4M3, DType::kF32, 16}, 1, 4, 2, &launch<true, 2, 1, 4, 2, float>},
    {{DType::kFp8E4M3, DType::kF32, 32}, 1, 1, 2, &launch<true, 4, 1, 1, 2, float>},
    {{DType::kFp8E4M3, DType::kF32, 64}, 2, 1, 1, &launch<true, 8, 2, 1, 1, float>},
};

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

std::span<const SkinnyGemmVariant> skinny_gemm_variants() {
  static const SkinnyGemmVariant table[] = {
      kVariants[0].v,  kVariants[1].v,  kVariants[2].v,  kVariants[3].v,  kVariants[4].v,  kVariants[5].v,
      kVariants[6].v,  kVariants[7].v,  kVariants[8].v,  kVariants[9].v,  kVariants[10].v, kVariants[11].v,
      kVariants[12].v, kVariants[13].v, kVariants[14].v, kVariants[15].v,
  };
  return table;
}

Status skinny_gemm_check(const LinearArgs& a) {
  const bool fp8 = a.w.dtype == DType::kFp8E4M3;
  if (a.x.dtype != DType::kBF16 || (a.w.dtype != DType::kBF16 && !fp8) ||
      (a.y.dtype != DType::kBF16 && a.y.dtype != DType::kF32))
    return unimplemented("skinny_gemm: want x bf16, w bf16 | fp8_e4m3, y bf16 | f32");
  if (a.x.ndim != 2 || a.w.ndim != 2 || a.y.ndim != 2) return invalid_argument("skinny_gemm: 2-D tensors only");
  const int64_t m = a.x.shape[0], k = a.x.shape[1], n = a.w.shape[0];
  if (m > kSkinnyGemmMaxM) return unimplemented("skinny_gemm: m = " + std::to_string(m) + " > 64");
  if (k % (fp8 ? 16 : 8) != 0) return unimplemented("skinny_gemm: k = " + std::to_string(k) + " not a multiple of 16 bytes");
  const int64_t es = fp8 ? 1 : 2;
  if (!aligned16(a.w.data) || !aligned16(a.x.data) || (a.w.strides[0] * es) % 16 != 0 || (a.x.strides[0] * 2) % 16 != 0)
    return unimplemented("skinny_gemm: rows of x and w must start on 16-byte boundaries");
  if (n >= (1ll << 31) || k >= (1ll << 31) || a.y.strides[0] * m >= (1ll << 31) || a.x.strides[0] * m >= (1ll << 31))
    return unimplemented("skinny_gemm: sizes past int32");
  if (fp8 && (a.w_scale.empty() || a.w_scale.dtype != DType::kF32 || a.w_scale.device != Device::kCuda ||
              (a.w_scale.numel() != n && a.w_scale.numel() != 1)))
    return invalid_argument("skinny_gemm: fp8 weights need w_scale [n] or [1] f32 on the device");
  return ok_status();
}

Status skinny_gemm_cuda(const LinearArgs& a, const SkinnyGemmWorkspace& ws, CUstream_st* stream, int split_k) {
  KILN_RETURN_IF_ERROR(skinny_gemm_check(a));
  const int64_t m = a.x.shape[0], k = a.x.shape[1], n = a.w.shape[0];
  if (m == 0 || n == 0) return ok_status();
  const bool fp8 = a.w.dtype == DType::kFp8E4M3;
  const Variant* var = nullptr;
  for (const Variant& v : kVariants)
    if (v.v.w == a.w.dtype && v.v.y == a.y.dtype && m <= v.v.max_m && (!var || v.v.max_m < var->v.max_m)) var = &v;
  if (!var) return unimplemented("skinny_gemm: no variant");
  const int64_t es = fp8 ? 1 : 2;
  const int64_t step_k = fp8 ? 64 : 32;
  const int64_t num_steps = (k + step_k - 1) / step_k;
  const int64_t row_ctas = (n + kWarps * var->row_tiles * 16 - 1) / (kWarps * var->row_tiles * 16);
  const int64_t partial_per_split = row_ctas * kThreads * var->row_tiles * (var->v.max_m / 8) * 4;
  int64_t splits = split_k;
  if (splits <= 0) {
    // One wave that fills the resident CTA slots (ctas_per_sm per SM), each CTA streaming a long
    // k range: no tail wave, and few partial sums.
    const int64_t slots = static_cast<int64_t>(var->ctas_per_sm) * ws.num_sms;
    splits = std::max<int64_t>(1, slots / row_ctas);
    splits = std::min<int64_t>(splits, std::max<int64_t>(1, num_steps / (kMinChunksPerSplit * var->unroll)));
    const double traffic_cap = kMaxPartialTraffic * static_cast<double>(k * es) / (4.0 * static_cast<double>(m));
    splits = std::min<int64_t>(splits, std::max<int64_t>(1, static_cast<int64_t>(traffic_cap)));
  }
  splits = std::clamp<int64_t>(splits, 1, std::min<int64_t>(num_steps, 65535));
  if (splits > 1 && (row_ctas > ws.num_counters || !ws.partials))
    splits = 1;
  if (splits > 1) splits = std::min<int64_t>(splits, ws.partial_floats / partial_per_split);
  splits = std::max<int64_t>(splits, 1);
  const int64_t steps_per_split = (num_steps + splits - 1) / splits;
  splits = (num_steps + steps_per_split - 1) / steps_per_split;  // no empty splits

  SkinnyParams p{};
  p.w = static_cast<const uint8_t*>(a.w.data);
  p.x = static_cast<const __nv_bfloat16*>(a.x.data);
  p.w_scale = fp8 ? a.w_scale.ptr<float>() : nullptr;
  p.bias = a.bias.empty() ? nullptr : a.bias.data;
  p.y = a.y.data;
  p.partials = ws.partials;
  p.counters = ws.counters;
  p.m = static_cast<int>(m);
  p.n = static_cast<int>(n);
  p.k = static_cast<int>(k);
  p.ldw_bytes = a.w.strides[0] * es;
  p.ldx = a.x.strides[0];
  p.ldy = a.y.strides[0];
  p.scale_per_tensor = fp8 && a.w_scale.numel() == 1;
  p.steps_per_split = static_cast<int>(steps_per_split);
  if (row_ctas > 0x7fffffff) return unimplemented("skinny_gemm: n too large");
  var->fn(p, dim3(static_cast<unsigned>(row_ctas), static_cast<unsigned>(splits)), stream);
  KILN_CUDA_CHECK_LAUNCH();
  return ok_status();
}

}  // namespace kiln
