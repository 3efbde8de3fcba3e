// ModelFlops against sums worked out by hand for a tiny config.
#include "kiln/bench/model_flops.h"

#include <gtest/gtest.h>

namespace kiln::bench {
namespace {

ModelConfig tiny() {
  ModelConfig c;
  c.num_layers = 2;
  c.hidden_size = 8;
  c.intermediate_size = 16;
  c.num_q_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 4;
  c.vocab_size = 10;
  return c;
}

TEST(ModelFlops, DenseByHand) {
  const ModelConfig c = tiny();
  // per layer: qkv 8*(2+2)*4 = 128, o 2*4*8 = 64, mlp 3*8*16 = 384 -> 576; x 2 layers x 2 FLOPs.
  EXPECT_DOUBLE_EQ(linear_flops_per_token(c), 2304);
  EXPECT_DOUBLE_EQ(attention_flops(c, 2), 4.0 * 2 * 2 * 4 * 3);
  const RequestFlops f = request_flops(c, 3, 2);
  // prefill: 3 tokens x 2304 + LM head 2*8*10 + attention 64 * (1 + 2 + 3)
  EXPECT_DOUBLE_EQ(f.prefill, 3 * 2304 + 160 + 64 * 6);
  // one decode step at position 3: 2304 + 160 + 64 * 4
  EXPECT_DOUBLE_EQ(f.decode, 2304 + 160 + 64 * 4);
  EXPECT_DOUBLE_EQ(request_flops(c, 3, 1).decode, 0);
  EXPECT_DOUBLE_EQ(request_flops(c, 0, 5).prefill, 0);
}

TEST(ModelFlops, SlidingWindowCapsKeys) {
  ModelConfig c = tiny();
  c.sliding_window = 2;
  EXPECT_DOUBLE_EQ(attention_flops(c, 10), 64.0 * 2);
  // keys 1, 2, 2 for the prompt; 2, 2 for two decode steps
  const RequestFlops f = request_flops(c, 3, 3);
  EXPECT_DOUBLE_EQ(f.prefill, 3 * 2304 + 160 + 64 * 5);
  EXPECT_DOUBLE_EQ(f.decode, 2 * (2304 + 160) + 64 * 4);
}

TEST(ModelFlops, MoeCountsTopKExpertsAndRouter) {
  ModelConfig c = tiny();
  c.num_experts = 4;
  c.num_experts_per_tok = 2;
  // per layer: attention 192 + 2 experts x 384 + router 8*4 = 992
  EXPECT_DOUBLE_EQ(linear_flops_per_token(c), 2 * 2 * 992);
  EXPECT_DOUBLE_EQ(linear_flops_per_token(c, 3), 2 * 2 * (192 + 3 * 384 + 32));
}

}  // namespace
}  // namespace kiln::bench
