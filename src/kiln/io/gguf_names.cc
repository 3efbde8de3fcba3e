// The name table follows llama.cpp's gguf-py/gguf/tensor_mapping.py for LLM_ARCH_LLAMA/QWEN2.
#include "kiln/io/gguf_names.h"

#include <cctype>

namespace kiln {
namespace {

struct LayerName {
  const char* gguf;  // after "blk.N.", before ".weight"/".bias"
  const char* hf;    // after "model.layers.N."
  QkProj qk;
};

constexpr LayerName kLayerNames[] = {
    {"attn_norm", "input_layernorm", QkProj::kNone},
    {"attn_q", "self_attn.q_proj", QkProj::kQ},
    {"attn_k", "self_attn.k_proj", QkProj::kK},
    {"attn_v", "self_attn.v_proj", QkProj::kNone},
    {"attn_output", "self_attn.o_proj", QkProj::kNone},
    {"ffn_norm", "post_attention_layernorm", QkProj::kNone},
    {"ffn_gate", "mlp.gate_proj", QkProj::kNone},
    {"ffn_up", "mlp.up_proj", QkProj::kNone},
    {"ffn_down", "mlp.down_proj", QkProj::kNone},
    {"ffn_gate_inp", "block_sparse_moe.gate", QkProj::kNone},
};

// Mixtral experts: HF w1 = gate, w2 = down, w3 = up.
struct ExpertName {
  const char* gguf;  // per-expert "ffn_gate" (+ ".E"), stacked "ffn_gate_exps"
  const char* w;
};
constexpr ExpertName kExpertNames[] = {{"ffn_gate", "w1"}, {"ffn_down", "w2"}, {"ffn_up", "w3"}};

bool all_digits(const std::string& s) {
  if (s.empty()) return false;
  for (char ch : s) {
    if (!std::isdigit(static_cast<unsigned char>(ch))) return false;
  }
  return true;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// rest is "attn_q", "ffn_gate_exps" or "ffn_gate.3"; suffix is "weight" or "bias".
std::optional<GgufTensorName> layer_tensor(const std::string& layer, const std::string& rest,
                                           const std::string& suffix) {
  const std::string prefix = "model.layers." + layer + ".";
  for (const auto& n : kLayerNames) {
    if (rest == n.gguf) return GgufTensorName{prefix + n.hf + "." + suffix, false, n.qk};
  }
  for (const auto& e : kExpertNames) {
    const std::string base = e.gguf;
    const std::string tail = std::string(e.w) + "." + suffix;
    if (rest == base + "_exps") {
      return GgufTensorName{prefix + "block_sparse_moe.experts.{E}." + tail, true, QkProj::kNone};
    }
    if (rest.compare(0, base.size() + 1, base + ".") == 0 && all_digits(rest.substr(base.size() + 1))) {
      return GgufTensorName{prefix + "block_sparse_moe.experts." + rest.substr(base.size() + 1) + "." + tail, false,
                            QkProj::kNone};
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<GgufTensorName> hf_name_from_gguf(const std::string& name) {
  if (name == "token_embd.weight") return GgufTensorName{"model.embed_tokens.weight"};
  if (name == "output_norm.weight") return GgufTensorName{"model.norm.weight"};
  if (name == "output.weight") return GgufTensorName{"lm_head.weight"};
  if (name.compare(0, 4, "blk.") != 0) return std::nullopt;
  const size_t dot = name.find('.', 4);
  if (dot == std::string::npos) return std::nullopt;
  const std::string layer = name.substr(4, dot - 4);
  if (!all_digits(layer)) return std::nullopt;
  std::string rest = name.substr(dot + 1);
  std::string suffix;
  for (const char* s : {"weight", "bias"}) {
    if (ends_with(rest, std::string(".") + s)) {
      suffix = s;
      rest.resize(rest.size() - suffix.size() - 1);
      break;
    }
  }
  if (suffix.empty()) return std::nullopt;
  return layer_tensor(layer, rest, suffix);
}

std::string expert_tensor_name(const std::string& pattern, int64_t expert) {
  const size_t at = pattern.find("{E}");
  if (at == std::string::npos) return pattern;
  return pattern.substr(0, at) + std::to_string(expert) + pattern.substr(at + 3);
}

}  // namespace kiln
