// parse_hf_config: a Hugging Face config.json -> ModelConfig for Llama, Mistral, Qwen2 and Mixtral.
// Optional keys fall back to the transformers defaults of the architecture; null counts as absent.
#include <cmath>

#include <nlohmann/json.hpp>

#include "kiln/io/config_bounds.h"
#include "kiln/io/model_loader.h"

namespace kiln {
namespace {

using Json = nlohmann::json;

// Typed access to the top-level keys of a config, with errors that name the file and key.
class ConfigKeys {
 public:
  ConfigKeys(const Json& j, const std::string& path) : j_(j), path_(path) {}

  const Json* get(const char* key) const {
    auto it = j_.find(key);
    return (it == j_.end() || it->is_null()) ? nullptr : &*it;
  }
  Status missing(const char* key) const { return not_found(path_ + ": missing required config key '" + key + "'"); }
  Status bad(const char* key, const char* want) const {
    return data_loss(path_ + ": config key '" + key + "' must be " + want);
  }

  Result<int64_t> required_int(const char* key) const {
    const Json* v = get(key);
    if (!v) return missing(key);
    return as_int(key, *v);
  }
  Result<int64_t> int_or(const char* key, int64_t fallback) const {
    const Json* v = get(key);
    return v ? as_int(key, *v) : Result<int64_t>(fallback);
  }
  Result<double> float_or(const Json& obj, const char* key, double fallback) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return fallback;
    if (!it->is_number()) return bad(key, "a number");
    return it->get<double>();
  }
  Result<double> float_or(const char* key, double fallback) const { return float_or(j_, key, fallback); }
  Result<bool> bool_or(const char* key, bool fallback) const {
    const Json* v = get(key);
    if (!v) return fallback;
    if (!v->is_boolean()) return bad(key, "true or false");
    return v->get<bool>();
  }
  Result<int64_t> as_int(const char* key, const Json& v) const {
    if (v.is_number_integer()) return v.get<int64_t>();
    // A float that is a whole number (1e9 is written so); past 2^62 the cast would be undefined.
    const double d = v.is_number_float() ? v.get<double>() : 0.5;
    if (std::floor(d) == d && std::fabs(d) < 4.6e18) return static_cast<int64_t>(d);
    return bad(key, "an integer");
  }

