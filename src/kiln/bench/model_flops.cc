// ModelFlops: closed forms of the sums in model_flops.h.
#include "kiln/bench/model_flops.h"

#include <algorithm>

namespace kiln::bench {

double linear_flops_per_token(const ModelConfig& c, int64_t moe_top_k) {
  const double h = static_cast<double>(c.hidden_size), d = static_cast<double>(c.head_dim);
  const double hq = static_cast<double>(c.num_q_heads), hkv = static_cast<double>(c.num_kv_heads);
  const double attn = h * (hq + 2 * hkv) * d + hq * d * h;
  const double mlp = 3 * h * static_cast<double>(c.intermediate_size);
  double ffn = mlp;
  if (c.num_experts > 0) {
    const int64_t k = moe_top_k > 0 ? moe_top_k : c.num_experts_per_tok;
    ffn = static_cast<double>(k) * mlp + h * static_cast<double>(c.num_experts);
  }
  return 2.0 * static_cast<double>(c.num_layers) * (attn + ffn);
}

double attention_flops(const ModelConfig& c, int64_t pos) {
  int64_t keys = pos + 1;
  if (c.sliding_window > 0) keys = std::min(keys, c.sliding_window);
  // QK^T and PV: 2 matmuls x 2 FLOPs x head_dim per (query head, key).
  return 4.0 * static_cast<double>(c.num_layers * c.num_q_heads * c.head_dim) * static_cast<double>(keys);
}

namespace {
// Sum of attention_flops over positions [a, b).
double attention_flops_range(const ModelConfig& c, int64_t a, int64_t b) {
  if (b <= a) return 0;
  const double per_key = 4.0 * static_cast<double>(c.num_layers * c.num_q_heads * c.head_dim);
  const int64_t w = c.sliding_window > 0 ? c.sliding_window : b + 1;
  // keys(pos) = min(pos + 1, w): a triangle up to pos = w - 1, then flat at w.
  const int64_t tri_end = std::min(b, w);  // positions [a, tri_end) are in the triangle
  double keys = 0;
  if (tri_end > a) keys += (static_cast<double>(a + 1 + tri_end) * static_cast<double>(tri_end - a)) / 2.0;
  const int64_t flat_begin = std::max(a, tri_end);
  if (b > flat_begin) keys += static_cast<double>(w) * static_cast<double>(b - flat_begin);
  return per_key * keys;
}
}  // namespace

RequestFlops request_flops(const ModelConfig& c, int64_t prompt_tokens, int64_t output_tokens, int64_t moe_top_k) {
  const double lin = linear_flops_per_token(c, moe_top_k);
  const double head = 2.0 * static_cast<double>(c.hidden_size) * static_cast<double>(c.vocab_size);
  RequestFlops f;
  if (prompt_tokens <= 0) return f;
  f.prefill = lin * static_cast<double>(prompt_tokens) + head + attention_flops_range(c, 0, prompt_tokens);
  const int64_t steps = std::max<int64_t>(0, output_tokens - 1);  // the last token is never fed back
  f.decode = (lin + head) * static_cast<double>(steps) + attention_flops_range(c, prompt_tokens, prompt_tokens + steps);
  return f;
}

}  // namespace kiln::bench
