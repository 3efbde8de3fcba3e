// Writing a model as an fp8 Hugging Face checkpoint (`kiln quantize`): every linear weight
// (q/k/v/o_proj, gate/up/down_proj, Mixtral experts' w1/w2/w3) as F8_E4M3 + an F32 weight_scale
// ([n, 1] per output channel, compressed-tensors style; or [1] per tensor, vLLM's "fp8" method),
// everything else (embeddings, norms, biases, router, LM head) as BF16, optional per-layer KV
// cache scales (self_attn.k_scale / v_scale, [1] F32), config.json with quantization_config, and
// the tokenizer (HF files copied; a GGUF model's metadata as a vocab-only tokenizer.gguf).
// kiln, vLLM and transformers read the result; load_model + build_decoder_weights get back the
// same fp8 bytes and scales as ModelOptions::fp8_weights quantizing at load.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/io/model_loader.h"
#include "kiln/models/gptq_fp8.h"

namespace kiln {

struct Fp8CheckpointOptions {
  bool per_tensor = false;
  std::vector<float> k_scales, v_scales;  // [num_layers] each, or empty: no KV cache scales written
  // Weights named here are rounded by GPTQ on these input Hessians (same scales, same layout);
  // the rest by round-to-nearest.
  InputHessians hessians;
};

// True for the HF names kiln stores in fp8 ("model.layers.3.mlp.down_proj.weight", ...).
bool is_fp8_linear_weight(const std::string& name);

// progress(done_bytes, total_bytes) as tensors are converted. out_dir is created; it must not be
// the model's own directory.
Status write_fp8_checkpoint(const LoadedModel& model, const Fp8CheckpointOptions& options, const std::string& out_dir,
                            const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace kiln
