// MoE grouped expert GEMM, first version: a loop of cuBLASLt GEMMs (Gemm::run), one per expert
// over its contiguous rows of the permuted activations. Needs the expert offsets on the host.
// An fp8 x (quantized per row by the caller, e.g. silu_mul_fp8_cuda) goes to Gemm::run_quantized.
#include <string>
#include <vector>

#include "kiln/kernels/cuda/common/cuda_check.h"
#include "kiln/kernels/gemm_cuda.h"
#include "kiln/kernels/moe_cuda.h"

namespace kiln {

Result<std::vector<int32_t>> moe_offsets_to_host(const Tensor& offsets, CUstream_st* stream) {
  if (offsets.device != Device::kCuda || offsets.dtype != DType::kInt32 || !offsets.is_contiguous())
    return invalid_argument("moe_offsets_to_host: want a contiguous int32 device tensor, got " + offsets.shape_string());
  std::vector<int32_t> host(static_cast<size_t>(offsets.numel()));
  KILN_CUDA_CHECK(cudaMemcpyAsync(host.data(), offsets.data, host.size() * sizeof(int32_t), cudaMemcpyDeviceToHost, stream));
  KILN_CUDA_CHECK(cudaStreamSynchronize(stream));
  return host;
}

Status moe_grouped_gemm_cuda(Gemm& gemm, const MoeGroupedGemmArgs& a, CUstream_st* stream) {
  const size_t num_experts = a.weights.size();
  if (a.offsets.size() != num_experts + 1)
    return invalid_argument("moe_grouped_gemm_cuda: " + std::to_string(a.offsets.size()) + " offsets for " +
                            std::to_string(num_experts) + " experts (want experts + 1)");
  if (a.x.ndim != 2 || a.y.ndim != 2 || a.x.shape[0] != a.y.shape[0])
    return invalid_argument("moe_grouped_gemm_cuda: x " + a.x.shape_string() + " and y " + a.y.shape_string() +
                            " must be 2-D with the same rows");
  if (!a.weight_scales.empty() && a.weight_scales.size() != num_experts)
    return invalid_argument("moe_grouped_gemm_cuda: " + std::to_string(a.weight_scales.size()) + " weight scales for " +
                            std::to_string(num_experts) + " experts");
  const bool prequantized = a.x.dtype == DType::kFp8E4M3;
  if (prequantized && (a.weight_scales.empty() || a.x_scale.numel() != a.x.shape[0]))
    return invalid_argument("moe_grouped_gemm_cuda: fp8 x needs fp8 weights with scales and x_scale [rows]");
  if (a.offsets[0] != 0 || a.offsets[num_experts] != a.x.shape[0])
    return invalid_argument("moe_grouped_gemm_cuda: offsets do not cover the rows of x");
  for (size_t e = 0; e < num_experts; ++e) {
    const int64_t begin = a.offsets[e], end = a.offsets[e + 1];
    if (end < begin) return invalid_argument("moe_grouped_gemm_cuda: offsets are not sorted");
    if (end == begin) continue;
    const Tensor scale = a.weight_scales.empty() ? Tensor{} : a.weight_scales[e];
    const Status st =
        prequantized
            ? gemm.run_quantized({a.x.slice0(begin, end), a.x_scale.slice0(begin, end), a.weights[e], {}, a.y.slice0(begin, end), scale},
                                 stream)
            : gemm.run({a.x.slice0(begin, end), a.weights[e], {}, a.y.slice0(begin, end), scale}, stream);
    if (!st.ok()) return st.with_context("expert " + std::to_string(e));
  }
  return ok_status();
}

}  // namespace kiln
