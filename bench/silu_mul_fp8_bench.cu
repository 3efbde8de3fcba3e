// silu_mul_fp8_cuda (SwiGLU straight to per-row fp8) against the copy ceiling: every variant row
// that takes the shape, the dispatch's pick, and `before`: a copy of the kernel this one replaced
// (one block per row, IEEE divisions; 256 x 8 for > 128 rows, 1024 x 1|2 for fewer), so one run
// gives the before / after table. Bytes: gate_up read (4 * inter per row), q and scale written.
// Shapes: Mixtral-8x7B fp8 prefill (2 x 1024 tokens x top-2 = 4096 rows of inter 14336; 2048),
// decode (2 and 32 rows, latency-bound, from L2), Llama-2-7B (11008).
//   silu_mul_fp8_bench            (KILN_GPU_CEILINGS=ceilings.json for measured ceilings)
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <string>

#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/cuda/common/gpu_bench.h"
#include "kiln/kernels/cuda/common/pdl.cuh"
#include "kiln/kernels/cuda/quantize/fp8_row.cuh"
#include "kiln/kernels/silu_mul_fp8.h"

namespace kiln {
namespace {

using bench::check;

// ---- before: the previous kernel, verbatim (kernels/cuda/activation/silu_mul_fp8.cu) ----------
namespace before {
using bf16 = __nv_bfloat16;
struct Params {
  const bf16* gate_up;
  uint8_t* q;
  float* scale;
  int64_t gu_stride, inter;
};
__device__ __forceinline__ float silu(float g) { return g / (1.0f + expf(-g)); }
__device__ __forceinline__ uint4 swiglu8(const uint4& g, const uint4& u) {
  const __nv_bfloat162* gh = reinterpret_cast<const __nv_bfloat162*>(&g);
  const __nv_bfloat162* uh = reinterpret_cast<const __nv_bfloat162*>(&u);
  uint4 out;
  __nv_bfloat162* oh = reinterpret_cast<__nv_bfloat162*>(&out);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 gf = __bfloat1622float2(gh[i]), uf = __bfloat1622float2(uh[i]);
    oh[i] = __floats2bfloat162_rn(silu(gf.x) * uf.x, silu(gf.y) * uf.y);
  }
  return out;
}
template <int kThreads, int kVecs>
__global__ void __launch_bounds__(kThreads) kernel(const __grid_constant__ Params p) {
  cuda::pdl_wait();
  cuda::pdl_trigger();
  const int64_t r = blockIdx.x;
  const bf16* gate = p.gate_up + r * p.gu_stride;
  const bf16* up = gate + p.inter;
  uint4 g[kVecs], u[kVecs];
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    const int64_t c = (static_cast<int64_t>(i) * kThreads + threadIdx.x) * 8;
    if (c < p.inter) {
      g[i] = *reinterpret_cast<const uint4*>(gate + c);
      u[i] = *reinterpret_cast<const uint4*>(up + c);
    }
  }
  float m = 0.0f;
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    const int64_t c = (static_cast<int64_t>(i) * kThreads + threadIdx.x) * 8;
    if (c < p.inter) {
      g[i] = swiglu8(g[i], u[i]);
      m = fmaxf(m, cuda::fp8row::abs_max8(g[i]));
    }
  }
  const float s = cuda::fp8row::scale_for(cuda::fp8row::block_amax<kThreads>(m));
  if (threadIdx.x == 0) p.scale[r] = s;
  uint8_t* out = p.q + r * p.inter;
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    const int64_t c = (static_cast<int64_t>(i) * kThreads + threadIdx.x) * 8;
    if (c < p.inter) *reinterpret_cast<uint2*>(out + c) = cuda::fp8row::quantize8(g[i], s);
  }
}
// The previous dispatch for inter <= 16384.
void launch(const SiluMulFp8Args& a, cudaStream_t stream) {
  const int64_t rows = a.q.shape[0], inter = a.q.shape[1];
  const Params p{static_cast<const bf16*>(a.gate_up.data), static_cast<uint8_t*>(a.q.data),
                 static_cast<float*>(a.scale.data), a.gate_up.strides[0], inter};
  auto k = rows <= 128 ? (inter <= 8192 ? &kernel<1024, 1> : &kernel<1024, 2>) : &kernel<256, 8>;
  const int threads = rows <= 128 ? 1024 : 256;
  check(cuda::launch_pdl(k, dim3(static_cast<unsigned>(rows)), dim3(threads), 0, stream, p), "before");
}
}  // namespace before

void bench_shape(const bench::Ceilings& c, cudaStream_t s, int64_t rows, int64_t inter) {
  auto gu = DeviceTensor::empty(DType::kBF16, {rows, 2 * inter});
  auto q = DeviceTensor::empty(DType::kFp8E4M3, {rows, inter});
  auto sc = DeviceTensor::empty(DType::kF32, {rows});
  check(gu.status(), "alloc");
  check(q.status(), "alloc");
  check(sc.status(), "alloc");
  bench::fill_random_bf16(gu->tensor.data, gu->tensor.numel(), 5, 3.0f);
  const SiluMulFp8Args args{gu->tensor, q->tensor, sc->tensor};
  const double bytes = rows * inter * 5.0 + rows * 4.0;
  const std::string shape = bench::shape_str({rows, inter});
  auto row = [&](const std::string& name, auto&& enqueue) {
    const double ms = bench::median_ms([&](int) { enqueue(); }, s, rows <= 128 ? 200 : 20);  // decode: ~4 us calls
    bench::report(name, shape, ms, bytes / ms / 1e6, c.copy_gbps, "GB/s");
  };
  row("silu_mul_fp8 before", [&] { before::launch(args, s); });
  const auto variants = silu_mul_fp8_cuda_variants();
  for (size_t v = 0; v < variants.size(); ++v) {
    const SiluMulFp8CudaVariant& info = variants[v];
    if (inter > info.max_inter || (info.max_rows && rows > info.max_rows)) continue;
    const std::string name = "silu_mul_fp8 " + std::to_string(info.threads) + "x" + std::to_string(info.vecs);
    row(name, [&] { check(silu_mul_fp8_cuda_variant(args, v, s), "silu_mul_fp8_cuda_variant"); });
  }
  row("silu_mul_fp8 dispatch", [&] { check(silu_mul_fp8_cuda(args, s), "silu_mul_fp8_cuda"); });
}

}  // namespace
}  // namespace kiln

int main() {
  using namespace kiln;
  if (!cuda_available()) {
    std::printf("silu_mul_fp8_bench: %s\n", cuda_device_summary().c_str());
    return 0;
  }
  const bench::Ceilings c = bench::read_ceilings();
  std::printf("silu_mul_fp8_bench on %s\nceilings: %s: copy %.0f GB/s\n", cuda_device_summary().c_str(),
              c.source.c_str(), c.copy_gbps);
  cudaStream_t s;
  check(cudaStreamCreate(&s), "cudaStreamCreate");
  bench_shape(c, s, 4096, 14336);
  bench_shape(c, s, 2048, 14336);
  bench_shape(c, s, 4096, 11008);
  bench_shape(c, s, 4096, 8192);
  bench_shape(c, s, 4096, 4096);
  bench_shape(c, s, 4096, 1024);
  bench_shape(c, s, 2, 14336);
  bench_shape(c, s, 32, 14336);
  bench_shape(c, s, 256, 14336);
  check(cudaStreamDestroy(s), "cudaStreamDestroy");
  return 0;
}
