// LlamaModel: the pre-norm decoder shared by Llama 1/2/3, Mistral (sliding window), Qwen2
// (q/k/v bias) and Mixtral (MoE feed-forward, see mixtral.h). CPU backend, fp32 activations.
#pragma once
#include <memory>

#include "kiln/models/decoder_weights.h"
#include "kiln/models/model.h"

namespace kiln {

class LlamaModel : public Model {
 public:
  LlamaModel(ModelConfig config, DecoderWeights weights, const ModelOptions& options);
  const ModelConfig& config() const override { return config_; }
  Status forward(const ForwardBatch& batch, const KvCacheView& kv, Tensor logits) override;

 private:
  Status attention_block(const LayerWeights& lw, int64_t layer, const ForwardBatch& batch,
                         const KvCacheView& kv, const Tensor& h, Tensor out);
  Status ffn_block(const LayerWeights& lw, const Tensor& h, Tensor out);

  ModelConfig config_;
  DecoderWeights w_;
  ModelOptions options_;
  std::vector<float> inv_freq_;  // [head_dim / 2]
};

}  // namespace kiln
