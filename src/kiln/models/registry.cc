// Model registry: which implementation runs which architecture.
#include "kiln/models/llama.h"

namespace kiln {

Result<std::unique_ptr<Model>> create_model(LoadedModel&& loaded, const ModelOptions& options) {
  switch (loaded.config.arch) {
    case Arch::kLlama:
    case Arch::kMistral:
    case Arch::kQwen2:
    case Arch::kMixtral: {
      if (loaded.config.arch == Arch::kMixtral && loaded.config.num_experts <= 0)
        return invalid_argument(loaded.path + ": mixtral config without num_local_experts");
      KILN_ASSIGN_OR_RETURN(DecoderWeights w, build_decoder_weights(loaded));
      return std::unique_ptr<Model>(new LlamaModel(loaded.config, std::move(w), options));
    }
  }
  return unimplemented(loaded.path + ": architecture not supported (supported: llama, mistral, qwen2, mixtral)");
}

}  // namespace kiln
