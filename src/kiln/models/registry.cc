// Model registry: which implementation runs which architecture.
#include "kiln/models/llama.h"
#include "kiln/models/llama_cuda.h"

namespace kiln {

Result<std::unique_ptr<Model>> create_model(LoadedModel&& loaded, const ModelOptions& options) {
  const ModelConfig& c = loaded.config;
  if (options.moe_top_k < 0)
    return invalid_argument("--moe-top-k " + std::to_string(options.moe_top_k) + " must be >= 0 (0 = the model's)");
  if (c.num_experts > 0 && options.moe_top_k > c.num_experts)
    return invalid_argument("--moe-top-k " + std::to_string(options.moe_top_k) + " exceeds the model's " +
                            std::to_string(c.num_experts) + " experts");
  if (options.device == Device::kCuda) return create_cuda_model(std::move(loaded), options);
  if (options.dummy_weights) return unimplemented("--load-format dummy is implemented for --device cuda only");
  switch (loaded.config.arch) {
    case Arch::kLlama:
    case Arch::kMistral:
    case Arch::kQwen2:
    case Arch::kMixtral: {
      if (loaded.config.arch == Arch::kMixtral && loaded.config.num_experts <= 0)
        return invalid_argument(loaded.path + ": mixtral config without num_local_experts");
      KILN_ASSIGN_OR_RETURN(DecoderWeights w, build_decoder_weights(loaded, options));
      // The CPU computes with fp8 weights dequantized to the load dtype (same values as the GPU's).
      // fp8 weights from a checkpoint count as fp8 layers too (fp8_activations rounds their inputs).
      ModelOptions o = options;
      o.fp8_weights = o.fp8_weights || has_fp8_weights(w);
      if (has_fp8_weights(w)) KILN_RETURN_IF_ERROR(dequantize_fp8_weights(w, loaded.dtype));
      return std::unique_ptr<Model>(new LlamaModel(loaded.config, std::move(w), o));
    }
  }
  return unimplemented(loaded.path + ": architecture not supported (supported: llama, mistral, qwen2, mixtral)");
}

}  // namespace kiln