 private:
  const Json& j_;
  const std::string& path_;
};

Result<Arch> detect_arch(const Json& j, const std::string& path) {
  struct Known {
    const char* architecture;
    const char* model_type;
    Arch arch;
  };
  static constexpr Known kKnown[] = {
      {"LlamaForCausalLM", "llama", Arch::kLlama},
      {"MistralForCausalLM", "mistral", Arch::kMistral},
      {"Qwen2ForCausalLM", "qwen2", Arch::kQwen2},
      {"MixtralForCausalLM", "mixtral", Arch::kMixtral},
  };
  std::string seen;
  if (auto it = j.find("architectures"); it != j.end() && it->is_array()) {
    for (const auto& a : *it) {
      if (!a.is_string()) continue;
      for (const auto& k : kKnown) {
        if (a.get<std::string>() == k.architecture) return k.arch;
      }
      seen += (seen.empty() ? "" : ", ") + a.get<std::string>();
    }
  }
  if (auto it = j.find("model_type"); it != j.end() && it->is_string()) {
    for (const auto& k : kKnown) {
      if (it->get<std::string>() == k.model_type) return k.arch;
    }
    seen += (seen.empty() ? "model_type " : ", model_type ") + it->get<std::string>();
  }
  return unimplemented(path + ": unsupported architecture " + (seen.empty() ? "(none given)" : seen) +
                       " (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, MixtralForCausalLM)");
}

Status parse_rope_scaling(const Json& j, const ConfigKeys& keys, const std::string& path, RopeScaling* out) {
  // transformers >= 5 writes the same fields into "rope_parameters" (and may drop rope_scaling).
  auto it = j.find("rope_scaling");
  if (it == j.end() || it->is_null()) it = j.find("rope_parameters");
  if (it == j.end() || it->is_null()) return ok_status();
  const Json& rs = *it;
  if (!rs.is_object()) return keys.bad("rope_scaling", "an object or null");
  std::string type;
  for (const char* k : {"rope_type", "type"}) {
    if (auto t = rs.find(k); t != rs.end() && t->is_string()) {
      type = t->get<std::string>();
      break;
    }
  }
  if (type == "default" || type.empty()) return ok_status();
  if (type != "llama3" && type != "linear") {
    return unimplemented(path + ": rope_scaling type '" + type + "' (supported: llama3, linear)");
  }
  out->type = type == "llama3" ? RopeScaling::Type::kLlama3 : RopeScaling::Type::kLinear;
  KILN_ASSIGN_OR_RETURN(double factor, keys.float_or(rs, "factor", 1.0));
  KILN_ASSIGN_OR_RETURN(double low, keys.float_or(rs, "low_freq_factor", 1.0));
  KILN_ASSIGN_OR_RETURN(double high, keys.float_or(rs, "high_freq_factor", 4.0));
  KILN_ASSIGN_OR_RETURN(double orig, keys.float_or(rs, "original_max_position_embeddings", 8192));
  if (!(orig >= 1 && orig < 4.6e18)) return keys.bad("original_max_position_embeddings", "a positive integer");
  out->factor = static_cast<float>(factor);
  out->low_freq_factor = static_cast<float>(low);
  out->high_freq_factor = static_cast<float>(high);
  out->original_max_position_embeddings = static_cast<int64_t>(orig);
  return ok_status();
}

Status parse_token_ids(const ConfigKeys& keys, ModelConfig* c) {
  KILN_ASSIGN_OR_RETURN(c->bos_token_id, keys.int_or("bos_token_id", -1));
  const Json* eos = keys.get("eos_token_id");
  if (!eos) return ok_status();
  if (eos->is_array()) {
    for (const auto& e : *eos) {
      KILN_ASSIGN_OR_RETURN(int64_t id, keys.as_int("eos_token_id", e));
      c->eos_token_ids.push_back(id);
    }
  } else {
    KILN_ASSIGN_OR_RETURN(int64_t id, keys.as_int("eos_token_id", *eos));
    c->eos_token_ids.push_back(id);
  }
  return ok_status();
}

// The MLP activation: kiln's MLPs are SwiGLU, so only silu (alias swish) runs; absent means silu,
// the transformers default of every architecture kiln reads.
Status check_hidden_act(const ConfigKeys& keys, const std::string& path) {
  const Json* act = keys.get("hidden_act");
  if (!act) return ok_status();
  if (!act->is_string()) return keys.bad("hidden_act", "a string");
  const std::string name = act->get<std::string>();
  if (name == "silu" || name == "swish") return ok_status();
  return unimplemented(path + ": hidden_act '" + name + "' is not implemented (supported: silu)");
}

// Heads, sizes and positions shared by every architecture.
Status parse_shapes(const ConfigKeys& keys, const std::string& path, ModelConfig* c) {
  KILN_ASSIGN_OR_RETURN(c->vocab_size, keys.required_int("vocab_size"));
  KILN_ASSIGN_OR_RETURN(c->hidden_size, keys.required_int("hidden_size"));
  KILN_ASSIGN_OR_RETURN(c->intermediate_size, keys.required_int("intermediate_size"));
  KILN_ASSIGN_OR_RETURN(c->num_layers, keys.required_int("num_hidden_layers"));
  KILN_ASSIGN_OR_RETURN(c->num_q_heads, keys.required_int("num_attention_heads"));
  KILN_ASSIGN_OR_RETURN(c->num_kv_heads, keys.int_or("num_key_value_heads", c->num_q_heads));
  if (c->vocab_size <= 0 || c->hidden_size <= 0 || c->intermediate_size <= 0 || c->num_layers <= 0 ||
      c->num_q_heads <= 0 || c->num_kv_heads <= 0) {
    return data_loss(path + ": vocab_size, hidden_size, intermediate_size, num_hidden_layers and head counts must be positive");
  }
  if (c->num_q_heads % c->num_kv_heads != 0) {
    return data_loss(path + ": num_attention_heads (" + std::to_string(c->num_q_heads) +
                     ") is not a multiple of num_key_value_heads (" + std::to_string(c->num_kv_heads) + ")");
  }
  if (!keys.get("head_dim") && c->hidden_size % c->num_q_heads != 0) {
    return data_loss(path + ": hidden_size is not a multiple of num_attention_heads and head_dim is not given");
  }
  KILN_ASSIGN_OR_RETURN(c->head_dim, keys.int_or("head_dim", c->hidden_size / c->num_q_heads));
  if (c->head_dim <= 0 || c->head_dim % 2 != 0) return data_loss(path + ": head_dim must be positive and even");
  return ok_status();
}

}  // namespace

