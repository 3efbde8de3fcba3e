// DecoderWeights: a Llama-family checkpoint rearranged for the forward pass: q/k/v fused into
// one [(hq + 2 hkv) * d, hidden] matrix, gate/up fused into [2 * inter, hidden], experts split out.
//
// fp8 layout (what a GPU backend uploads as is). Every linear weight (qkv, o_proj, gate_up, down,
// each expert's gate_up and down) is either in the compute dtype with an empty `*_scale`, or fp8
// e4m3 with a `*_scale` f32 tensor:
//   [n]  per output row:  w_real[r, c] = float(w[r, c]) * scale[r]
//   [1]  per tensor:      w_real[r, c] = float(w[r, c]) * scale[0]
// It is fp8 when ModelOptions::fp8_weights asked for it (quantized here, per HF tensor: per output
// channel, or one scale per q/k/v/o/gate/up/down matrix with fp8_per_tensor) or when the checkpoint
// stores it in fp8 (its weight_scale kept as stored). Fusing q/k/v (gate/up) with different
// per-tensor scales expands them to [n] (each part's rows get its scale); equal ones stay [1].
// Fused parts that mix fp8 and non-fp8 tensors (a checkpoint that left one out) are dequantized
// to the compute dtype. Embeddings, norms, biases, the MoE router and the LM head are always in
// the compute dtype (an fp8 one in a checkpoint is dequantized here).
// k_scale / v_scale: the fp8 KV cache scales of the layer (the checkpoint's self_attn.k_scale /
// v_scale, or ModelOptions::kv_cache_scale); used only with ModelOptions::fp8_kv_cache.
#pragma once
#include <vector>

#include "kiln/core/tensor.h"
#include "kiln/io/model_loader.h"
#include "kiln/models/model.h"

namespace kiln {

struct ExpertWeights {
  HostTensor gate_up;  // [2 * inter, hidden]
  HostTensor down;     // [hidden, inter]
  HostTensor gate_up_scale, down_scale;  // fp8: [n] or [1] f32 (see above); else empty
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
  // fp8 weight scales: [n] or [1] f32 where the matching weight is fp8 e4m3, else empty.
  HostTensor qkv_scale, o_proj_scale, gate_up_scale, down_scale;
  float k_scale = 1.0f, v_scale = 1.0f;  // fp8 KV cache: cache = fp8(x / scale)
};

struct DecoderWeights {
  HostTensor embed;    // [vocab, hidden]
  HostTensor norm;     // [hidden]
  HostTensor lm_head;  // [vocab, hidden] (a copy of embed's view when tied: see lm_head_view)
  bool tied = false;
  std::vector<LayerWeights> layers;
  const Tensor& lm_head_view() const { return tied ? embed.tensor : lm_head.tensor; }
};

// Checks every tensor the config needs (name and shape) and builds the fused layout, with fp8
// weights as described above. Tensors left in `loaded` afterwards were not needed.
Result<DecoderWeights> build_decoder_weights(LoadedModel& loaded, const ModelOptions& options = {});

// True when some linear weight is fp8.
bool has_fp8_weights(const DecoderWeights& w);
// Replaces every fp8 linear weight by float(w) * scale in `dtype` (f32, f16, bf16) and clears
// its scale: what the CPU model computes with (the same numbers as the GPU's fp8 GEMM weights).
Status dequantize_fp8_weights(DecoderWeights& w, DType dtype);

}  // namespace kiln
