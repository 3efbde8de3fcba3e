// silu_mul_fp8_cuda (SwiGLU straight to per-row fp8) against the copy ceiling: every variant row
// that takes the shape and the dispatch's pick (the kernel before b4be96b, measured against these
// in one call: docs/perf.md). Bytes: gate_up read (4 * inter per row), q and scale written.
// Shapes: Mixtral-8x7B fp8 prefill (2 x 1024 tokens x top-2 = 4096 rows of inter 14336; 2048),
// decode (2 and 32 rows, latency-bound, from L2), Llama-2-7B (11008).
//   silu_mul_fp8_bench            (KILN_GPU_CEILINGS=ceilings.json for measured ceilings)
#include <cuda_runtime.h>

#include <cstdio>
#include <string>

#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/cuda/common/gpu_bench.h"
#include "kiln/kernels/silu_mul_fp8.h"

namespace kiln {
namespace {

using bench::check;

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
  const auto variants = silu_mul_fp8_cuda_variants();
  for (size_t v = 0; v < variants.size(); ++v) {
    const SiluMulFp8CudaVariant& info = variants[v];
    if (info.dequant || inter > info.max_inter || (info.max_rows && rows > info.max_rows)) continue;  // dequant: moe_grouped_bench
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