Result<ModelConfig> parse_hf_config(const std::string& json_text, const std::string& path) {
  Json j = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return data_loss(path + ": malformed JSON");
  if (!j.is_object()) return data_loss(path + ": config is not a JSON object");
  try {
    ConfigKeys keys(j, path);
    ModelConfig c;
    KILN_ASSIGN_OR_RETURN(c.arch, detect_arch(j, path));
    const bool mixtral = c.arch == Arch::kMixtral;
    KILN_RETURN_IF_ERROR(parse_shapes(keys, path, &c));

    // transformers defaults per architecture.
    const int64_t default_max_pos = c.arch == Arch::kLlama ? 2048 : c.arch == Arch::kQwen2 ? 32768 : 4096 * 32;
    KILN_ASSIGN_OR_RETURN(c.max_position_embeddings, keys.int_or("max_position_embeddings", default_max_pos));
    KILN_ASSIGN_OR_RETURN(double eps, keys.float_or("rms_norm_eps", mixtral ? 1e-5 : 1e-6));
    c.rms_norm_eps = static_cast<float>(eps);
    // transformers >= 5 moves rope_theta into "rope_parameters".
    double theta_default = mixtral ? 1e6 : 10000.0;
    if (const Json* rp = keys.get("rope_parameters"); rp && rp->is_object()) {
      KILN_ASSIGN_OR_RETURN(theta_default, keys.float_or(*rp, "rope_theta", theta_default));
    }
    KILN_ASSIGN_OR_RETURN(double theta, keys.float_or("rope_theta", theta_default));
    c.rope_theta = static_cast<float>(theta);
    KILN_RETURN_IF_ERROR(parse_rope_scaling(j, keys, path, &c.rope_scaling));
    KILN_ASSIGN_OR_RETURN(c.tie_word_embeddings, keys.bool_or("tie_word_embeddings", false));

    if (c.arch == Arch::kQwen2) {
      c.attention_bias = true;  // Qwen2's q/k/v always carry a bias
      KILN_ASSIGN_OR_RETURN(bool use_sw, keys.bool_or("use_sliding_window", false));
      if (use_sw) {
        KILN_ASSIGN_OR_RETURN(c.sliding_window, keys.int_or("sliding_window", 0));
      }
    } else {
      KILN_ASSIGN_OR_RETURN(c.attention_bias, keys.bool_or("attention_bias", false));
      if (c.arch != Arch::kLlama) {
        KILN_ASSIGN_OR_RETURN(c.sliding_window, keys.int_or("sliding_window", 0));
      }
    }
    if (mixtral) {
      KILN_ASSIGN_OR_RETURN(c.num_experts, keys.int_or("num_local_experts", 8));
      KILN_ASSIGN_OR_RETURN(c.num_experts_per_tok, keys.int_or("num_experts_per_tok", 2));
      c.norm_topk_prob = true;
      if (c.num_experts <= 0 || c.num_experts_per_tok <= 0 || c.num_experts_per_tok > c.num_experts) {
        return data_loss(path + ": num_experts_per_tok must be in [1, num_local_experts]");
      }
    }
    KILN_RETURN_IF_ERROR(parse_token_ids(keys, &c));
    KILN_RETURN_IF_ERROR(check_hidden_act(keys, path));
    KILN_RETURN_IF_ERROR(check_config_bounds(c, hf_config_field_names(), path));
    return c;
  } catch (const std::exception& e) {  // nlohmann type errors; not expected past the checks above
    return data_loss(path + ": " + e.what());
  }
}

std::string hf_config_json(const ModelConfig& c) {
  static constexpr const char* kClass[] = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "MixtralForCausalLM"};
  Json j;
  j["architectures"] = {kClass[static_cast<int>(c.arch)]};
  j["model_type"] = arch_name(c.arch);
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_q_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["torch_dtype"] = "bfloat16";
  const RopeScaling& rs = c.rope_scaling;
  if (rs.type == RopeScaling::Type::kLinear) {
    j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", rs.factor}};
  } else if (rs.type == RopeScaling::Type::kLlama3) {
    j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", rs.factor}, {"low_freq_factor", rs.low_freq_factor},
                         {"high_freq_factor", rs.high_freq_factor},
                         {"original_max_position_embeddings", rs.original_max_position_embeddings}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  if (c.arch == Arch::kQwen2) {
    j["use_sliding_window"] = c.sliding_window > 0;
    j["sliding_window"] = c.sliding_window > 0 ? Json(c.sliding_window) : Json(nullptr);
  } else {
    j["attention_bias"] = c.attention_bias;
    if (c.arch != Arch::kLlama) j["sliding_window"] = c.sliding_window > 0 ? Json(c.sliding_window) : Json(nullptr);
  }
  if (c.arch == Arch::kMixtral) {
    j["num_local_experts"] = c.num_experts;
    j["num_experts_per_tok"] = c.num_experts_per_tok;
  }
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  else if (!c.eos_token_ids.empty()) j["eos_token_id"] = c.eos_token_ids;
  return j.dump(2);
}

}  // namespace kiln
