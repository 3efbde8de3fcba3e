// collect_input_hessians: prefill each window once with an observer on the linear inputs.
#include "kiln/eval/input_hessians.h"

#include <algorithm>
#include <numeric>
#include <tuple>

#include "kiln/models/llama.h"

namespace kiln::eval {
namespace {

// The HF weights reading each LlamaModel linear input.
std::vector<std::string> weight_names(int64_t layer, LinearInput which, int64_t expert) {
  const std::string p = "model.layers." + std::to_string(layer) + ".";
  const std::string x = p + "block_sparse_moe.experts." + std::to_string(expert) + ".";
  switch (which) {
    case LinearInput::kQkv:
      return {p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight"};
    case LinearInput::kOProj:
      return {p + "self_attn.o_proj.weight"};
    case LinearInput::kGateUp:
      return {p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"};
    case LinearInput::kDown:
      return {p + "mlp.down_proj.weight"};
    case LinearInput::kExpertGateUp:
      return {x + "w1.weight", x + "w3.weight"};
    case LinearInput::kExpertDown:
      return {x + "w2.weight"};
  }
  return {};
}

}  // namespace

Result<InputHessians> collect_input_hessians(Model& model, const std::vector<int32_t>& tokens, int64_t window,
                                             const std::function<void(int64_t, int64_t)>& progress) {
  auto* llama = dynamic_cast<LlamaModel*>(&model);
  if (!llama) return unimplemented("input Hessians: only the CPU Llama-family model can be observed");
  const ModelConfig& c = model.config();
  const int64_t n = static_cast<int64_t>(tokens.size()), bs = 16;
  if (n == 0 || window <= 0) return invalid_argument("input Hessians: no tokens");
  window = std::min<int64_t>(window, c.max_position_embeddings);
  const int64_t blocks = (window + bs - 1) / bs;
  KILN_ASSIGN_OR_RETURN(KvCacheView kv, model.allocate_kv_cache(blocks, bs));
  InputHessians out;
  std::map<std::tuple<int64_t, int, int64_t>, std::shared_ptr<InputHessian>> by_input;
  llama->set_linear_input_observer([&](int64_t layer, LinearInput which, int64_t expert, const Tensor& x) -> Status {
    auto& h = by_input[{layer, static_cast<int>(which), expert}];
    if (!h) {
      h = std::make_shared<InputHessian>(x.shape[1]);
      for (const std::string& name : weight_names(layer, which, expert)) out[name] = h;
    }
    return h->add(x);
  });
  HostTensor logits = HostTensor::zeros(DType::kF32, {1, c.vocab_size});
  Status status = ok_status();
  for (int64_t begin = 0; begin < n && status.ok(); begin += window) {
    const int64_t len = std::min(n - begin, window);
    ForwardBatch b;
    b.token_ids.assign(tokens.begin() + begin, tokens.begin() + begin + len);
    b.positions.resize(static_cast<size_t>(len));
    std::iota(b.positions.begin(), b.positions.end(), 0);
    b.slot_mapping = b.positions;
    b.cu_seqlens_q = {0, static_cast<int32_t>(len)};
    b.kv_lens = {static_cast<int32_t>(len)};
    b.max_blocks_per_seq = static_cast<int32_t>(blocks);
    b.block_tables.resize(static_cast<size_t>(blocks));
    std::iota(b.block_tables.begin(), b.block_tables.end(), 0);
    b.logits_rows = {static_cast<int32_t>(len - 1)};
    status = model.forward(b, kv, logits.tensor);
    if (progress) progress(begin + len, n);
  }
  llama->set_linear_input_observer({});
  KILN_RETURN_IF_ERROR(status);
  return out;
}

}  // namespace kiln::eval
