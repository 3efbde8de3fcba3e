// ModelConfig: the architecture hyper-parameters kiln needs, read from a Hugging Face config.json
// or from GGUF metadata. One struct for every decoder kiln runs (Llama 1/2/3, Mistral, Qwen2,
// Mixtral); architecture differences are flags here, not subclasses.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace kiln {

enum class Arch { kLlama, kMistral, kQwen2, kMixtral };
inline const char* arch_name(Arch a) {
  switch (a) {
    case Arch::kLlama: return "llama";
    case Arch::kMistral: return "mistral";
    case Arch::kQwen2: return "qwen2";
    case Arch::kMixtral: return "mixtral";
  }
  return "?";
}

// RoPE frequency scaling (Hugging Face "rope_scaling").
struct RopeScaling {
  enum class Type { kNone, kLinear, kLlama3 } type = Type::kNone;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;                 // llama3
  float high_freq_factor = 4.0f;                // llama3
  int64_t original_max_position_embeddings = 8192;  // llama3
};

struct ModelConfig {
  Arch arch = Arch::kLlama;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;  // dense MLP, or each expert's MLP for Mixtral
  int64_t num_layers = 0;
  int64_t num_q_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;  // hidden_size / num_q_heads unless the config says otherwise
  int64_t max_position_embeddings = 2048;
  float rms_norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v projections carry a bias (Qwen2)
  int64_t sliding_window = 0;   // 0 = none (Mistral v0.1 uses 4096; see llama.cc)
  // MoE (Mixtral)
  int64_t num_experts = 0;          // 0 = dense
  int64_t num_experts_per_tok = 0;  // top-k
  bool norm_topk_prob = true;       // Mixtral renormalizes the top-k router weights
  // Tokens
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;
};

}  // namespace kiln
