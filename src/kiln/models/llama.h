// LlamaModel: the pre-norm decoder shared by Llama 1/2/3, Mistral (sliding window), Qwen2
// (q/k/v bias) and Mixtral (MoE feed-forward, see mixtral.h). CPU backend, fp32 activations.
// fp8 weights are dequantized to the compute dtype when the model is built (create_model); an
// fp8 KV cache (ModelOptions::fp8_kv_cache) stores fp8(x / scale) per layer.
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
  // f32 caches, or fp8 e4m3 with ModelOptions::fp8_kv_cache (scales: LayerWeights::k_scale / v_scale).
  Result<KvCacheView> allocate_kv_cache(int64_t num_blocks, int64_t block_size) override;
  int64_t max_kv_blocks(int64_t block_size, double memory_fraction) const override;
  DType kv_cache_dtype() const { return options_.fp8_kv_cache ? DType::kFp8E4M3 : DType::kF32; }

 private:
  Status attention_block(const LayerWeights& lw, int64_t layer, const ForwardBatch& batch,
                         const KvCacheView& kv, const Tensor& h, Tensor out);
  Status ffn_block(const LayerWeights& lw, const Tensor& h, Tensor out);
  bool fp8_act() const { return options_.fp8_weights && options_.fp8_activations; }

  ModelConfig config_;
  DecoderWeights w_;
  ModelOptions options_;
  std::vector<float> inv_freq_;  // [head_dim / 2]
};

}  // namespace kiln
