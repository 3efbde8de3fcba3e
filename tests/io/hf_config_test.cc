// parse_hf_config: one real-looking config per architecture, and bad input.
#include <gtest/gtest.h>

#include "kiln/io/model_loader.h"

namespace kiln {
namespace {

const char* kLlama3 = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
  "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 131072,
  "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "attention_bias": false, "tie_word_embeddings": false,
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "torch_dtype": "bfloat16"
})";

const char* kMistral = R"({
  "architectures": ["MistralForCausalLM"], "vocab_size": 32000, "hidden_size": 4096,
  "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
  "num_key_value_heads": 8, "head_dim": null, "max_position_embeddings": 32768, "rms_norm_eps": 1e-05,
  "rope_theta": 10000.0, "sliding_window": 4096, "bos_token_id": 1, "eos_token_id": 2
})";

const char* kQwen2 = R"({
  "architectures": ["Qwen2ForCausalLM"], "vocab_size": 151936, "hidden_size": 896,
  "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
  "num_key_value_heads": 2, "max_position_embeddings": 32768, "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0, "sliding_window": 32768, "use_sliding_window": false,
  "tie_word_embeddings": true, "rope_scaling": null, "bos_token_id": 151643, "eos_token_id": 151645
})";

const char* kMixtral = R"({
  "architectures": ["MixtralForCausalLM"], "vocab_size": 32000, "hidden_size": 4096,
  "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
  "num_key_value_heads": 8, "max_position_embeddings": 32768, "rms_norm_eps": 1e-05,
  "rope_theta": 1000000.0, "sliding_window": null, "num_local_experts": 8, "num_experts_per_tok": 2,
  "bos_token_id": 1, "eos_token_id": 2
})";

TEST(HfConfig, Llama3) {
  Result<ModelConfig> c = parse_hf_config(kLlama3, "llama/config.json");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->arch, Arch::kLlama);
  EXPECT_EQ(c->vocab_size, 128256);
  EXPECT_EQ(c->hidden_size, 4096);
  EXPECT_EQ(c->intermediate_size, 14336);
  EXPECT_EQ(c->num_layers, 32);
  EXPECT_EQ(c->num_q_heads, 32);
  EXPECT_EQ(c->num_kv_heads, 8);
  EXPECT_EQ(c->head_dim, 128);
  EXPECT_EQ(c->max_position_embeddings, 131072);
  EXPECT_FLOAT_EQ(c->rms_norm_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c->rope_theta, 500000.f);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_FLOAT_EQ(c->rope_scaling.factor, 8.f);
  EXPECT_FLOAT_EQ(c->rope_scaling.low_freq_factor, 1.f);
  EXPECT_FLOAT_EQ(c->rope_scaling.high_freq_factor, 4.f);
  EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_FALSE(c->attention_bias);
  EXPECT_EQ(c->sliding_window, 0);
  EXPECT_EQ(c->num_experts, 0);
  EXPECT_EQ(c->bos_token_id, 128000);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
}

TEST(HfConfig, Mistral) {
  Result<ModelConfig> c = parse_hf_config(kMistral, "m.json");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->arch, Arch::kMistral);
  EXPECT_EQ(c->head_dim, 128);  // null -> hidden / heads
  EXPECT_EQ(c->sliding_window, 4096);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kNone);
  EXPECT_EQ(c->eos_token_ids, (std::vector<int64_t>{2}));
}

TEST(HfConfig, Qwen2) {
  Result<ModelConfig> c = parse_hf_config(kQwen2, "q.json");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->arch, Arch::kQwen2);
  EXPECT_EQ(c->head_dim, 64);
  EXPECT_TRUE(c->attention_bias);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_EQ(c->sliding_window, 0);  // use_sliding_window false
  EXPECT_FLOAT_EQ(c->rope_theta, 1e6f);
  EXPECT_FLOAT_EQ(c->rms_norm_eps, 1e-6f);
}

