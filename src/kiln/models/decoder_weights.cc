// Gathers Hugging Face tensors into DecoderWeights, checking names and shapes; errors name the
// missing tensor and the checkpoint path. Linear weights may be fp8 (quantized here or as stored).
#include "kiln/models/decoder_weights.h"

#include <cmath>
#include <cstring>
#include <string>

#include "kiln/core/log.h"
#include "kiln/kernels/quantize.h"

namespace kiln {
namespace {

// A linear weight and, when it is fp8, its scale ([n] or [1] f32).
struct Linear {
  HostTensor w, scale;
  bool fp8() const { return w.tensor.dtype == DType::kFp8E4M3; }
};

Result<HostTensor> dequantize(const Linear& l, DType dtype) {
  HostTensor out = HostTensor::zeros(dtype, {l.w.tensor.shape[0], l.w.tensor.shape[1]});
  KILN_RETURN_IF_ERROR(dequantize_fp8_weights_cpu(l.w.tensor, l.scale.tensor, out.tensor));
  return out;
}

// Concatenates [rows_i, ...] tensors of one dtype along dim 0.
HostTensor concat_rows(const std::vector<const Tensor*>& parts) {
  int64_t rows = 0;
  for (const Tensor* t : parts) rows += t->shape[0];
  const Tensor& first = *parts[0];
  HostTensor out = first.ndim == 2 ? HostTensor::zeros(first.dtype, {rows, first.shape[1]})
                                   : HostTensor::zeros(first.dtype, {rows});
  char* dst = static_cast<char*>(out.tensor.data);
  for (const Tensor* t : parts) {
    std::memcpy(dst, t->data, static_cast<size_t>(t->nbytes()));
    dst += t->nbytes();
  }
  return out;
}

class Gatherer {
 public:
  Gatherer(LoadedModel& m, const ModelOptions& o) : m_(m), o_(o) {}

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

  // A tensor kept in the compute dtype (embedding, norm, bias, router, LM head): an fp8 one from
  // a checkpoint is dequantized with its weight_scale.
  Result<HostTensor> take_dense(const std::string& name, std::initializer_list<int64_t> shape) {
    KILN_ASSIGN_OR_RETURN(HostTensor t, take(name, shape));
    if (t.tensor.dtype != DType::kFp8E4M3) return t;
    if (t.tensor.ndim != 2) return unimplemented(m_.path + ": fp8 tensor " + name + " is not a matrix");
    KILN_ASSIGN_OR_RETURN(Linear l, with_scale(strip_weight(name), std::move(t)));
    return dequantize(l, m_.dtype);
  }

  // One HF linear weight `<base>.weight` [rows, cols], quantized to fp8 when the options ask.
  Result<Linear> take_linear(const std::string& base, int64_t rows, int64_t cols) {
    KILN_ASSIGN_OR_RETURN(HostTensor w, take(base + ".weight", {rows, cols}));
    if (m_.weights.erase(base + ".input_scale") && !warned_input_scale_) {
      log_info(m_.path, ": input_scale tensors ignored (kiln quantizes activations dynamically)");
      warned_input_scale_ = true;
    }
    if (w.tensor.dtype == DType::kFp8E4M3) return with_scale(base, std::move(w));
    if (has(base + ".weight_scale"))
      return data_loss(m_.path + ": " + base + ".weight_scale given for a " + std::string(dtype_name(w.tensor.dtype)) +
                       " weight (scales go with F8_E4M3 weights)");
    Linear l;
    if (!o_.fp8_weights) {
      l.w = std::move(w);
      return l;
    }
    KILN_ASSIGN_OR_RETURN(Fp8Weights q, quantize_fp8_weights_cpu(w.tensor, o_.fp8_per_tensor));
    l.w = std::move(q.q);
    l.scale = std::move(q.scale);
    return l;
  }

