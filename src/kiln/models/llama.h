// LlamaModel: the pre-norm decoder shared by Llama 1/2/3, Mistral (sliding window), Qwen2
// (q/k/v bias) and Mixtral (MoE feed-forward, see mixtral.h). CPU backend, fp32 activations.
// fp8 weights are dequantized to the compute dtype when the model is built (create_model); an
// fp8 KV cache (ModelOptions::fp8_kv_cache) stores fp8(x / scale) per layer.
#pragma once
#include <functional>
#include <memory>

#include "kiln/models/decoder_weights.h"
#include "kiln/models/model.h"

namespace kiln {

// The inputs of a layer's linear weights, as LlamaModel::set_linear_input_observer sees them
// (the expert ones: the rows routed to that expert, with its index; -1 for the others).
enum class LinearInput { kQkv, kOProj, kGateUp, kDown, kExpertGateUp, kExpertDown };
using LinearInputObserver = std::function<Status(int64_t layer, LinearInput which, int64_t expert, const Tensor& x)>;

class LlamaModel : public Model {
 public:
  LlamaModel(ModelConfig config, DecoderWeights weights, const ModelOptions& options);
  const ModelConfig& config() const override { return config_; }
  Status forward(const ForwardBatch& batch, const KvCacheView& kv, Tensor logits) override;
  // f32 caches, or fp8 e4m3 with ModelOptions::fp8_kv_cache (scales: LayerWeights::k_scale / v_scale).
  Result<KvCacheView> allocate_kv_cache(int64_t num_blocks, int64_t block_size) override;
  int64_t kv_block_bytes(int64_t block_size) const override;  // max_kv_blocks: Model's (a 4 GiB budget)
  DType kv_cache_dtype() const { return options_.fp8_kv_cache ? DType::kFp8E4M3 : DType::kF32; }
  // Calibration (GPTQ): f gets every linear layer's input x [tokens, k] f32 during forward (an
  // expert's: the tokens routed to it), before any fp8 rounding. An error from f fails the forward.
  void set_linear_input_observer(LinearInputObserver f) { observer_ = std::move(f); }

 private:
  Status attention_block(const LayerWeights& lw, int64_t layer, const ForwardBatch& batch,
                         const KvCacheView& kv, const Tensor& h, Tensor out);
  Status ffn_block(const LayerWeights& lw, int64_t layer, const Tensor& h, Tensor out);
  Status observe(int64_t layer, LinearInput which, const Tensor& x) const { return observer_ ? observer_(layer, which, -1, x) : ok_status(); }
  bool fp8_act() const { return options_.fp8_weights && options_.fp8_activations; }

  ModelConfig config_;
  DecoderWeights w_;
  ModelOptions options_;
  std::vector<float> inv_freq_;  // [head_dim / 2]
  LinearInputObserver observer_;
};

}  // namespace kiln
