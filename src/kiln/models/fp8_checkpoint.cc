// write_fp8_checkpoint: quantize the linear weights (kernels/quantize.h, the same function the
// loader uses), convert the rest to bf16, write one model.safetensors, config.json, tokenizer.
#include "kiln/models/fp8_checkpoint.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include <nlohmann/json.hpp>

#include "kiln/io/gguf_writer.h"
#include "kiln/io/quantization_config.h"
#include "kiln/io/safetensors.h"
#include "kiln/kernels/quantize.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

Status write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) return Status(StatusCode::kUnavailable, path + ": cannot write");
  return ok_status();
}

// config.json: the source's own (HF) or one made from the config (GGUF), plus quantization_config.
Result<std::string> config_text(const LoadedModel& m, const Fp8CheckpointOptions& o) {
  nlohmann::ordered_json j;
  if (!m.hf_dir.empty()) {
    std::ifstream in(m.hf_dir + "/config.json");
    std::stringstream ss;
    ss << in.rdbuf();
    j = nlohmann::ordered_json::parse(ss.str(), nullptr, false);
    if (j.is_discarded() || !j.is_object()) return data_loss(m.hf_dir + "/config.json: malformed JSON");
  } else {
    j = nlohmann::ordered_json::parse(hf_config_json(m.config));
  }
  j["torch_dtype"] = "bfloat16";
  j["quantization_config"] = nlohmann::ordered_json::parse(fp8_quantization_config_json(!o.per_tensor, !o.k_scales.empty()));
  return j.dump(2) + "\n";
}

Status copy_tokenizer(const LoadedModel& m, const std::string& out_dir) {
  if (!m.hf_dir.empty()) {
    static constexpr const char* kFiles[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                             "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
                                             "generation_config.json", "chat_template.jinja", "chat_template.json",
                                             "tokenizer.gguf"};
    for (const char* f : kFiles) {
      const fs::path src = fs::path(m.hf_dir) / f;
      std::error_code ec;
      if (!fs::is_regular_file(src, ec)) continue;
      fs::copy_file(src, fs::path(out_dir) / f, fs::copy_options::overwrite_existing, ec);
      if (ec) return Status(StatusCode::kUnavailable, (fs::path(out_dir) / f).string() + ": " + ec.message());
    }
    return ok_status();
  }
  if (m.gguf) return write_gguf_metadata(out_dir + "/tokenizer.gguf", m.gguf->metadata());
  return not_found(m.path + ": no tokenizer to copy");
}

// A per-channel scale [n] as compressed-tensors writes it, [n, 1].
Result<HostTensor> as_column(HostTensor s, bool per_tensor) {
  if (per_tensor) return s;
  KILN_ASSIGN_OR_RETURN(s.tensor, s.tensor.reshape({s.tensor.numel(), 1}));
  return s;
}

}  // namespace

bool is_fp8_linear_weight(const std::string& name) {
  static const std::regex kLinear(
      R"(model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj|block_sparse_moe\.experts\.\d+\.w[123])\.weight)");
  return std::regex_match(name, kLinear);
}

