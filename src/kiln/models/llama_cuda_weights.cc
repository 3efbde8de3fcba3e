// Uploading a checkpoint to the GPU as bf16, or making random weights there.
#ifdef KILN_WITH_CUDA
#include "kiln/models/llama_cuda_weights.h"

#include <cmath>

#include "kiln/core/log.h"
#include "kiln/kernels/quantize.h"
#include "kiln/kernels/random_fill.h"

namespace kiln {
namespace {

// bf16 on the device, except fp8 weights (kept as they are).
Result<DeviceTensor> upload(const HostTensor& h) {
  if (h.tensor.empty()) return DeviceTensor{};
  return to_device(h.tensor, h.tensor.dtype == DType::kFp8E4M3 ? DType::kFp8E4M3 : DType::kBF16);
}
Result<DeviceTensor> upload_scale(const HostTensor& h) {
  if (h.tensor.empty()) return DeviceTensor{};
  return to_device(h.tensor, DType::kF32);
}

Result<DeviceTensor> random_tensor(std::initializer_list<int64_t> shape, uint64_t seed, float scale, float offset) {
  KILN_ASSIGN_OR_RETURN(DeviceTensor t, DeviceTensor::empty(DType::kBF16, shape));
  KILN_RETURN_IF_ERROR(random_fill_cuda({t.tensor, seed, scale, offset}, nullptr));
  return t;
}

// A linear weight [n, k]: random bf16, or (fp8) random bf16 in `tmp` quantized per output row.
struct LinearMaker {
  bool fp8 = false;
  bool per_tensor = false;
  DeviceBuffer tmp;
  Status make(int64_t n, int64_t k, uint64_t seed, float scale, DeviceTensor* w, DeviceTensor* w_scale) {
    if (!fp8) {
      KILN_ASSIGN_OR_RETURN(*w, random_tensor({n, k}, seed, scale, 0.f));
      return ok_status();
    }
    const int64_t bytes = n * k * 2;
    if (tmp.size() < bytes) {
      tmp = DeviceBuffer{};
      KILN_ASSIGN_OR_RETURN(tmp, DeviceBuffer::alloc(bytes));
    }
    const Tensor src = Tensor::view(tmp.data(), DType::kBF16, {n, k}, Device::kCuda);
    KILN_RETURN_IF_ERROR(random_fill_cuda({src, seed, scale, 0.f}, nullptr));
    KILN_ASSIGN_OR_RETURN(*w, DeviceTensor::empty(DType::kFp8E4M3, {n, k}));
    KILN_ASSIGN_OR_RETURN(*w_scale, DeviceTensor::empty(DType::kF32, {per_tensor ? 1 : n}));
    KILN_RETURN_IF_ERROR(quantize_fp8_cuda({src, w->tensor, w_scale->tensor}, nullptr));
    return cuda_synchronize();  // tmp is reused by the next matrix
  }
};

}  // namespace

// The grouped GEMM's per-expert views (and scales, for fp8 experts).
Status link_expert_views(CudaLayerWeights& l) {
  l.expert_gate_up.clear();
  l.expert_down.clear();
  l.expert_gate_up_scale.clear();
  l.expert_down_scale.clear();
  std::vector<int64_t> ptrs[4];
  for (const CudaExpertWeights& e : l.experts) {
    l.expert_gate_up.push_back(e.gate_up.tensor);
    l.expert_down.push_back(e.down.tensor);
    if (!e.gate_up_scale.tensor.empty()) l.expert_gate_up_scale.push_back(e.gate_up_scale.tensor);
    if (!e.down_scale.tensor.empty()) l.expert_down_scale.push_back(e.down_scale.tensor);
    ptrs[0].push_back(reinterpret_cast<int64_t>(e.gate_up.tensor.data));
    ptrs[1].push_back(reinterpret_cast<int64_t>(e.down.tensor.data));
    ptrs[2].push_back(reinterpret_cast<int64_t>(e.gate_up_scale.tensor.data));
    ptrs[3].push_back(reinterpret_cast<int64_t>(e.down_scale.tensor.data));
  }
  if (l.experts.empty()) return ok_status();
  DeviceTensor* tables[4] = {&l.gate_up_ptrs, &l.down_ptrs, &l.gate_up_scale_ptrs, &l.down_scale_ptrs};
  for (int i = 0; i < 4; ++i) {
    if (i >= 2 && l.expert_gate_up_scale.size() != l.experts.size()) break;  // bf16 experts: no scale tables
    const Tensor host = Tensor::view(ptrs[i].data(), DType::kInt64, {static_cast<int64_t>(ptrs[i].size())});
    KILN_ASSIGN_OR_RETURN(*tables[i], to_device(host));
  }
  return ok_status();
}

Result<CudaDecoderWeights> upload_decoder_weights(const DecoderWeights& host) {
  CudaDecoderWeights w;
  KILN_ASSIGN_OR_RETURN(w.embed, upload(host.embed));
  KILN_ASSIGN_OR_RETURN(w.norm, upload(host.norm));
  if (!host.tied) {
    KILN_ASSIGN_OR_RETURN(w.lm_head, upload(host.lm_head));
  }
  for (const LayerWeights& hl : host.layers) {
    CudaLayerWeights l;
    KILN_ASSIGN_OR_RETURN(l.attn_norm, upload(hl.attn_norm));
    KILN_ASSIGN_OR_RETURN(l.ffn_norm, upload(hl.ffn_norm));
    KILN_ASSIGN_OR_RETURN(l.qkv, upload(hl.qkv));
    KILN_ASSIGN_OR_RETURN(l.qkv_bias, upload(hl.qkv_bias));
    KILN_ASSIGN_OR_RETURN(l.o_proj, upload(hl.o_proj));
    KILN_ASSIGN_OR_RETURN(l.gate_up, upload(hl.gate_up));
    KILN_ASSIGN_OR_RETURN(l.down, upload(hl.down));
    KILN_ASSIGN_OR_RETURN(l.router, upload(hl.router));
    KILN_ASSIGN_OR_RETURN(l.qkv_scale, upload_scale(hl.qkv_scale));
    KILN_ASSIGN_OR_RETURN(l.o_proj_scale, upload_scale(hl.o_proj_scale));
    KILN_ASSIGN_OR_RETURN(l.gate_up_scale, upload_scale(hl.gate_up_scale));
    KILN_ASSIGN_OR_RETURN(l.down_scale, upload_scale(hl.down_scale));
    l.k_scale = hl.k_scale;
    l.v_scale = hl.v_scale;
    for (const ExpertWeights& he : hl.experts) {
      CudaExpertWeights e;
      KILN_ASSIGN_OR_RETURN(e.gate_up, upload(he.gate_up));
      KILN_ASSIGN_OR_RETURN(e.down, upload(he.down));
      KILN_ASSIGN_OR_RETURN(e.gate_up_scale, upload_scale(he.gate_up_scale));
      KILN_ASSIGN_OR_RETURN(e.down_scale, upload_scale(he.down_scale));
      l.experts.push_back(std::move(e));
    }
    KILN_RETURN_IF_ERROR(link_expert_views(l));
    w.layers.push_back(std::move(l));
  }
  return w;
}

Result<CudaDecoderWeights> dummy_decoder_weights(const ModelConfig& c, uint64_t seed, const ModelOptions& options) {
  LinearMaker lin;
  lin.fp8 = options.fp8_weights;
  lin.per_tensor = options.fp8_per_tensor;
  const int64_t h = c.hidden_size, d = c.head_dim, q = c.num_q_heads * d, kv = c.num_kv_heads * d;
  const int64_t inter = c.intermediate_size;
  const float sh = 1.0f / std::sqrt(static_cast<float>(h)), si = 1.0f / std::sqrt(static_cast<float>(inter));
  CudaDecoderWeights w;
  KILN_ASSIGN_OR_RETURN(w.embed, random_tensor({c.vocab_size, h}, seed++, 1.0f, 0.f));
  KILN_ASSIGN_OR_RETURN(w.norm, random_tensor({h}, seed++, 0.f, 1.f));
  if (!c.tie_word_embeddings) {
    KILN_ASSIGN_OR_RETURN(w.lm_head, random_tensor({c.vocab_size, h}, seed++, sh, 0.f));
  }
  for (int64_t i = 0; i < c.num_layers; ++i) {
    if (i % 8 == 0) log_info("dummy weights: layer ", i, " / ", c.num_layers);
    CudaLayerWeights l;
    KILN_ASSIGN_OR_RETURN(l.attn_norm, random_tensor({h}, seed++, 0.f, 1.f));
    KILN_ASSIGN_OR_RETURN(l.ffn_norm, random_tensor({h}, seed++, 0.f, 1.f));
    l.k_scale = l.v_scale = options.kv_cache_scale;
    KILN_RETURN_IF_ERROR(lin.make(q + 2 * kv, h, seed++, sh, &l.qkv, &l.qkv_scale));
    if (c.attention_bias) {
      KILN_ASSIGN_OR_RETURN(l.qkv_bias, random_tensor({q + 2 * kv}, seed++, 0.1f, 0.f));
    }
    KILN_RETURN_IF_ERROR(lin.make(h, q, seed++, 1.0f / std::sqrt(static_cast<float>(q)), &l.o_proj, &l.o_proj_scale));
    if (c.num_experts == 0) {
      KILN_RETURN_IF_ERROR(lin.make(2 * inter, h, seed++, sh, &l.gate_up, &l.gate_up_scale));
      KILN_RETURN_IF_ERROR(lin.make(h, inter, seed++, si, &l.down, &l.down_scale));
    } else {
      KILN_ASSIGN_OR_RETURN(l.router, random_tensor({c.num_experts, h}, seed++, sh, 0.f));
      for (int64_t e = 0; e < c.num_experts; ++e) {
        CudaExpertWeights ew;
        KILN_RETURN_IF_ERROR(lin.make(2 * inter, h, seed++, sh, &ew.gate_up, &ew.gate_up_scale));
        KILN_RETURN_IF_ERROR(lin.make(h, inter, seed++, si, &ew.down, &ew.down_scale));
        l.experts.push_back(std::move(ew));
      }
      KILN_RETURN_IF_ERROR(link_expert_views(l));
    }
    w.layers.push_back(std::move(l));
  }
  KILN_RETURN_IF_ERROR(cuda_synchronize());
  return w;
}

}  // namespace kiln
#endif
