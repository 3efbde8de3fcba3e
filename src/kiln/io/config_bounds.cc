// check_config_bounds: the bounds of config_bounds.h, with messages naming the file and field.
#include "kiln/io/config_bounds.h"

#include <cmath>
#include <cstdio>

namespace kiln {
namespace {

Status check_size(int64_t v, int64_t lo, int64_t hi, const std::string& name, const std::string& path) {
  if (v >= lo && v <= hi) return ok_status();
  return data_loss(path + ": " + name + " is " + std::to_string(v) + ", must be in [" + std::to_string(lo) + ", " +
                   std::to_string(hi) + "]");
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

Status check_positive(double v, const std::string& name, const std::string& path) {
  if (std::isfinite(v) && v > 0) return ok_status();
  return data_loss(path + ": " + name + " is " + number(v) + ", must be a finite number > 0");
}

}  // namespace

ConfigFieldNames hf_config_field_names() {
  return {"num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
          "head_dim", "vocab_size", "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling",
          "num_local_experts", "num_experts_per_tok", "sliding_window"};
}

ConfigFieldNames gguf_config_field_names(const std::string& a) {
  return {a + ".block_count", a + ".embedding_length", a + ".feed_forward_length", a + ".attention.head_count",
          a + ".attention.head_count_kv", a + ".attention.key_length", a + ".vocab_size", a + ".context_length",
          a + ".attention.layer_norm_rms_epsilon", a + ".rope.freq_base", a + ".rope.scaling",
          a + ".expert_count", a + ".expert_used_count", a + ".attention.sliding_window"};
}

Status check_config_bounds(const ModelConfig& c, const ConfigFieldNames& n, const std::string& path) {
  using L = ConfigLimits;
  KILN_RETURN_IF_ERROR(check_size(c.num_layers, 1, L::kMaxLayers, n.layers, path));
  KILN_RETURN_IF_ERROR(check_size(c.hidden_size, 1, L::kMaxHiddenSize, n.hidden_size, path));
  KILN_RETURN_IF_ERROR(check_size(c.intermediate_size, 1, L::kMaxIntermediateSize, n.intermediate_size, path));
  KILN_RETURN_IF_ERROR(check_size(c.num_q_heads, 1, L::kMaxHeads, n.q_heads, path));
  KILN_RETURN_IF_ERROR(check_size(c.num_kv_heads, 1, c.num_q_heads, n.kv_heads, path));
  KILN_RETURN_IF_ERROR(check_size(c.head_dim, 2, L::kMaxHeadDim, n.head_dim, path));
  KILN_RETURN_IF_ERROR(check_size(c.vocab_size, 1, L::kMaxVocabSize, n.vocab_size, path));
  KILN_RETURN_IF_ERROR(check_size(c.max_position_embeddings, 1, L::kMaxContext, n.context, path));
  KILN_RETURN_IF_ERROR(check_size(c.sliding_window, 0, L::kMaxContext, n.sliding_window, path));
  if (c.num_experts != 0 || c.arch == Arch::kMixtral) {
    KILN_RETURN_IF_ERROR(check_size(c.num_experts, 1, L::kMaxExperts, n.experts, path));
    KILN_RETURN_IF_ERROR(check_size(c.num_experts_per_tok, 1, c.num_experts, n.experts_per_tok, path));
  }
  KILN_RETURN_IF_ERROR(check_positive(c.rms_norm_eps, n.rms_norm_eps, path));
  KILN_RETURN_IF_ERROR(check_positive(c.rope_theta, n.rope_theta, path));
  const RopeScaling& rs = c.rope_scaling;
  if (rs.type == RopeScaling::Type::kNone) return ok_status();
  KILN_RETURN_IF_ERROR(check_positive(rs.factor, n.rope_scaling + ".factor", path));
  if (rs.type != RopeScaling::Type::kLlama3) return ok_status();
  KILN_RETURN_IF_ERROR(check_positive(rs.low_freq_factor, n.rope_scaling + ".low_freq_factor", path));
  KILN_RETURN_IF_ERROR(check_positive(rs.high_freq_factor, n.rope_scaling + ".high_freq_factor", path));
  KILN_RETURN_IF_ERROR(check_size(rs.original_max_position_embeddings, 1, L::kMaxContext,
                                  n.rope_scaling + ".original_max_position_embeddings", path));
  if (!(rs.low_freq_factor < rs.high_freq_factor)) {
    return data_loss(path + ": " + n.rope_scaling + ".low_freq_factor (" + number(rs.low_freq_factor) +
                     ") must be below high_freq_factor (" + number(rs.high_freq_factor) + ")");
  }
  return ok_status();
}

}  // namespace kiln