Status write_fp8_checkpoint(const LoadedModel& m, const Fp8CheckpointOptions& o, const std::string& out_dir,
                            const std::function<void(int64_t, int64_t)>& progress) {
  const int64_t layers = m.config.num_layers;
  if (!o.k_scales.empty() && (static_cast<int64_t>(o.k_scales.size()) != layers || o.v_scales.size() != o.k_scales.size()))
    return invalid_argument("write_fp8_checkpoint: need one k and one v scale per layer (" + std::to_string(layers) + ")");
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  if (ec) return Status(StatusCode::kUnavailable, out_dir + ": " + ec.message());
  if (!m.hf_dir.empty() && fs::equivalent(m.hf_dir, out_dir, ec))
    return invalid_argument(out_dir + ": the output directory is the model's own directory");

  int64_t total = 0, done = 0;
  for (const auto& [name, t] : m.weights) total += t.tensor.nbytes();
  std::vector<HostTensor> storage;  // keeps every written tensor alive until the file is written
  storage.reserve(m.weights.size() * 2 + 2 * static_cast<size_t>(layers));
  std::vector<std::pair<std::string, Tensor>> out;
  auto add = [&](const std::string& name, HostTensor t) {
    storage.push_back(std::move(t));
    out.emplace_back(name, storage.back().tensor);
  };
  for (const auto& [name, t] : m.weights) {
    const std::string base = name.substr(0, name.rfind('.'));
    if (name.ends_with(".input_scale") || name.ends_with(".weight_scale") ||
        (!o.k_scales.empty() && (name.ends_with("self_attn.k_scale") || name.ends_with("self_attn.v_scale")))) {
      // input scales are dropped (dynamic activations); weight scales travel with their weight.
    } else if (t.tensor.dtype == DType::kFp8E4M3) {  // already fp8: kept as stored, with its scale
      auto s = m.weights.find(base + ".weight_scale");
      if (s == m.weights.end()) return not_found(m.path + ": fp8 tensor " + name + " has no " + base + ".weight_scale");
      HostTensor q = HostTensor::zeros(DType::kFp8E4M3, t.tensor.shape.data(), t.tensor.ndim);
      std::memcpy(q.tensor.data, t.tensor.data, static_cast<size_t>(t.tensor.nbytes()));
      HostTensor sc = HostTensor::zeros(DType::kF32, s->second.tensor.shape.data(), s->second.tensor.ndim);
      std::memcpy(sc.tensor.data, s->second.tensor.data, static_cast<size_t>(s->second.tensor.nbytes()));
      add(name, std::move(q));
      add(base + ".weight_scale", std::move(sc));
    } else if (is_fp8_linear_weight(name)) {
      auto h = o.hessians.find(name);
      KILN_ASSIGN_OR_RETURN(Fp8Weights q, h == o.hessians.end() ? quantize_fp8_weights_cpu(t.tensor, o.per_tensor)
                                                                : quantize_fp8_gptq_cpu(t.tensor, *h->second, {o.per_tensor}));
      add(name, std::move(q.q));
      KILN_ASSIGN_OR_RETURN(HostTensor scale, as_column(std::move(q.scale), o.per_tensor));
      add(base + ".weight_scale", std::move(scale));
    } else if (t.tensor.dtype == DType::kF32 && name.ends_with("_scale")) {  // k_scale / v_scale of the source
      HostTensor sc = HostTensor::zeros(DType::kF32, t.tensor.shape.data(), t.tensor.ndim);
      std::memcpy(sc.tensor.data, t.tensor.data, static_cast<size_t>(t.tensor.nbytes()));
      add(name, std::move(sc));
    } else {
      HostTensor b = HostTensor::zeros(DType::kBF16, t.tensor.shape.data(), t.tensor.ndim);
      Status s = convert(t.tensor.data, t.tensor.dtype, b.tensor.data, DType::kBF16, t.tensor.numel());
      if (!s.ok()) return s.with_context(m.path + ": tensor " + name);
      add(name, std::move(b));
    }
    done += t.tensor.nbytes();
    if (progress) progress(done, total);
  }
  for (int64_t l = 0; l < static_cast<int64_t>(o.k_scales.size()); ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      HostTensor s = HostTensor::zeros(DType::kF32, {1});
      s.tensor.ptr<float>()[0] = (kv == 0 ? o.k_scales : o.v_scales)[static_cast<size_t>(l)];
      add("model.layers." + std::to_string(l) + ".self_attn." + (kv == 0 ? "k_scale" : "v_scale"), std::move(s));
    }
  }
  KILN_RETURN_IF_ERROR(write_safetensors(out_dir + "/model.safetensors", out, {{"format", "pt"}}));
  KILN_ASSIGN_OR_RETURN(std::string config, config_text(m, o));
  KILN_RETURN_IF_ERROR(write_text(out_dir + "/config.json", config));
  return copy_tokenizer(m, out_dir);
}

}  // namespace kiln