  // Fuses linear weights along the output dim (q/k/v, gate/up); see decoder_weights.h.
  Result<Linear> fuse(std::vector<Linear> parts) {
    size_t fp8 = 0;
    for (const Linear& p : parts) fp8 += p.fp8();
    if (fp8 != 0 && fp8 != parts.size()) {
      log_warn(m_.path, ": fused weight mixes fp8 and ", dtype_name(m_.dtype), " parts; dequantizing the fp8 ones");
      for (Linear& p : parts) {
        if (!p.fp8()) continue;
        KILN_ASSIGN_OR_RETURN(p.w, dequantize(p, m_.dtype));
        p.scale = {};
      }
      fp8 = 0;
    }
    std::vector<const Tensor*> ws;
    for (const Linear& p : parts) ws.push_back(&p.w.tensor);
    Linear out;
    out.w = concat_rows(ws);
    if (fp8 == 0) return out;
    bool one_scale = true;
    for (const Linear& p : parts)
      one_scale = one_scale && p.scale.tensor.numel() == 1 && p.scale.tensor.ptr<float>()[0] == parts[0].scale.tensor.ptr<float>()[0];
    if (one_scale) {
      out.scale = std::move(parts[0].scale);
      return out;
    }
    out.scale = HostTensor::zeros(DType::kF32, {out.w.tensor.shape[0]});
    float* dst = out.scale.tensor.ptr<float>();
    for (const Linear& p : parts) {
      const int64_t rows = p.w.tensor.shape[0];
      const float* s = p.scale.tensor.ptr<float>();
      for (int64_t r = 0; r < rows; ++r) *dst++ = s[p.scale.tensor.numel() == 1 ? 0 : r];
    }
    return out;
  }

  // A per-layer fp8 KV cache scale (self_attn.k_scale / v_scale, or the older kv_scale).
  Result<float> kv_scale(const std::string& attn, const char* which) {
    float s = o_.kv_cache_scale;
    for (const std::string& name : {attn + which, attn + "kv_scale"}) {
      auto it = m_.weights.find(name);
      if (it == m_.weights.end()) continue;
      if (it->second.tensor.numel() != 1 || it->second.tensor.dtype != DType::kF32)
        return data_loss(m_.path + ": " + name + " must be one f32 number, got " + it->second.tensor.shape_string());
      s = it->second.tensor.ptr<float>()[0];
      break;
    }
    if (!(s > 0.0f) || !std::isfinite(s)) return data_loss(m_.path + ": " + attn + which + " = " + std::to_string(s) + " (must be > 0)");
    return s;
  }

 private:
  static std::string strip_weight(const std::string& name) {
    const std::string suffix = ".weight";
    return name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0
               ? name.substr(0, name.size() - suffix.size())
               : name;
  }

  // Attaches `<base>.weight_scale` to an fp8 weight, as [n] or [1].
  Result<Linear> with_scale(const std::string& base, HostTensor w) {
    const std::string name = base + ".weight_scale";
    auto it = m_.weights.find(name);
    if (it == m_.weights.end())
      return not_found(m_.path + ": fp8 weight " + base + ".weight has no " + name + " (per tensor or per output channel)");
    Linear l;
    l.w = std::move(w);
    l.scale = std::move(it->second);
    m_.weights.erase(it);
    const int64_t n = l.w.tensor.shape[0], numel = l.scale.tensor.numel();
    const bool column = l.scale.tensor.ndim == 1 || (l.scale.tensor.ndim == 2 && l.scale.tensor.shape[1] == 1);
    if (l.scale.tensor.dtype != DType::kF32 || !column || (numel != 1 && numel != n))
      return unimplemented(m_.path + ": " + name + " has shape " + l.scale.tensor.shape_string() + " for a weight of " +
                           std::to_string(n) + " rows (supported: [] or [1] per tensor, [n] or [n, 1] per channel; "
                           "block-wise fp8 is not implemented)");
    KILN_ASSIGN_OR_RETURN(l.scale.tensor, l.scale.tensor.reshape({numel}));
    const float* s = l.scale.tensor.ptr<float>();
    for (int64_t i = 0; i < numel; ++i)
      if (!(s[i] > 0.0f) || !std::isfinite(s[i])) return data_loss(m_.path + ": " + name + " holds a scale <= 0, inf or NaN");
    return l;
  }

