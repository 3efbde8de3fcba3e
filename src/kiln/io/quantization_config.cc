// parse_quantization_config: config.json "quantization_config" -> QuantizationConfig, fp8 only.
#include "kiln/io/quantization_config.h"

#include <nlohmann/json.hpp>

namespace kiln {
namespace {

using Json = nlohmann::json;

std::string str_or(const Json& j, const char* key, const std::string& fallback) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : fallback;
}

void read_ignored(const Json& j, const char* key, std::vector<std::string>* out) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_array()) return;
  for (const auto& s : *it)
    if (s.is_string()) out->push_back(s.get<std::string>());
}

// vLLM / transformers: {"quant_method": "fp8", "activation_scheme": "dynamic", "ignored_layers": [...]}.
Status parse_fp8(const Json& q, const std::string& where, QuantizationConfig* c) {
  if (auto it = q.find("weight_block_size"); it != q.end() && !it->is_null())
    return unimplemented(where + ": block-wise fp8 (weight_block_size " + it->dump() +
                         ") is not implemented (supported: one weight_scale per tensor or per output channel)");
  const std::string fmt = str_or(q, "fmt", "e4m3");
  if (fmt != "e4m3") return unimplemented(where + ": fp8 format '" + fmt + "' (supported: e4m3)");
  const std::string act = str_or(q, "activation_scheme", "dynamic");
  if (act != "dynamic" && act != "static")
    return unimplemented(where + ": activation_scheme '" + act + "' (supported: dynamic, static)");
  c->method = QuantizationConfig::Method::kFp8;
  c->static_activations = act == "static";
  read_ignored(q, "ignored_layers", &c->ignored);
  read_ignored(q, "modules_to_not_convert", &c->ignored);
  return ok_status();
}

// One compressed-tensors quantization args object ("weights", "input_activations", ...).
Status check_float8_args(const Json& a, const std::string& where, const char* what, bool weights, QuantizationConfig* c) {
  const int64_t bits = a.value("num_bits", int64_t{0});
  const std::string type = str_or(a, "type", "");
  const std::string strategy = str_or(a, "strategy", "");
  if (bits != 8 || type != "float")
    return unimplemented(where + ": compressed-tensors " + what + " with " + std::to_string(bits) + "-bit " + type +
                         " (supported: 8-bit float = fp8 e4m3)");
  if (weights) {
    if (strategy != "channel" && strategy != "tensor")
      return unimplemented(where + ": compressed-tensors weight strategy '" + strategy +
                           "' is not implemented (supported: channel, tensor)");
    c->per_channel = c->per_channel || strategy == "channel";
  } else {
    c->static_activations = c->static_activations || !a.value("dynamic", true);
  }
  return ok_status();
}

// llm-compressor: {"quant_method": "compressed-tensors", "format": "float-quantized",
//   "config_groups": {"group_0": {"targets": ["Linear"], "weights": {...}, "input_activations": {...}}},
//   "ignore": ["lm_head"], "kv_cache_scheme": {...} | null}.
Status parse_compressed_tensors(const Json& q, const std::string& where, QuantizationConfig* c) {
  const std::string format = str_or(q, "format", "float-quantized");
  if (format != "float-quantized" && format != "naive-quantized")
    return unimplemented(where + ": compressed-tensors format '" + format +
                         "' is not implemented (supported: float-quantized, naive-quantized with fp8 weights)");
  auto groups = q.find("config_groups");
  if (groups == q.end() || !groups->is_object() || groups->empty())
    return data_loss(where + ": compressed-tensors quantization_config without config_groups");
  for (const auto& [name, g] : groups->items()) {
    const std::string gw = where + " (config_groups." + name + ")";
    if (!g.is_object()) return data_loss(gw + ": not an object");
    auto w = g.find("weights");
    if (w == g.end() || !w->is_object()) return unimplemented(gw + ": no weight quantization (activation-only schemes are not implemented)");
    KILN_RETURN_IF_ERROR(check_float8_args(*w, gw, "weights", true, c));
    if (auto a = g.find("input_activations"); a != g.end() && a->is_object())
      KILN_RETURN_IF_ERROR(check_float8_args(*a, gw, "input_activations", false, c));
  }
  if (auto kv = q.find("kv_cache_scheme"); kv != q.end() && kv->is_object()) {
    const int64_t bits = kv->value("num_bits", int64_t{0});
    if (bits != 8 || str_or(*kv, "type", "") != "float")
      return unimplemented(where + ": kv_cache_scheme " + kv->dump() + " (supported: 8-bit float, per tensor)");
    c->kv_cache_fp8 = true;
  }
  c->method = QuantizationConfig::Method::kCompressedTensors;
  read_ignored(q, "ignore", &c->ignored);
  return ok_status();
}

}  // namespace

Result<QuantizationConfig> parse_quantization_config(const std::string& json_text, const std::string& path) {
  Json j = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return data_loss(path + ": malformed JSON");
  QuantizationConfig c;
  auto q = j.find("quantization_config");
  if (q == j.end() || q->is_null()) return c;
  const std::string where = path + ": quantization_config";
  if (!q->is_object()) return data_loss(where + " is not an object");
  try {
    const std::string method = str_or(*q, "quant_method", "");
    if (method == "fp8") {
      KILN_RETURN_IF_ERROR(parse_fp8(*q, where, &c));
    } else if (method == "compressed-tensors") {
      KILN_RETURN_IF_ERROR(parse_compressed_tensors(*q, where, &c));
    } else {
      return unimplemented(where + ": quant_method '" + method +
                           "' is not implemented (supported: fp8, compressed-tensors with fp8 e4m3 weights)");
    }
  } catch (const std::exception& e) {  // a value of the wrong JSON type
    return data_loss(where + ": " + e.what());
  }
  return c;
}

std::string fp8_quantization_config_json(bool per_channel, bool kv_cache_scales) {
  Json q;
  if (!per_channel) {
    q = {{"quant_method", "fp8"}, {"activation_scheme", "dynamic"}, {"fmt", "e4m3"}, {"ignored_layers", {"lm_head"}}};
    return q.dump();
  }
  const Json weights = {{"num_bits", 8}, {"type", "float"}, {"strategy", "channel"}, {"symmetric", true},
                        {"dynamic", false}, {"group_size", nullptr}, {"block_structure", nullptr}};
  const Json acts = {{"num_bits", 8}, {"type", "float"}, {"strategy", "token"}, {"symmetric", true}, {"dynamic", true}};
  q = {{"quant_method", "compressed-tensors"},
       {"format", "float-quantized"},
       {"quantization_status", "compressed"},
       {"config_groups", {{"group_0", {{"targets", {"Linear"}}, {"weights", weights}, {"input_activations", acts}}}}},
       {"ignore", {"lm_head"}},
       {"kv_cache_scheme", kv_cache_scales ? Json{{"num_bits", 8}, {"type", "float"}, {"strategy", "tensor"},
                                                  {"symmetric", true}, {"dynamic", false}}
                                           : Json(nullptr)}};
  return q.dump();
}

}  // namespace kiln
