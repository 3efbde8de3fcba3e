// Device-side weights of a Llama-family decoder (same fused layout as DecoderWeights).
#pragma once
#ifdef KILN_WITH_CUDA
#include <vector>

#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/models/decoder_weights.h"

namespace kiln {

struct CudaExpertWeights {
  DeviceTensor gate_up;  // [2 * inter, hidden] bf16
  DeviceTensor down;     // [hidden, inter] bf16
};

struct CudaLayerWeights {
  DeviceTensor attn_norm, ffn_norm;  // [hidden] bf16
  DeviceTensor qkv;                  // [(hq + 2 hkv) * d, hidden] bf16
  DeviceTensor qkv_bias;             // [(hq + 2 hkv) * d] bf16 or empty
  DeviceTensor o_proj;               // [hidden, hq * d]
  DeviceTensor gate_up, down;        // dense MLP
  DeviceTensor router;               // MoE: [num_experts, hidden]
  std::vector<CudaExpertWeights> experts;
  std::vector<Tensor> expert_gate_up, expert_down;  // views for the grouped GEMM
};

struct CudaDecoderWeights {
  DeviceTensor embed, norm, lm_head;  // lm_head empty when tied
  std::vector<CudaLayerWeights> layers;
  const Tensor& lm_head_view() const { return lm_head.tensor.empty() ? embed.tensor : lm_head.tensor; }
};

Result<CudaDecoderWeights> upload_decoder_weights(const DecoderWeights& host);
// Random weights (uniform, scaled by 1/sqrt(fan_in); norms 1) for --load-format dummy.
Result<CudaDecoderWeights> dummy_decoder_weights(const ModelConfig& c, uint64_t seed);

}  // namespace kiln
#endif
