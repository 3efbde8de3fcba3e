// Device-side weights of a Llama-family decoder (same fused layout as DecoderWeights).
#pragma once
#ifdef KILN_WITH_CUDA
#include <vector>

#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/models/decoder_weights.h"
#include "kiln/models/model.h"

namespace kiln {

// Linear weights are bf16, or fp8 e4m3 with a `*_scale` f32 tensor ([n] per output row or [1]),
// exactly as DecoderWeights lays them out (decoder_weights.h); Gemm::run takes either.
struct CudaExpertWeights {
  DeviceTensor gate_up;  // [2 * inter, hidden] bf16 | fp8
  DeviceTensor down;     // [hidden, inter] bf16 | fp8
  DeviceTensor gate_up_scale, down_scale;  // fp8 only
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
  std::vector<Tensor> expert_gate_up_scale, expert_down_scale;  // fp8 experts only
  // The decode-regime expert GEMM's tables (moe_decode_gemm_cuda): [num_experts] int64 device
  // pointers to each expert's weights and (fp8 per channel) scales; empty for dense layers.
  DeviceTensor gate_up_ptrs, down_ptrs, gate_up_scale_ptrs, down_scale_ptrs;
  DeviceTensor qkv_scale, o_proj_scale, gate_up_scale, down_scale;  // fp8 only
  float k_scale = 1.0f, v_scale = 1.0f;  // fp8 KV cache scales of this layer
};

struct CudaDecoderWeights {
  DeviceTensor embed, norm, lm_head;  // lm_head empty when tied
  std::vector<CudaLayerWeights> layers;
  const Tensor& lm_head_view() const { return lm_head.tensor.empty() ? embed.tensor : lm_head.tensor; }
};

Result<CudaDecoderWeights> upload_decoder_weights(const DecoderWeights& host);
// Refreshes l.expert_* (the grouped GEMM's per-expert views) and the device pointer tables from
// l.experts.
Status link_expert_views(CudaLayerWeights& l);
// Random weights (uniform, scaled by 1/sqrt(fan_in); norms 1) for --load-format dummy; with
// options.fp8_weights each linear weight is made in bf16 and quantized on the device (one matrix
// at a time, so a model that fits only in fp8 never exists in bf16).
Result<CudaDecoderWeights> dummy_decoder_weights(const ModelConfig& c, uint64_t seed, const ModelOptions& options);

}  // namespace kiln
#endif
