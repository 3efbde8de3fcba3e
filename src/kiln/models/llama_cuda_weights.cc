// Uploading a checkpoint to the GPU as bf16, or making random weights there.
#ifdef KILN_WITH_CUDA
#include "kiln/models/llama_cuda_weights.h"

#include <cmath>

#include "kiln/core/log.h"
#include "kiln/kernels/random_fill.h"

namespace kiln {
namespace {

Result<DeviceTensor> upload(const HostTensor& h) {
  if (h.tensor.empty()) return DeviceTensor{};
  return to_device(h.tensor, DType::kBF16);
}

Result<DeviceTensor> random_tensor(std::initializer_list<int64_t> shape, uint64_t seed, float scale, float offset) {
  KILN_ASSIGN_OR_RETURN(DeviceTensor t, DeviceTensor::empty(DType::kBF16, shape));
  KILN_RETURN_IF_ERROR(random_fill_cuda({t.tensor, seed, scale, offset}, nullptr));
  return t;
}

}  // namespace

Result<CudaDecoderWeights> upload_decoder_weights(const DecoderWeights& host) {
  CudaDecoderWeights w;
  KILN_ASSIGN_OR_RETURN(w.embed, upload(host.embed));
  KILN_ASSIGN_OR_RETURN(w.norm, upload(host.norm));
  if (!host.tied) {
    KILN_ASSIGN_OR_RETURN(w.lm_head, upload(host.lm_head));
  }
  for (const LayerWeights& hl : host.layers) {
    CudaLayerWeights l;
    KILN_ASSIGN_OR_RETURN(l.attn_norm, upload(hl.attn_norm));
    KILN_ASSIGN_OR_RETURN(l.ffn_norm, upload(hl.ffn_norm));
    KILN_ASSIGN_OR_RETURN(l.qkv, upload(hl.qkv));
    KILN_ASSIGN_OR_RETURN(l.qkv_bias, upload(hl.qkv_bias));
    KILN_ASSIGN_OR_RETURN(l.o_proj, upload(hl.o_proj));
    KILN_ASSIGN_OR_RETURN(l.gate_up, upload(hl.gate_up));
    KILN_ASSIGN_OR_RETURN(l.down, upload(hl.down));
    KILN_ASSIGN_OR_RETURN(l.router, upload(hl.router));
    for (const ExpertWeights& he : hl.experts) {
      CudaExpertWeights e;
      KILN_ASSIGN_OR_RETURN(e.gate_up, upload(he.gate_up));
      KILN_ASSIGN_OR_RETURN(e.down, upload(he.down));
      l.expert_gate_up.push_back(e.gate_up.tensor);
      l.expert_down.push_back(e.down.tensor);
      l.experts.push_back(std::move(e));
    }
    w.layers.push_back(std::move(l));
  }
  return w;
}

Result<CudaDecoderWeights> dummy_decoder_weights(const ModelConfig& c, uint64_t seed) {
  const int64_t h = c.hidden_size, d = c.head_dim, q = c.num_q_heads * d, kv = c.num_kv_heads * d;
  const int64_t inter = c.intermediate_size;
  const float sh = 1.0f / std::sqrt(static_cast<float>(h)), si = 1.0f / std::sqrt(static_cast<float>(inter));
  CudaDecoderWeights w;
  KILN_ASSIGN_OR_RETURN(w.embed, random_tensor({c.vocab_size, h}, seed++, 1.0f, 0.f));
  KILN_ASSIGN_OR_RETURN(w.norm, random_tensor({h}, seed++, 0.f, 1.f));
  if (!c.tie_word_embeddings) {
    KILN_ASSIGN_OR_RETURN(w.lm_head, random_tensor({c.vocab_size, h}, seed++, sh, 0.f));
  }
  for (int64_t i = 0; i < c.num_layers; ++i) {
    if (i % 8 == 0) log_info("dummy weights: layer ", i, " / ", c.num_layers);
    CudaLayerWeights l;
    KILN_ASSIGN_OR_RETURN(l.attn_norm, random_tensor({h}, seed++, 0.f, 1.f));
    KILN_ASSIGN_OR_RETURN(l.ffn_norm, random_tensor({h}, seed++, 0.f, 1.f));
    KILN_ASSIGN_OR_RETURN(l.qkv, random_tensor({q + 2 * kv, h}, seed++, sh, 0.f));
    if (c.attention_bias) {
      KILN_ASSIGN_OR_RETURN(l.qkv_bias, random_tensor({q + 2 * kv}, seed++, 0.1f, 0.f));
    }
    KILN_ASSIGN_OR_RETURN(l.o_proj, random_tensor({h, q}, seed++, 1.0f / std::sqrt(static_cast<float>(q)), 0.f));
    if (c.num_experts == 0) {
      KILN_ASSIGN_OR_RETURN(l.gate_up, random_tensor({2 * inter, h}, seed++, sh, 0.f));
      KILN_ASSIGN_OR_RETURN(l.down, random_tensor({h, inter}, seed++, si, 0.f));
    } else {
      KILN_ASSIGN_OR_RETURN(l.router, random_tensor({c.num_experts, h}, seed++, sh, 0.f));
      for (int64_t e = 0; e < c.num_experts; ++e) {
        CudaExpertWeights ew;
        KILN_ASSIGN_OR_RETURN(ew.gate_up, random_tensor({2 * inter, h}, seed++, sh, 0.f));
        KILN_ASSIGN_OR_RETURN(ew.down, random_tensor({h, inter}, seed++, si, 0.f));
        l.expert_gate_up.push_back(ew.gate_up.tensor);
        l.expert_down.push_back(ew.down.tensor);
        l.experts.push_back(std::move(ew));
      }
    }
    w.layers.push_back(std::move(l));
  }
  KILN_RETURN_IF_ERROR(cuda_synchronize());
  return w;
}

}  // namespace kiln
#endif
