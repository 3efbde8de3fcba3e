// config_from_gguf: GGUF metadata ("general.architecture", "<arch>.block_count", ...) ->
// ModelConfig. llama.cpp stores Mixtral as arch "llama" with <arch>.expert_count > 0, and Llama 3.1
// rope scaling as a rope_freqs.weight tensor.
#include <algorithm>
#include <cmath>
#include <utility>

#include "kiln/core/log.h"
#include "kiln/io/config_bounds.h"
#include "kiln/io/model_loader.h"

namespace kiln {
namespace {

// Optional metadata: the fallback when the key is absent, an error when it has the wrong type.
Result<int64_t> int_or(const GgufFile& g, const std::string& key, int64_t fallback) {
  return g.find(key) ? g.get_int(key) : Result<int64_t>(fallback);
}
Result<double> float_or(const GgufFile& g, const std::string& key, double fallback) {
  return g.find(key) ? g.get_float(key) : Result<double>(fallback);
}

// head_count_kv may be per layer (an array); kiln needs one value for every layer.
Result<int64_t> kv_heads(const GgufFile& g, const std::string& key, int64_t fallback) {
  const GgufValue* v = g.find(key);
  if (!v) return fallback;
  if (v->type != GgufValueType::kArray) return g.get_int(key);
  KILN_ASSIGN_OR_RETURN(std::vector<int64_t> per_layer, g.get_int_array(key));
  if (per_layer.empty()) return data_loss(g.path() + ": key '" + key + "' is an empty array");
  for (int64_t n : per_layer) {
    if (n != per_layer[0]) return unimplemented(g.path() + ": key '" + key + "' differs between layers");
  }
  return per_layer[0];
}

Result<Arch> detect_arch(const GgufFile& g, const std::string& name) {
  if (name == "qwen2") return Arch::kQwen2;
  if (name == "mistral") return Arch::kMistral;
  if (name == "llama") {
    KILN_ASSIGN_OR_RETURN(int64_t experts, int_or(g, "llama.expert_count", 0));
    return experts > 0 ? Arch::kMixtral : Arch::kLlama;
  }
  return unimplemented(g.path() + ": unsupported general.architecture '" + name + "' (supported: llama, mistral, qwen2)");
}

// llama.cpp stores Llama 3.1 rope scaling only as rope_freqs.weight: one divisor per rotary
// frequency. kiln needs the llama3 parameters, so the loader recovers them: factor is the largest
// divisor, and (low, high, original context) are the first of the usual choices that reproduce
// every divisor.
std::vector<double> llama3_rope_divisors(const RopeScaling& rs, double theta, int64_t head_dim) {
  const double kPi = 3.14159265358979323846;
  const double low_wavelen = rs.original_max_position_embeddings / rs.low_freq_factor;
  const double high_wavelen = rs.original_max_position_embeddings / rs.high_freq_factor;
  std::vector<double> out;
  for (int64_t i = 0; i < head_dim; i += 2) {
    const double freq = 1.0 / std::pow(theta, static_cast<double>(i) / static_cast<double>(head_dim));
    const double wavelen = 2 * kPi / freq;
    if (wavelen < high_wavelen) {
      out.push_back(1.0);
    } else if (wavelen > low_wavelen) {
      out.push_back(rs.factor);
    } else {
      const double smooth = (rs.original_max_position_embeddings / wavelen - rs.low_freq_factor) /
                            (rs.high_freq_factor - rs.low_freq_factor);
      out.push_back(1.0 / ((1 - smooth) / rs.factor + smooth));
    }
  }
  return out;
}

Status recover_llama3_scaling(const GgufFile& g, const GgufTensorInfo& t, const ModelConfig& c, RopeScaling* out) {
  if (t.numel() != c.head_dim / 2) {
    return data_loss(g.path() + ": rope_freqs.weight has " + std::to_string(t.numel()) + " entries, expected " +
                     std::to_string(c.head_dim / 2));
  }
  std::vector<float> divisors(static_cast<size_t>(t.numel()));
  KILN_RETURN_IF_ERROR(g.dequantize(t, DType::kF32, divisors.data()));
  RopeScaling rs;
  rs.type = RopeScaling::Type::kLlama3;
  // With a short head_dim no frequency may reach the fully scaled band, so max is only a guess.
  const float max_divisor = *std::max_element(divisors.begin(), divisors.end());
  if (max_divisor == 1.f && *std::min_element(divisors.begin(), divisors.end()) == 1.f) return ok_status();
  for (float factor : {max_divisor, 8.f, 32.f, 16.f, 4.f, 2.f}) {
    for (int64_t original : {8192, 4096, 2048, 16384, 32768, 65536, 131072}) {
      for (auto [low, high] : {std::pair{1.f, 4.f}, std::pair{1.f, 2.f}, std::pair{2.f, 4.f}}) {
        if (factor <= 1.f) continue;
        rs.factor = factor;
        rs.original_max_position_embeddings = original;
        rs.low_freq_factor = low;
        rs.high_freq_factor = high;
        const std::vector<double> want = llama3_rope_divisors(rs, c.rope_theta, c.head_dim);
        bool match = true;
        for (size_t i = 0; i < want.size() && match; ++i) match = std::fabs(want[i] - divisors[i]) <= 1e-4 * want[i];
        if (match) {
          *out = rs;
          return ok_status();
        }
      }
    }
  }
  log_warn(g.path(), ": rope_freqs.weight does not match llama3 rope scaling; ignored (long contexts will drift)");
  return ok_status();
}

Status read_rope_scaling(const GgufFile& g, const std::string& a, const ModelConfig& c, RopeScaling* out) {
  if (const GgufTensorInfo* freqs = g.find_tensor("rope_freqs.weight")) {
    return recover_llama3_scaling(g, *freqs, c, out);
  }
  if (!g.find(a + ".rope.scaling.type")) return ok_status();
  KILN_ASSIGN_OR_RETURN(std::string type, g.get_string(a + ".rope.scaling.type"));
  if (type == "none") return ok_status();
  if (type != "linear") return unimplemented(g.path() + ": rope scaling '" + type + "' (supported: linear)");
  KILN_ASSIGN_OR_RETURN(double factor, float_or(g, a + ".rope.scaling.factor", 1.0));
  out->type = RopeScaling::Type::kLinear;
  out->factor = static_cast<float>(factor);
  return ok_status();
}

Status read_token_ids(const GgufFile& g, ModelConfig* c) {
  KILN_ASSIGN_OR_RETURN(c->bos_token_id, int_or(g, "tokenizer.ggml.bos_token_id", -1));
  KILN_ASSIGN_OR_RETURN(int64_t eos, int_or(g, "tokenizer.ggml.eos_token_id", -1));
  if (eos >= 0) c->eos_token_ids.push_back(eos);
  // Chat models end a turn with an end-of-turn token that differs from eos (Llama 3: <|eot_id|>).
  KILN_ASSIGN_OR_RETURN(int64_t eot, int_or(g, "tokenizer.ggml.eot_token_id", -1));
  if (eot >= 0 && eot != eos) c->eos_token_ids.push_back(eot);
  return ok_status();
}

}  // namespace

Result<ModelConfig> config_from_gguf(const GgufFile& g) {
  KILN_ASSIGN_OR_RETURN(std::string a, g.get_string("general.architecture"));
  ModelConfig c;
  KILN_ASSIGN_OR_RETURN(c.arch, detect_arch(g, a));
  KILN_ASSIGN_OR_RETURN(c.num_layers, g.get_int(a + ".block_count"));
  KILN_ASSIGN_OR_RETURN(c.hidden_size, g.get_int(a + ".embedding_length"));
  KILN_ASSIGN_OR_RETURN(c.intermediate_size, g.get_int(a + ".feed_forward_length"));
  KILN_ASSIGN_OR_RETURN(c.num_q_heads, g.get_int(a + ".attention.head_count"));
  KILN_ASSIGN_OR_RETURN(c.num_kv_heads, kv_heads(g, a + ".attention.head_count_kv", c.num_q_heads));
  KILN_ASSIGN_OR_RETURN(c.max_position_embeddings, int_or(g, a + ".context_length", c.max_position_embeddings));
  KILN_ASSIGN_OR_RETURN(double theta, float_or(g, a + ".rope.freq_base", 10000.0));
  KILN_ASSIGN_OR_RETURN(double eps, float_or(g, a + ".attention.layer_norm_rms_epsilon", 1e-5));
  c.rope_theta = static_cast<float>(theta);
  c.rms_norm_eps = static_cast<float>(eps);
  if (c.num_layers <= 0 || c.hidden_size <= 0 || c.intermediate_size <= 0 || c.num_q_heads <= 0 ||
      c.num_kv_heads <= 0 || c.num_q_heads % c.num_kv_heads != 0) {
    return data_loss(g.path() + ": block_count, embedding_length, feed_forward_length and head counts must be "
                                "positive, head_count a multiple of head_count_kv");
  }
  // head_dim: attention.key_length, else the rotary dimension (= head_dim for these archs).
  const int64_t default_head_dim = c.hidden_size / c.num_q_heads;
  KILN_ASSIGN_OR_RETURN(int64_t rope_dim, int_or(g, a + ".rope.dimension_count", default_head_dim));
  KILN_ASSIGN_OR_RETURN(c.head_dim, int_or(g, a + ".attention.key_length", rope_dim));
  if (c.head_dim <= 0 || c.head_dim % 2 != 0) return data_loss(g.path() + ": head dimension must be positive and even");
  if (rope_dim != c.head_dim) {
    return unimplemented(g.path() + ": partial rotary embedding (rope.dimension_count " + std::to_string(rope_dim) +
                         " != head_dim " + std::to_string(c.head_dim) + ")");
  }

  if (g.find(a + ".vocab_size")) {
    KILN_ASSIGN_OR_RETURN(c.vocab_size, g.get_int(a + ".vocab_size"));
  } else if (const GgufValue* tokens = g.find("tokenizer.ggml.tokens"); tokens && tokens->type == GgufValueType::kArray) {
    c.vocab_size = static_cast<int64_t>(tokens->array.size());
  } else if (const GgufTensorInfo* embd = g.find_tensor("token_embd.weight"); embd && embd->shape.size() == 2) {
    c.vocab_size = embd->shape[0];
  } else {
    return not_found(g.path() + ": no " + a + ".vocab_size, tokenizer.ggml.tokens or token_embd.weight");
  }
  KILN_RETURN_IF_ERROR(read_rope_scaling(g, a, c, &c.rope_scaling));
  KILN_ASSIGN_OR_RETURN(c.sliding_window, int_or(g, a + ".attention.sliding_window", 0));
  c.tie_word_embeddings = g.find_tensor("output.weight") == nullptr;
  c.attention_bias = c.arch == Arch::kQwen2;
  if (c.arch == Arch::kMixtral) {
    KILN_ASSIGN_OR_RETURN(c.num_experts, g.get_int(a + ".expert_count"));
    KILN_ASSIGN_OR_RETURN(c.num_experts_per_tok, g.get_int(a + ".expert_used_count"));
    if (c.num_experts_per_tok <= 0 || c.num_experts_per_tok > c.num_experts) {
      return data_loss(g.path() + ": expert_used_count must be in [1, expert_count]");
    }
    c.norm_topk_prob = true;
  }
  KILN_RETURN_IF_ERROR(read_token_ids(g, &c));
  KILN_RETURN_IF_ERROR(check_config_bounds(c, gguf_config_field_names(a), g.path()));
  return c;
}

}  // namespace kiln
