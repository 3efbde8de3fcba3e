// GGUF (llama.cpp) tensor names -> Hugging Face names, for the llama family (Llama, Mistral,
// Qwen2, Mixtral): "blk.3.attn_q.weight" -> "model.layers.3.self_attn.q_proj.weight".
#pragma once
#include <cstdint>
#include <optional>
#include <string>

namespace kiln {

enum class QkProj { kNone, kQ, kK };  // which projection, for undoing llama.cpp's RoPE permutation

struct GgufTensorName {
  // The Hugging Face name. For stacked experts (ffn_*_exps, [n_expert, out, in]) it holds the
  // placeholder "{E}" where expert_tensor_name() puts the expert index.
  std::string hf_name;
  bool stacked_experts = false;
  QkProj qk = QkProj::kNone;
};

// nullopt for names kiln does not use (e.g. rope_freqs.weight).
std::optional<GgufTensorName> hf_name_from_gguf(const std::string& gguf_name);

// "model.layers.0.block_sparse_moe.experts.{E}.w1.weight", 5 -> "...experts.5.w1.weight"
std::string expert_tensor_name(const std::string& pattern, int64_t expert);

}  // namespace kiln