  static std::string dims(std::initializer_list<int64_t> shape) {
    std::string s = "[";
    for (int64_t d : shape) s += (s.size() > 1 ? ", " : "") + std::to_string(d);
    return s + "]";
  }
  LoadedModel& m_;
  const ModelOptions& o_;
  bool warned_input_scale_ = false;
};

// Fuses `<prefix><name>.weight` for each name into w and scale.
Status fused(Gatherer& g, const std::string& prefix, const std::vector<std::pair<std::string, int64_t>>& parts,
             int64_t cols, HostTensor* w, HostTensor* scale) {
  std::vector<Linear> ls;
  for (const auto& [name, rows] : parts) {
    KILN_ASSIGN_OR_RETURN(Linear l, g.take_linear(prefix + name, rows, cols));
    ls.push_back(std::move(l));
  }
  KILN_ASSIGN_OR_RETURN(Linear f, g.fuse(std::move(ls)));
  *w = std::move(f.w);
  *scale = std::move(f.scale);
  return ok_status();
}

Status single(Gatherer& g, const std::string& base, int64_t rows, int64_t cols, HostTensor* w, HostTensor* scale) {
  KILN_ASSIGN_OR_RETURN(Linear l, g.take_linear(base, rows, cols));
  *w = std::move(l.w);
  *scale = std::move(l.scale);
  return ok_status();
}

Status gather_layer(Gatherer& g, const ModelConfig& c, int64_t l, LayerWeights& lw) {
  const std::string p = "model.layers." + std::to_string(l) + ".";
  const int64_t h = c.hidden_size, d = c.head_dim, q = c.num_q_heads * d, kv = c.num_kv_heads * d;
  KILN_ASSIGN_OR_RETURN(lw.attn_norm, g.take_dense(p + "input_layernorm.weight", {h}));
  KILN_ASSIGN_OR_RETURN(lw.ffn_norm, g.take_dense(p + "post_attention_layernorm.weight", {h}));
  const std::string a = p + "self_attn.";
  KILN_RETURN_IF_ERROR(fused(g, a, {{"q_proj", q}, {"k_proj", kv}, {"v_proj", kv}}, h, &lw.qkv, &lw.qkv_scale));
  if (c.attention_bias || g.has(a + "q_proj.bias")) {
    std::vector<HostTensor> b(3);
    KILN_ASSIGN_OR_RETURN(b[0], g.take_dense(a + "q_proj.bias", {q}));
    KILN_ASSIGN_OR_RETURN(b[1], g.take_dense(a + "k_proj.bias", {kv}));
    KILN_ASSIGN_OR_RETURN(b[2], g.take_dense(a + "v_proj.bias", {kv}));
    lw.qkv_bias = concat_rows({&b[0].tensor, &b[1].tensor, &b[2].tensor});
  }
  KILN_RETURN_IF_ERROR(single(g, a + "o_proj", h, q, &lw.o_proj, &lw.o_proj_scale));
  KILN_ASSIGN_OR_RETURN(lw.k_scale, g.kv_scale(a, "k_scale"));
  KILN_ASSIGN_OR_RETURN(lw.v_scale, g.kv_scale(a, "v_scale"));
  const int64_t inter = c.intermediate_size;
  if (c.num_experts == 0) {
    KILN_RETURN_IF_ERROR(fused(g, p + "mlp.", {{"gate_proj", inter}, {"up_proj", inter}}, h, &lw.gate_up, &lw.gate_up_scale));
    return single(g, p + "mlp.down_proj", h, inter, &lw.down, &lw.down_scale);
  }
  const std::string m = p + "block_sparse_moe.";
  KILN_ASSIGN_OR_RETURN(lw.router, g.take_dense(m + "gate.weight", {c.num_experts, h}));
  lw.experts.resize(static_cast<size_t>(c.num_experts));
  for (int64_t e = 0; e < c.num_experts; ++e) {
    const std::string x = m + "experts." + std::to_string(e) + ".";
    auto& ew = lw.experts[static_cast<size_t>(e)];
    KILN_RETURN_IF_ERROR(fused(g, x, {{"w1", inter}, {"w3", inter}}, h, &ew.gate_up, &ew.gate_up_scale));
    KILN_RETURN_IF_ERROR(single(g, x + "w2", h, inter, &ew.down, &ew.down_scale));
  }
  return ok_status();
}

// Every (weight, scale) pair of a layer, for the fp8 helpers below.
template <typename F>
Status for_each_linear(LayerWeights& lw, F&& f) {
  KILN_RETURN_IF_ERROR(f(lw.qkv, lw.qkv_scale));
  KILN_RETURN_IF_ERROR(f(lw.o_proj, lw.o_proj_scale));
  KILN_RETURN_IF_ERROR(f(lw.gate_up, lw.gate_up_scale));
  KILN_RETURN_IF_ERROR(f(lw.down, lw.down_scale));
  for (ExpertWeights& e : lw.experts) {
    KILN_RETURN_IF_ERROR(f(e.gate_up, e.gate_up_scale));
    KILN_RETURN_IF_ERROR(f(e.down, e.down_scale));
  }
  return ok_status();
}

}  // namespace

Result<DecoderWeights> build_decoder_weights(LoadedModel& loaded, const ModelOptions& options) {
  const ModelConfig& c = loaded.config;
  if (c.hidden_size <= 0 || c.num_layers <= 0 || c.num_q_heads <= 0 || c.num_kv_heads <= 0 ||
      c.head_dim <= 0 || c.vocab_size <= 0 || c.num_q_heads % c.num_kv_heads != 0 || c.head_dim % 2 != 0)
    return invalid_argument(loaded.path + ": inconsistent model config (hidden " + std::to_string(c.hidden_size) +
                            ", heads " + std::to_string(c.num_q_heads) + "/" + std::to_string(c.num_kv_heads) +
                            ", head_dim " + std::to_string(c.head_dim) + ")");
  if (!(options.kv_cache_scale > 0.0f) || !std::isfinite(options.kv_cache_scale))
    return invalid_argument("kv cache scale " + std::to_string(options.kv_cache_scale) + " (must be > 0)");
  Gatherer g(loaded, options);
  DecoderWeights w;
  KILN_ASSIGN_OR_RETURN(w.embed, g.take_dense("model.embed_tokens.weight", {c.vocab_size, c.hidden_size}));
  KILN_ASSIGN_OR_RETURN(w.norm, g.take_dense("model.norm.weight", {c.hidden_size}));
  w.tied = !g.has("lm_head.weight");
  if (w.tied && !c.tie_word_embeddings)
    return not_found(loaded.path + ": missing tensor lm_head.weight (tie_word_embeddings is false)");
  if (!w.tied) {
    KILN_ASSIGN_OR_RETURN(w.lm_head, g.take_dense("lm_head.weight", {c.vocab_size, c.hidden_size}));
  }
  // The layer count is the config's word; the checkpoint must hold the last layer before it sizes anything.
  const std::string last = "model.layers." + std::to_string(c.num_layers - 1) + ".";
  auto it = loaded.weights.lower_bound(last);
  if (it == loaded.weights.end() || it->first.compare(0, last.size(), last) != 0)
    return not_found(loaded.path + ": the config gives " + std::to_string(c.num_layers) + " layers but there is no " +
                     last + "* tensor");
  w.layers.resize(static_cast<size_t>(c.num_layers));
  for (int64_t l = 0; l < c.num_layers; ++l) KILN_RETURN_IF_ERROR(gather_layer(g, c, l, w.layers[static_cast<size_t>(l)]));
  return w;
}

bool has_fp8_weights(const DecoderWeights& w) {
  bool any = false;
  for (const LayerWeights& l : w.layers) {
    (void)for_each_linear(const_cast<LayerWeights&>(l), [&](HostTensor& t, HostTensor&) {
      any = any || t.tensor.dtype == DType::kFp8E4M3;
      return ok_status();
    });
  }
  return any;
}

Status dequantize_fp8_weights(DecoderWeights& w, DType dtype) {
  for (LayerWeights& l : w.layers) {
    KILN_RETURN_IF_ERROR(for_each_linear(l, [&](HostTensor& t, HostTensor& scale) -> Status {
      if (t.tensor.dtype != DType::kFp8E4M3) return ok_status();
      Linear fp8{std::move(t), std::move(scale)};
      KILN_ASSIGN_OR_RETURN(t, dequantize(fp8, dtype));
      scale = {};
      return ok_status();
    }));
  }
  return ok_status();
}

}  // namespace kiln
