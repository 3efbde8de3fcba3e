// LlamaModel forward on the CPU. Per layer:
//   h = rmsnorm(residual)             (fused with residual += previous sublayer output)
//   qkv = h @ Wqkv^T (+ bias); RoPE(q, k); K, V -> paged cache; attn = paged_attention(q)
//   x = attn @ Wo^T; h = rmsnorm(residual += x)
//   x = ffn(h)  (SwiGLU MLP, or Mixtral MoE)
#include "kiln/models/llama.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>

#include "kiln/kernels/activation.h"
#include "kiln/kernels/attention.h"
#include "kiln/kernels/embedding.h"
#include "kiln/kernels/linear.h"
#include "kiln/kernels/quantize.h"
#include "kiln/kernels/rmsnorm.h"
#include "kiln/kernels/rope.h"
#include "kiln/models/mixtral.h"

namespace kiln {
namespace {
Tensor i32_view(const std::vector<int32_t>& v) {
  return Tensor::view(const_cast<int32_t*>(v.data()), DType::kInt32, {static_cast<int64_t>(v.size())});
}

// x, or x rounded to fp8 per token into scratch (ModelOptions::fp8_activations).
Result<Tensor> fp8_input(const Tensor& x, bool on, HostTensor& scratch) {
  if (!on) return x;
  scratch = HostTensor::zeros(DType::kF32, {x.shape[0], x.shape[1]});
  KILN_RETURN_IF_ERROR(fp8_round_trip_cpu(x, scratch.tensor, false));
  return scratch.tensor;
}
}  // namespace

LlamaModel::LlamaModel(ModelConfig config, DecoderWeights weights, const ModelOptions& options)
    : config_(std::move(config)), w_(std::move(weights)), options_(options) {
  inv_freq_ = rope_inv_freq(config_.head_dim, config_.rope_theta, config_.rope_scaling);
}

Status LlamaModel::attention_block(const LayerWeights& lw, int64_t layer, const ForwardBatch& batch,
                                   const KvCacheView& kv, const Tensor& h, Tensor out) {
  const ModelConfig& c = config_;
  const int64_t n = h.shape[0], d = c.head_dim, hq = c.num_q_heads, hkv = c.num_kv_heads;
  const int64_t width = (hq + 2 * hkv) * d;
  HostTensor qkv = HostTensor::zeros(DType::kF32, {n, width});
  HostTensor scratch;
  KILN_RETURN_IF_ERROR(observe(layer, LinearInput::kQkv, h));
  KILN_ASSIGN_OR_RETURN(const Tensor hq8, fp8_input(h, fp8_act(), scratch));
  KILN_RETURN_IF_ERROR(linear_cpu({hq8, lw.qkv.tensor, lw.qkv_bias.tensor, qkv.tensor, {}}));
  HostTensor q = HostTensor::zeros(DType::kF32, {n, hq, d});
  HostTensor k = HostTensor::zeros(DType::kF32, {n, hkv, d});
  HostTensor v = HostTensor::zeros(DType::kF32, {n, hkv, d});
  for (int64_t t = 0; t < n; ++t) {
    const float* row = qkv.tensor.ptr<float>() + t * width;
    std::memcpy(q.tensor.ptr<float>() + t * hq * d, row, static_cast<size_t>(hq * d) * 4);
    std::memcpy(k.tensor.ptr<float>() + t * hkv * d, row + hq * d, static_cast<size_t>(hkv * d) * 4);
    std::memcpy(v.tensor.ptr<float>() + t * hkv * d, row + (hq + hkv) * d, static_cast<size_t>(hkv * d) * 4);
  }
  const Tensor inv_freq = Tensor::view(inv_freq_.data(), DType::kF32, {static_cast<int64_t>(inv_freq_.size())});
  const Tensor& k_cache = kv.k[static_cast<size_t>(layer)];
  const Tensor& v_cache = kv.v[static_cast<size_t>(layer)];
  // fp8 caches hold fp8(x / scale); f32 caches ignore the scales (kept at 1).
  const float k_scale = options_.fp8_kv_cache ? lw.k_scale : 1.0f, v_scale = options_.fp8_kv_cache ? lw.v_scale : 1.0f;
  KILN_RETURN_IF_ERROR(rope_kv_write_cpu({q.tensor, k.tensor, v.tensor, i32_view(batch.positions), inv_freq,
                                          i32_view(batch.slot_mapping), k_cache, v_cache, k_scale, v_scale, {},
                                          options_.hadamard_keys(d)}));
  HostTensor attn = HostTensor::zeros(DType::kF32, {n, hq, d});
  PagedAttentionArgs pa{q.tensor, k_cache, v_cache, i32_view(batch.cu_seqlens_q), i32_view(batch.kv_lens),
                        Tensor::view(const_cast<int32_t*>(batch.block_tables.data()), DType::kInt32,
                                     {static_cast<int64_t>(batch.kv_lens.size()), batch.max_blocks_per_seq}),
                        attn.tensor, 1.0f / std::sqrt(static_cast<float>(d)), c.sliding_window, k_scale, v_scale};
  KILN_RETURN_IF_ERROR(paged_attention_cpu(pa));
  KILN_ASSIGN_OR_RETURN(Tensor attn2d, attn.tensor.reshape({n, hq * d}));
  KILN_RETURN_IF_ERROR(observe(layer, LinearInput::kOProj, attn2d));
  KILN_ASSIGN_OR_RETURN(const Tensor attn8, fp8_input(attn2d, fp8_act(), scratch));
  return linear_cpu({attn8, lw.o_proj.tensor, {}, out, {}});
}

Status LlamaModel::ffn_block(const LayerWeights& lw, int64_t layer, const Tensor& h, Tensor out) {
  if (!lw.experts.empty()) {
    const int64_t k = options_.moe_top_k > 0 ? options_.moe_top_k : config_.num_experts_per_tok;
    if (!observer_) return mixtral_moe_cpu(lw, k, config_.norm_topk_prob, h, out, fp8_act());
    const MoeExpertObserver each = [&](int64_t expert, bool down, const Tensor& x) {
      return observer_(layer, down ? LinearInput::kExpertDown : LinearInput::kExpertGateUp, expert, x);
    };
    return mixtral_moe_cpu(lw, k, config_.norm_topk_prob, h, out, fp8_act(), each);
  }
  const int64_t n = h.shape[0], inter = lw.down.tensor.shape[1];
  HostTensor gate_up = HostTensor::zeros(DType::kF32, {n, 2 * inter});
  HostTensor act = HostTensor::zeros(DType::kF32, {n, inter});
  HostTensor scratch;
  KILN_RETURN_IF_ERROR(observe(layer, LinearInput::kGateUp, h));
  KILN_ASSIGN_OR_RETURN(const Tensor h8, fp8_input(h, fp8_act(), scratch));
  KILN_RETURN_IF_ERROR(linear_cpu({h8, lw.gate_up.tensor, {}, gate_up.tensor, {}}));
  KILN_RETURN_IF_ERROR(silu_mul_cpu({gate_up.tensor, act.tensor}));
  KILN_RETURN_IF_ERROR(observe(layer, LinearInput::kDown, act.tensor));
  if (fp8_act()) KILN_RETURN_IF_ERROR(fp8_round_trip_cpu(act.tensor, act.tensor, false));
  return linear_cpu({act.tensor, lw.down.tensor, {}, out, {}});
}

Result<KvCacheView> LlamaModel::allocate_kv_cache(int64_t num_blocks, int64_t block_size) {
  const ModelConfig& c = config_;
  const DType dtype = kv_cache_dtype();
  KILN_RETURN_IF_ERROR(check_kv_cache_fits(c, dtype, num_blocks, block_size));
  auto storage = std::make_shared<std::vector<HostTensor>>();
  KvCacheView view;
  try {
    for (int64_t l = 0; l < c.num_layers; ++l) {
      for (int kv = 0; kv < 2; ++kv) {
        storage->push_back(HostTensor::zeros(dtype, {num_blocks, block_size, c.num_kv_heads, c.head_dim}));
        (kv == 0 ? view.k : view.v).push_back(storage->back().tensor);
      }
    }
  } catch (const std::bad_alloc&) {
    return resource_exhausted("out of host memory for a KV cache of " + std::to_string(num_blocks) + " blocks");
  }
  view.owner = storage;
  return view;
}

int64_t LlamaModel::kv_block_bytes(int64_t block_size) const {
  const ModelConfig& c = config_;
  return dtype_bytes(kv_cache_dtype(), 2 * c.num_layers * block_size * c.num_kv_heads * c.head_dim);
}

Status LlamaModel::forward(const ForwardBatch& batch, const KvCacheView& kv, Tensor logits) {
  const ModelConfig& c = config_;
  const int64_t n = static_cast<int64_t>(batch.token_ids.size()), hidden = c.hidden_size;
  if (n == 0 || batch.positions.size() != batch.token_ids.size() || batch.slot_mapping.size() != batch.token_ids.size() ||
      static_cast<int64_t>(kv.k.size()) != c.num_layers)
    return invalid_argument("forward: empty batch or inconsistent batch / cache sizes");
  const int64_t rows = static_cast<int64_t>(batch.logits_rows.size());
  if (logits.shape[0] != rows || logits.shape[1] != c.vocab_size || logits.dtype != DType::kF32)
    return invalid_argument("forward: logits must be f32 [" + std::to_string(rows) + ", " + std::to_string(c.vocab_size) + "]");
  HostTensor residual = HostTensor::zeros(DType::kF32, {n, hidden});
  HostTensor h = HostTensor::zeros(DType::kF32, {n, hidden});
  HostTensor x = HostTensor::zeros(DType::kF32, {n, hidden});
  KILN_RETURN_IF_ERROR(embedding_cpu({i32_view(batch.token_ids), w_.embed.tensor, residual.tensor}));
  KILN_RETURN_IF_ERROR(rmsnorm_cpu({residual.tensor, {}, w_.layers[0].attn_norm.tensor, h.tensor, c.rms_norm_eps}));
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& lw = w_.layers[static_cast<size_t>(l)];
    KILN_RETURN_IF_ERROR(attention_block(lw, l, batch, kv, h.tensor, x.tensor));
    KILN_RETURN_IF_ERROR(rmsnorm_cpu({x.tensor, residual.tensor, lw.ffn_norm.tensor, h.tensor, c.rms_norm_eps}));
    KILN_RETURN_IF_ERROR(ffn_block(lw, l, h.tensor, x.tensor));
    const Tensor& next_norm = l + 1 < c.num_layers ? w_.layers[static_cast<size_t>(l + 1)].attn_norm.tensor : w_.norm.tensor;
    KILN_RETURN_IF_ERROR(rmsnorm_cpu({x.tensor, residual.tensor, next_norm, h.tensor, c.rms_norm_eps}));
  }
  HostTensor selected = HostTensor::zeros(DType::kF32, {rows, hidden});
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t row = batch.logits_rows[static_cast<size_t>(r)];
    if (row < 0 || row >= n) return invalid_argument("forward: logits row out of range");
    std::memcpy(selected.tensor.ptr<float>() + r * hidden, h.tensor.ptr<float>() + row * hidden, static_cast<size_t>(hidden) * 4);
  }
  return linear_cpu({selected.tensor, w_.lm_head_view(), {}, logits, {}});
}

}  // namespace kiln
