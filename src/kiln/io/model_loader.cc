// load_model: a Hugging Face directory (config.json + one or many .safetensors) or a .gguf file ->
// ModelConfig + host weights under HF names in the compute dtype. GGUF tensors are renamed
// (gguf_names.h), stacked experts split, and llama-family Q/K rows un-permuted.
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <new>
#include <set>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/core/log.h"
#include "kiln/io/ggml_quant.h"
#include "kiln/io/gguf_names.h"
#include "kiln/io/host_convert.h"
#include "kiln/io/model_loader.h"
#include "kiln/io/safetensors.h"

namespace kiln {

const Tensor* LoadedModel::find(const std::string& name) const {
  auto it = weights.find(name);
  return it == weights.end() ? nullptr : &it->second.tensor;
}

Status unpermute_gguf_qk(const Tensor& t, int64_t num_heads) {
  const int64_t rows = t.ndim >= 1 ? t.shape[0] : 0;
  if (num_heads <= 0 || rows % num_heads != 0 || (rows / num_heads) % 2 != 0 || !t.is_contiguous()) {
    return invalid_argument("cannot un-permute " + t.shape_string() + " over " + std::to_string(num_heads) +
                            " heads (rows must be heads * even head_dim)");
  }
  const int64_t head_dim = rows / num_heads, half = head_dim / 2;
  const size_t row_bytes = static_cast<size_t>(dtype_bytes(t.dtype, t.numel() / rows));
  auto* base = static_cast<uint8_t*>(t.data);
  std::vector<uint8_t> head(static_cast<size_t>(head_dim) * row_bytes);
  for (int64_t h = 0; h < num_heads; ++h) {
    uint8_t* rows_h = base + static_cast<size_t>(h * head_dim) * row_bytes;
    std::memcpy(head.data(), rows_h, head.size());
    // GGUF row 2j + s holds HF row s * head_dim/2 + j.
    for (int64_t j = 0; j < half; ++j) {
      for (int64_t s = 0; s < 2; ++s) {
        std::memcpy(rows_h + static_cast<size_t>(s * half + j) * row_bytes,
                    head.data() + static_cast<size_t>(2 * j + s) * row_bytes, row_bytes);
      }
    }
  }
  return ok_status();
}

namespace {

// Reports progress to the callback and logs every ~10%.
class LoadMeter {
 public:
  LoadMeter(std::string what, int64_t total, const LoadProgress& cb) : what_(std::move(what)), total_(total), cb_(cb) {}
  void add(int64_t bytes) {
    done_ += bytes;
    if (cb_) cb_(done_, total_);
    const int pct = total_ > 0 ? static_cast<int>(done_ * 100 / total_) : 100;
    if (pct >= next_pct_) {
      log_info("loading ", what_, ": ", pct, "% (", done_ >> 20, " / ", total_ >> 20, " MiB)");
      next_pct_ = pct / 10 * 10 + 10;
    }
  }