TEST(HfConfig, Mixtral) {
  Result<ModelConfig> c = parse_hf_config(kMixtral, "x.json");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->arch, Arch::kMixtral);
  EXPECT_EQ(c->num_experts, 8);
  EXPECT_EQ(c->num_experts_per_tok, 2);
  EXPECT_TRUE(c->norm_topk_prob);
  EXPECT_EQ(c->sliding_window, 0);
  EXPECT_EQ(c->intermediate_size, 14336);
}

TEST(HfConfig, ModelTypeDefaultsAndExplicitHeadDim) {
  Result<ModelConfig> c = parse_hf_config(R"({"model_type": "llama", "vocab_size": 100, "hidden_size": 64,
      "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "head_dim": 32,
      "attention_bias": true, "rope_scaling": {"type": "linear", "factor": 2.0}})", "c.json");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->arch, Arch::kLlama);
  EXPECT_EQ(c->num_kv_heads, 4);  // defaults to the query heads
  EXPECT_EQ(c->head_dim, 32);
  EXPECT_TRUE(c->attention_bias);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLinear);
  EXPECT_FLOAT_EQ(c->rope_scaling.factor, 2.f);
  EXPECT_FLOAT_EQ(c->rope_theta, 10000.f);
  EXPECT_EQ(c->bos_token_id, -1);
  EXPECT_TRUE(c->eos_token_ids.empty());

  // transformers 5 keeps rope_theta in rope_parameters.
  c = parse_hf_config(R"({"model_type": "qwen2", "vocab_size": 100, "hidden_size": 64,
      "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
      "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}})", "c.json");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_FLOAT_EQ(c->rope_theta, 1e6f);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kNone);

  // ... and the llama3 scaling fields too, without a rope_scaling key.
  c = parse_hf_config(R"({"model_type": "llama", "vocab_size": 100, "hidden_size": 64,
      "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
      "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                          "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 8192}})", "c.json");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_FLOAT_EQ(c->rope_theta, 5e5f);
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_FLOAT_EQ(c->rope_scaling.factor, 32.f);
}

void expect_error(const std::string& json, StatusCode code, const std::string& fragment) {
  Result<ModelConfig> c = parse_hf_config(json, "dir/config.json");
  ASSERT_FALSE(c.ok()) << json;
  EXPECT_EQ(c.status().code(), code) << c.status().to_string();
  EXPECT_NE(c.status().message().find("dir/config.json"), std::string::npos) << c.status().message();
  EXPECT_NE(c.status().message().find(fragment), std::string::npos) << c.status().message();
}

TEST(HfConfig, BadInput) {
  expect_error("{\"vocab_size\": 1,", StatusCode::kDataLoss, "malformed JSON");
  expect_error("[1, 2]", StatusCode::kDataLoss, "not a JSON object");
  expect_error(R"({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"})", StatusCode::kUnimplemented,
               "GPT2LMHeadModel");
  std::string base = kLlama3;
  auto without = [&](const std::string& key) {
    std::string s = base;
    const size_t at = s.find("\"" + key + "\"");
    s.replace(at, key.size() + 2, "\"x_" + key + "\"");
    return s;
  };
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads"}) {
    expect_error(without(key), StatusCode::kNotFound, std::string("missing required config key '") + key + "'");
  }
  std::string wrong = base;
  wrong.replace(wrong.find("4096"), 4, "\"4096\"");
  expect_error(wrong, StatusCode::kDataLoss, "'hidden_size' must be an integer");
  std::string rope = base;
  rope.replace(rope.find("\"llama3\""), 8, "\"yarn\"");
  expect_error(rope, StatusCode::kUnimplemented, "yarn");
  std::string heads = base;
  heads.replace(heads.find("\"num_key_value_heads\": 8"), 24, "\"num_key_value_heads\": 5");
  expect_error(heads, StatusCode::kDataLoss, "multiple");
  std::string eos = base;
  eos.replace(eos.find("[128001"), 7, "[\"a\"");
  expect_error(eos, StatusCode::kDataLoss, "eos_token_id");
}

}  // namespace
}  // namespace kiln
