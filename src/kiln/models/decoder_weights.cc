// Gathers Hugging Face tensors into DecoderWeights, checking names and shapes; errors name the
// missing tensor and the checkpoint path.
#include "kiln/models/decoder_weights.h"

#include <cstring>
#include <string>

namespace kiln {
namespace {

class Gatherer {
 public:
  explicit Gatherer(LoadedModel& m) : m_(m) {}

  // Takes tensor `name`, which must have `shape`.
  Result<HostTensor> take(const std::string& name, std::initializer_list<int64_t> shape) {
    auto it = m_.weights.find(name);
    if (it == m_.weights.end()) return not_found(m_.path + ": missing tensor " + name);
    const Tensor& t = it->second.tensor;
    bool same = t.ndim == static_cast<int>(shape.size());
    int i = 0;
    for (int64_t d : shape) same = same && t.shape[static_cast<size_t>(i++)] == d;
    if (!same) return data_loss(m_.path + ": tensor " + name + " has shape " + t.shape_string() + ", want " + dims(shape));
    HostTensor out = std::move(it->second);
    m_.weights.erase(it);
    return out;
  }
  bool has(const std::string& name) const { return m_.weights.count(name) != 0; }

  // Concatenates tensors along dim 0 (all [rows_i, cols]).
  Result<HostTensor> concat(const std::vector<std::pair<std::string, std::vector<int64_t>>>& parts) {
    std::vector<HostTensor> taken;
    int64_t rows = 0;
    for (const auto& [name, shape] : parts) {
      Result<HostTensor> t = shape.size() == 2 ? take(name, {shape[0], shape[1]}) : take(name, {shape[0]});
      if (!t.ok()) return t.status();
      rows += shape[0];
      taken.push_back(std::move(t).value());
    }
    const Tensor& first = taken[0].tensor;
    HostTensor out = first.ndim == 2 ? HostTensor::zeros(first.dtype, {rows, first.shape[1]})
                                     : HostTensor::zeros(first.dtype, {rows});
    char* dst = static_cast<char*>(out.tensor.data);
    for (const auto& t : taken) {
      std::memcpy(dst, t.tensor.data, static_cast<size_t>(t.tensor.nbytes()));
      dst += t.tensor.nbytes();
    }
    return out;
  }

 private:
  static std::string dims(std::initializer_list<int64_t> shape) {
    std::string s = "[";
    for (int64_t d : shape) s += (s.size() > 1 ? ", " : "") + std::to_string(d);
    return s + "]";
  }
  LoadedModel& m_;
};

Status gather_layer(Gatherer& g, const ModelConfig& c, int64_t l, LayerWeights& lw) {
  const std::string p = "model.layers." + std::to_string(l) + ".";
  const int64_t h = c.hidden_size, d = c.head_dim, q = c.num_q_heads * d, kv = c.num_kv_heads * d;
  KILN_ASSIGN_OR_RETURN(lw.attn_norm, g.take(p + "input_layernorm.weight", {h}));
  KILN_ASSIGN_OR_RETURN(lw.ffn_norm, g.take(p + "post_attention_layernorm.weight", {h}));
  const std::string a = p + "self_attn.";
  KILN_ASSIGN_OR_RETURN(lw.qkv, g.concat({{a + "q_proj.weight", {q, h}}, {a + "k_proj.weight", {kv, h}}, {a + "v_proj.weight", {kv, h}}}));
  if (c.attention_bias || g.has(a + "q_proj.bias")) {
    KILN_ASSIGN_OR_RETURN(lw.qkv_bias, g.concat({{a + "q_proj.bias", {q}}, {a + "k_proj.bias", {kv}}, {a + "v_proj.bias", {kv}}}));
  }
  KILN_ASSIGN_OR_RETURN(lw.o_proj, g.take(a + "o_proj.weight", {h, q}));
  const int64_t inter = c.intermediate_size;
  if (c.num_experts == 0) {
    KILN_ASSIGN_OR_RETURN(lw.gate_up, g.concat({{p + "mlp.gate_proj.weight", {inter, h}}, {p + "mlp.up_proj.weight", {inter, h}}}));
    KILN_ASSIGN_OR_RETURN(lw.down, g.take(p + "mlp.down_proj.weight", {h, inter}));
    return ok_status();
  }
  const std::string m = p + "block_sparse_moe.";
  KILN_ASSIGN_OR_RETURN(lw.router, g.take(m + "gate.weight", {c.num_experts, h}));
  lw.experts.resize(static_cast<size_t>(c.num_experts));
  for (int64_t e = 0; e < c.num_experts; ++e) {
    const std::string x = m + "experts." + std::to_string(e) + ".";
    auto& ew = lw.experts[static_cast<size_t>(e)];
    KILN_ASSIGN_OR_RETURN(ew.gate_up, g.concat({{x + "w1.weight", {inter, h}}, {x + "w3.weight", {inter, h}}}));
    KILN_ASSIGN_OR_RETURN(ew.down, g.take(x + "w2.weight", {h, inter}));
  }
  return ok_status();
}

}  // namespace

Result<DecoderWeights> build_decoder_weights(LoadedModel& loaded) {
  const ModelConfig& c = loaded.config;
  if (c.hidden_size <= 0 || c.num_layers <= 0 || c.num_q_heads <= 0 || c.num_kv_heads <= 0 ||
      c.head_dim <= 0 || c.vocab_size <= 0 || c.num_q_heads % c.num_kv_heads != 0 || c.head_dim % 2 != 0)
    return invalid_argument(loaded.path + ": inconsistent model config (hidden " + std::to_string(c.hidden_size) +
                            ", heads " + std::to_string(c.num_q_heads) + "/" + std::to_string(c.num_kv_heads) +
                            ", head_dim " + std::to_string(c.head_dim) + ")");
  Gatherer g(loaded);
  DecoderWeights w;
  KILN_ASSIGN_OR_RETURN(w.embed, g.take("model.embed_tokens.weight", {c.vocab_size, c.hidden_size}));
  KILN_ASSIGN_OR_RETURN(w.norm, g.take("model.norm.weight", {c.hidden_size}));
  w.tied = !g.has("lm_head.weight");
  if (w.tied && !c.tie_word_embeddings)
    return not_found(loaded.path + ": missing tensor lm_head.weight (tie_word_embeddings is false)");
  if (!w.tied) {
    KILN_ASSIGN_OR_RETURN(w.lm_head, g.take("lm_head.weight", {c.vocab_size, c.hidden_size}));
  }
  w.layers.resize(static_cast<size_t>(c.num_layers));
  for (int64_t l = 0; l < c.num_layers; ++l) KILN_RETURN_IF_ERROR(gather_layer(g, c, l, w.layers[static_cast<size_t>(l)]));
  return w;
}

}  // namespace kiln