 private:
  std::string what_;
  int64_t total_, done_ = 0;
  const LoadProgress& cb_;
  int next_pct_ = 10;
};

Result<HostTensor> allocate(DType dtype, const std::vector<int64_t>& shape, const std::string& name) {
  if (shape.empty() || shape.size() > static_cast<size_t>(kMaxDims)) {
    return unimplemented("tensor '" + name + "' has rank " + std::to_string(shape.size()) + " (1..4 supported)");
  }
  try {
    return HostTensor::zeros(dtype, shape.data(), static_cast<int>(shape.size()));
  } catch (const std::bad_alloc&) {
    return resource_exhausted("out of host memory for tensor '" + name + "'");
  }
}

bool is_dir(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
bool is_file(const std::string& path) {
  struct stat st {};
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

Result<std::string> read_text(const std::string& path) {
  if (!is_file(path)) return not_found(path + ": no such file");
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  if (!in.good() && !in.eof()) return data_loss(path + ": read failed");
  return ss.str();
}

// ---- Hugging Face directory ----------------------------------------------------------------

struct ShardPlan {
  std::vector<std::string> shards;                 // file names, in first-use order
  std::map<std::string, std::string> weight_map;   // tensor -> shard (empty for one file)
};

Result<ShardPlan> plan_shards(const std::string& dir) {
  ShardPlan plan;
  const std::string index_path = dir + "/model.safetensors.index.json";
  if (!is_file(index_path)) {
    if (!is_file(dir + "/model.safetensors")) {
      return not_found(dir + ": no model.safetensors or model.safetensors.index.json");
    }
    plan.shards.push_back("model.safetensors");
    return plan;
  }
  KILN_ASSIGN_OR_RETURN(std::string text, read_text(index_path));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return data_loss(index_path + ": malformed JSON");
  auto wm = j.find("weight_map");
  if (wm == j.end() || !wm->is_object()) return data_loss(index_path + ": missing \"weight_map\" object");
  std::set<std::string> seen;
  for (const auto& [tensor, shard] : wm->items()) {
    if (!shard.is_string()) return data_loss(index_path + ": weight_map['" + tensor + "'] is not a file name");
    const std::string file = shard.get<std::string>();
    if (file.empty() || file.find('/') != std::string::npos) {
      return data_loss(index_path + ": bad shard name '" + file + "'");
    }
    plan.weight_map[tensor] = file;
    if (seen.insert(file).second) plan.shards.push_back(file);
  }
  for (const auto& s : plan.shards) {
    if (!is_file(dir + "/" + s)) return not_found(dir + "/" + s + ": missing shard listed in " + index_path);
  }
  return plan;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The dtype a checkpoint tensor is kept in: fp8 e4m3 weights as stored, scales in f32, the rest
// in the compute dtype.
Result<DType> stored_dtype(const SafetensorsTensor& t, DType compute, const std::string& file) {
  if (ends_with(t.name, ".weight_scale_inv"))
    return unimplemented(file + ": tensor '" + t.name + "': block-wise fp8 scales (weight_scale_inv) are not implemented "
                         "(supported: weight_scale per tensor or per output channel)");
  if (ends_with(t.name, "_scale")) return DType::kF32;
  if (t.dtype == DType::kFp8E5M2)
    return unimplemented(file + ": tensor '" + t.name + "' is fp8 e5m2 (supported fp8 weights: e4m3)");
  if (t.dtype == DType::kFp8E4M3) return DType::kFp8E4M3;
  return compute;
}

Status load_hf_dir(const std::string& dir, DType dtype, const LoadProgress& progress, LoadedModel* m) {
  const std::string config_path = dir + "/config.json";
  KILN_ASSIGN_OR_RETURN(std::string config_text, read_text(config_path));
  KILN_ASSIGN_OR_RETURN(m->config, parse_hf_config(config_text, config_path));
  KILN_ASSIGN_OR_RETURN(m->quantization, parse_quantization_config(config_text, config_path));
  if (!is_file(dir + "/tokenizer.json") && is_file(dir + "/tokenizer.gguf")) {
    KILN_ASSIGN_OR_RETURN(GgufFile vocab, GgufFile::open(dir + "/tokenizer.gguf"));
    m->gguf = std::make_shared<const GgufFile>(std::move(vocab));
  }
  KILN_ASSIGN_OR_RETURN(ShardPlan plan, plan_shards(dir));

  std::vector<SafetensorsFile> files;
  int64_t total = 0;
  for (const auto& s : plan.shards) {
    KILN_ASSIGN_OR_RETURN(SafetensorsFile f, SafetensorsFile::open(dir + "/" + s));
    for (const auto& t : f.tensors()) total += t.nbytes;
    files.push_back(std::move(f));
  }
  LoadMeter meter(dir, total, progress);
  for (const auto& f : files) {
    for (const auto& t : f.tensors()) {
      if (!dtype_is_float(t.dtype)) {  // e.g. an I64 position_ids buffer
        log_warn(f.path(), ": skipping non-float tensor '", t.name, "' (", dtype_name(t.dtype), ")");
        meter.add(t.nbytes);
        continue;
      }
      if (m->weights.count(t.name)) return data_loss(f.path() + ": tensor '" + t.name + "' appears in two shards");
      KILN_ASSIGN_OR_RETURN(const DType want, stored_dtype(t, dtype, f.path()));
      // Scalars (per-tensor scales) become [1]: kiln's rank-0 tensor is empty.
      KILN_ASSIGN_OR_RETURN(HostTensor h, allocate(want, t.shape.empty() ? std::vector<int64_t>{1} : t.shape, t.name));
      Status s = convert_parallel(t.data, t.dtype, h.tensor.data, want, h.tensor.numel());
      if (!s.ok()) return s.with_context(f.path() + ": tensor '" + t.name + "'");
      m->weights.emplace(t.name, std::move(h));
      meter.add(t.nbytes);
    }
  }
  for (const auto& [tensor, shard] : plan.weight_map) {
    if (!m->weights.count(tensor)) return not_found(dir + "/" + shard + ": missing tensor '" + tensor + "' (listed in the index)");
  }
  if (m->config.tie_word_embeddings) {
    for (const char* n : {"lm_head.weight", "lm_head.weight_scale", "lm_head.input_scale"}) m->weights.erase(n);
  }
  return ok_status();
}

// ---- GGUF ----------------------------------------------------------------------------------

// llama.cpp permutes Q/K rows for interleaved RoPE in the llama family, not in Qwen2.
bool gguf_qk_permuted(const ModelConfig& c) { return c.arch != Arch::kQwen2; }

// One GGUF tensor (or one expert of a stacked tensor) -> an HF tensor in dtype.
Result<HostTensor> convert_gguf_tensor(const GgufFile& g, const GgufTensorInfo& t, DType dtype,
                                       const std::string& hf_name) {
  KILN_ASSIGN_OR_RETURN(HostTensor h, allocate(dtype, t.shape, hf_name));
  KILN_RETURN_IF_ERROR(g.dequantize(t, dtype, h.tensor.data));
  return h;
}

Status add_gguf_tensor(const GgufFile& g, const GgufTensorInfo& t, const GgufTensorName& name, DType dtype,
                       LoadedModel* m) {
  const ModelConfig& c = m->config;
  if (!name.stacked_experts) {
    KILN_ASSIGN_OR_RETURN(HostTensor h, convert_gguf_tensor(g, t, dtype, name.hf_name));
    if (name.qk != QkProj::kNone && gguf_qk_permuted(c)) {
      Status s = unpermute_gguf_qk(h.tensor, name.qk == QkProj::kQ ? c.num_q_heads : c.num_kv_heads);
      if (!s.ok()) return s.with_context(g.path() + ": tensor '" + t.name + "'");
    }
    m->weights.emplace(name.hf_name, std::move(h));
    return ok_status();
  }
  // [n_expert, out, in]: each expert is a contiguous run of whole rows (blocks never straddle rows).
  if (t.shape.size() != 3) {
    return data_loss(g.path() + ": stacked expert tensor '" + t.name + "' is not 3-D");
  }
  GgufTensorInfo one = t;
  one.shape.erase(one.shape.begin());
  one.nbytes = t.shape[0] == 0 ? 0 : t.nbytes / t.shape[0];
  for (int64_t e = 0; e < t.shape[0]; ++e) {
    one.data = t.data + e * one.nbytes;
    const std::string hf = expert_tensor_name(name.hf_name, e);
    KILN_ASSIGN_OR_RETURN(HostTensor h, convert_gguf_tensor(g, one, dtype, hf));
    m->weights.emplace(hf, std::move(h));
  }
  return ok_status();
}

Status load_gguf(const std::string& path, DType dtype, const LoadProgress& progress, LoadedModel* m) {
  KILN_ASSIGN_OR_RETURN(GgufFile file, GgufFile::open(path));
  auto g = std::make_shared<const GgufFile>(std::move(file));
  m->gguf = g;
  KILN_ASSIGN_OR_RETURN(m->config, config_from_gguf(*g));
  int64_t total = 0;
  for (const auto& t : g->tensors()) total += t.nbytes;
  LoadMeter meter(path, total, progress);
  for (const auto& t : g->tensors()) {
    std::optional<GgufTensorName> name = hf_name_from_gguf(t.name);
    if (!name) {
      if (t.name != "rope_freqs.weight") log_warn(path, ": skipping unknown tensor '", t.name, "'");
      meter.add(t.nbytes);
      continue;
    }
    if (m->weights.count(name->hf_name)) return data_loss(path + ": two tensors map to '" + name->hf_name + "'");
    KILN_RETURN_IF_ERROR(add_gguf_tensor(*g, t, *name, dtype, m));
    meter.add(t.nbytes);
  }
  return ok_status();
}

}  // namespace

Result<LoadedModel> load_model(const std::string& path, DType dtype, const LoadProgress& progress) {
  if (dtype != DType::kF32 && dtype != DType::kF16 && dtype != DType::kBF16) {
    return invalid_argument(path + ": load dtype " + std::string(dtype_name(dtype)) + " (supported: f32, f16, bf16)");
  }
  LoadedModel m;
  m.path = path;
  m.dtype = dtype;
  if (is_dir(path)) {
    m.hf_dir = path;
    KILN_RETURN_IF_ERROR(load_hf_dir(path, dtype, progress, &m));
  } else if (is_file(path)) {  // anything but a directory must be GGUF; open() checks the magic
    KILN_RETURN_IF_ERROR(load_gguf(path, dtype, progress, &m));
  } else {
    return not_found(path + ": no such file or directory");
  }
  log_info("loaded ", path, ": ", arch_name(m.config.arch), ", ", m.config.num_layers, " layers, ",
           m.weights.size(), " tensors as ", dtype_name(dtype));
  return m;
}

Result<LoadedModel> load_config_only(const std::string& dir) {
  const std::string cfg_path = dir + "/config.json";
  std::ifstream in(cfg_path);
  if (!in) return not_found(cfg_path + ": cannot open (a model directory with config.json is needed)");
  std::stringstream text;
  text << in.rdbuf();
  LoadedModel loaded;
  loaded.path = dir;
  KILN_ASSIGN_OR_RETURN(loaded.config, parse_hf_config(text.str(), cfg_path));
  return loaded;
}

}  // namespace kiln
