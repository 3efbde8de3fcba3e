// parse_quantization_config: vLLM fp8, compressed-tensors fp8 (channel / tensor, KV scheme), the
// configs `kiln quantize` writes, and clear Unimplemented errors for everything else.
#include "kiln/io/quantization_config.h"

#include <gtest/gtest.h>

namespace kiln {
namespace {

Result<QuantizationConfig> parse(const std::string& q) {
  return parse_quantization_config(R"({"hidden_size": 4, "quantization_config": )" + q + "}", "cfg.json");
}

void expect_unimplemented(const std::string& q, const std::string& words) {
  auto c = parse(q);
  ASSERT_FALSE(c.ok()) << q;
  EXPECT_EQ(c.status().code(), StatusCode::kUnimplemented) << c.status().to_string();
  EXPECT_NE(c.status().message().find(words), std::string::npos) << c.status().to_string();
  EXPECT_NE(c.status().message().find("cfg.json"), std::string::npos) << c.status().to_string();
}

TEST(QuantizationConfig, NoneWhenAbsentOrNull) {
  auto a = parse_quantization_config(R"({"hidden_size": 4})", "x");
  ASSERT_TRUE(a.ok());
  EXPECT_FALSE(a->fp8());
  auto b = parse("null");
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(b->fp8());
}

TEST(QuantizationConfig, VllmFp8) {
  auto c = parse(R"({"quant_method": "fp8", "activation_scheme": "static", "ignored_layers": ["lm_head"]})");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->method, QuantizationConfig::Method::kFp8);
  EXPECT_TRUE(c->static_activations);
  EXPECT_EQ(c->ignored, std::vector<std::string>{"lm_head"});
}

TEST(QuantizationConfig, CompressedTensorsFp8Dynamic) {
  auto c = parse(R"({"quant_method": "compressed-tensors", "format": "float-quantized", "ignore": ["lm_head"],
    "config_groups": {"group_0": {"targets": ["Linear"],
      "weights": {"num_bits": 8, "type": "float", "strategy": "channel", "dynamic": false, "symmetric": true},
      "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": true}}},
    "kv_cache_scheme": {"num_bits": 8, "type": "float", "strategy": "tensor", "dynamic": false}})");
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->method, QuantizationConfig::Method::kCompressedTensors);
  EXPECT_TRUE(c->per_channel);
  EXPECT_FALSE(c->static_activations);
  EXPECT_TRUE(c->kv_cache_fp8);
}

TEST(QuantizationConfig, WrittenConfigsReadBack) {
  for (bool per_channel : {false, true}) {
    for (bool kv : {false, true}) {
      auto c = parse(fp8_quantization_config_json(per_channel, kv));
      ASSERT_TRUE(c.ok()) << c.status().to_string();
      EXPECT_TRUE(c->fp8());
      EXPECT_EQ(c->per_channel, per_channel);
      EXPECT_EQ(c->method, per_channel ? QuantizationConfig::Method::kCompressedTensors : QuantizationConfig::Method::kFp8);
      if (per_channel) {
        EXPECT_EQ(c->kv_cache_fp8, kv);
      }
    }
  }
}

TEST(QuantizationConfig, ClearErrorsForTheRest) {
  expect_unimplemented(R"({"quant_method": "fp8", "weight_block_size": [128, 128]})", "block-wise");
  expect_unimplemented(R"({"quant_method": "fp8", "fmt": "e5m2"})", "e5m2");
  expect_unimplemented(R"({"quant_method": "gptq", "bits": 4})", "gptq");
  expect_unimplemented(R"({"quant_method": "awq"})", "supported: fp8, compressed-tensors");
  expect_unimplemented(R"({"quant_method": "compressed-tensors", "format": "pack-quantized",
    "config_groups": {"g": {"weights": {"num_bits": 4, "type": "int", "strategy": "group"}}}})", "pack-quantized");
  expect_unimplemented(R"({"quant_method": "compressed-tensors", "format": "float-quantized",
    "config_groups": {"g": {"weights": {"num_bits": 8, "type": "float", "strategy": "block"}}}})", "strategy 'block'");
  expect_unimplemented(R"({"quant_method": "compressed-tensors", "format": "naive-quantized",
    "config_groups": {"g": {"weights": {"num_bits": 8, "type": "int", "strategy": "channel"}}}})", "8-bit int");
  auto bad = parse(R"({"quant_method": "compressed-tensors"})");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss);
  auto not_obj = parse("[1]");
  EXPECT_FALSE(not_obj.ok());
}

}  // namespace
}  // namespace kiln
