// DecoderWeights: a Llama-family checkpoint rearranged for the forward pass: q/k/v fused into
// one [(hq + 2 hkv) * d, hidden] matrix, gate/up fused into [2 * inter, hidden], experts split out.
#pragma once
#include <vector>

#include "kiln/core/tensor.h"
#include "kiln/io/model_loader.h"

namespace kiln {

struct ExpertWeights {
  HostTensor gate_up;  // [2 * inter, hidden]
  HostTensor down;     // [hidden, inter]
};

struct LayerWeights {
  HostTensor attn_norm;  // [hidden]
  HostTensor qkv;        // [(hq + 2 hkv) * d, hidden]
  HostTensor qkv_bias;   // [(hq + 2 hkv) * d] or empty
  HostTensor o_proj;     // [hidden, hq * d]
  HostTensor ffn_norm;   // [hidden]
  HostTensor gate_up;    // dense: [2 * inter, hidden]
  HostTensor down;       // dense: [hidden, inter]
  HostTensor router;     // MoE: [num_experts, hidden]
  std::vector<ExpertWeights> experts;
};

struct DecoderWeights {
  HostTensor embed;    // [vocab, hidden]
  HostTensor norm;     // [hidden]
  HostTensor lm_head;  // [vocab, hidden] (a copy of embed's view when tied: see lm_head_view)
  bool tied = false;
  std::vector<LayerWeights> layers;
  const Tensor& lm_head_view() const { return tied ? embed.tensor : lm_head.tensor; }
};

// Checks every tensor the config needs (name and shape) and builds the fused layout.
Result<DecoderWeights> build_decoder_weights(LoadedModel& loaded);

}  // namespace kiln
