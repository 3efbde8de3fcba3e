// check_config_bounds through both config readers: absurd sizes, NaN or negative epsilons, rope
// theta <= 0 and rope factor 0 in config.json and in GGUF metadata are data_loss errors naming the
// file and the field; hidden_act other than silu is unimplemented.
#include "kiln/io/config_bounds.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "gguf_test_writer.h"
#include "kiln/io/model_loader.h"

namespace kiln {
namespace {

using nlohmann::json;

json tiny_hf_config() {
  return json::parse(R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 100, "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu"})");
}

// The message of parsing j (json text, so NaN can be written as a bare token); "" when it parses.
std::string hf_error(const std::string& text) {
  Result<ModelConfig> c = parse_hf_config(text, "dir/config.json");
  return c.ok() ? "" : c.status().to_string();
}

void expect_hf_error(json j, const std::string& key, const std::string& raw_value, const std::string& want) {
  j[key] = "@VALUE@";
  std::string text = j.dump();
  text.replace(text.find("\"@VALUE@\""), 9, raw_value);
  const std::string error = hf_error(text);
  EXPECT_NE(error.find("dir/config.json"), std::string::npos) << key << "=" << raw_value << " -> '" << error << "'";
  EXPECT_NE(error.find(want), std::string::npos) << key << "=" << raw_value << " -> '" << error << "'";
}

TEST(ConfigBounds, HfValidConfigParses) { EXPECT_EQ(hf_error(tiny_hf_config().dump()), ""); }

TEST(ConfigBounds, HfAbsurdSizes) {
  const json base = tiny_hf_config();
  expect_hf_error(base, "num_hidden_layers", "1e9", "num_hidden_layers is 1000000000");
  expect_hf_error(base, "num_hidden_layers", "4294967295", "num_hidden_layers");
  expect_hf_error(base, "num_hidden_layers", "1e300", "num_hidden_layers");
  expect_hf_error(base, "hidden_size", "1073741824", "hidden_size");
  expect_hf_error(base, "intermediate_size", "1099511627776", "intermediate_size");
  expect_hf_error(base, "vocab_size", "1e12", "vocab_size");
  expect_hf_error(base, "num_key_value_heads", "8", "num_key_value_heads");  // more KV heads than query heads
  expect_hf_error(base, "max_position_embeddings", "-5", "max_position_embeddings");
  expect_hf_error(base, "head_dim", "1048576", "head_dim");
}

TEST(ConfigBounds, HfBadFloats) {
  const json base = tiny_hf_config();
  expect_hf_error(base, "rms_norm_eps", "NaN", "");  // not JSON: a parse error, still named
  expect_hf_error(base, "rms_norm_eps", "-1e-5", "rms_norm_eps is -1e-05");
  expect_hf_error(base, "rms_norm_eps", "0", "rms_norm_eps");
  expect_hf_error(base, "rms_norm_eps", "1e300", "rms_norm_eps is inf");  // float overflow
  expect_hf_error(base, "rope_theta", "0", "rope_theta");
  expect_hf_error(base, "rope_theta", "-10000", "rope_theta");
  expect_hf_error(base, "rope_scaling", R"({"rope_type": "linear", "factor": 0})", "rope_scaling.factor");
  expect_hf_error(base, "rope_scaling",
                  R"({"rope_type": "llama3", "factor": 8, "low_freq_factor": 4, "high_freq_factor": 4})",
                  "low_freq_factor");
  expect_hf_error(base, "rope_scaling",
                  R"({"rope_type": "llama3", "factor": 8, "original_max_position_embeddings": -1})",
                  "original_max_position_embeddings");
}

TEST(ConfigBounds, HfHiddenActMustBeSilu) {
  json j = tiny_hf_config();
  j["hidden_act"] = "swish";
  EXPECT_EQ(hf_error(j.dump()), "");
  j.erase("hidden_act");
  EXPECT_EQ(hf_error(j.dump()), "");
  for (const char* act : {"gelu", "gelu_pytorch_tanh", "relu"}) {
    j["hidden_act"] = act;
    Result<ModelConfig> c = parse_hf_config(j.dump(), "dir/config.json");
    ASSERT_FALSE(c.ok()) << act;
    EXPECT_EQ(c.status().code(), StatusCode::kUnimplemented);
    EXPECT_NE(c.status().message().find(std::string("hidden_act '") + act + "'"), std::string::npos) << c.status().message();
  }
  j["hidden_act"] = 3;
  EXPECT_NE(hf_error(j.dump()).find("'hidden_act' must be a string"), std::string::npos);
}

using Overrides = std::vector<std::pair<std::string, io_test::GgufTestValue>>;

// The message of reading the GGUF metadata of a tiny llama with some keys replaced; "" when it reads.
std::string gguf_error(const Overrides& overrides) {
  std::map<std::string, io_test::GgufTestValue> kv = {
      {"general.architecture", io_test::str("llama")},
      {"llama.block_count", io_test::u32(2)},
      {"llama.context_length", io_test::u32(256)},
      {"llama.embedding_length", io_test::u32(8)},
      {"llama.feed_forward_length", io_test::u32(32)},
      {"llama.attention.head_count", io_test::u32(2)},
      {"llama.attention.head_count_kv", io_test::u32(1)},
      {"llama.rope.freq_base", io_test::f32v(10000.f)},
      {"llama.attention.layer_norm_rms_epsilon", io_test::f32v(1e-6f)},
      {"llama.vocab_size", io_test::u32(5)},
  };
  for (const auto& [key, value] : overrides) kv.insert_or_assign(key, value);
  io_test::GgufTestWriter w;
  for (const auto& [k, v] : kv) w.add(k, v);
  const io_test::TempDir tmp("config_bounds");
  w.write(tmp.path + "/m.gguf");
  Result<GgufFile> g = GgufFile::open(tmp.path + "/m.gguf");
  if (!g.ok()) return "open: " + g.status().to_string();
  Result<ModelConfig> c = config_from_gguf(*g);
  if (c.ok()) return "";
  EXPECT_NE(c.status().message().find("m.gguf"), std::string::npos) << c.status().message();
  return c.status().to_string();
}

TEST(ConfigBounds, Gguf) {
  EXPECT_EQ(gguf_error({}), "");
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::pair<std::string, io_test::GgufTestValue> cases[] = {
      {"llama.block_count", io_test::u32(0xFFFFFFFFu)},
      {"llama.block_count", io_test::scalar(GgufValueType::kUint64, uint64_t{1} << 40)},
      {"llama.embedding_length", io_test::u32(1u << 30)},
      {"llama.feed_forward_length", io_test::u32(0xFFFFFFFFu)},
      {"llama.vocab_size", io_test::u32(0xFFFFFFFFu)},
      {"llama.context_length", io_test::scalar(GgufValueType::kUint64, uint64_t{1} << 40)},
      {"llama.attention.layer_norm_rms_epsilon", io_test::f32v(nan)},
      {"llama.attention.layer_norm_rms_epsilon", io_test::f32v(-1e-6f)},
      {"llama.rope.freq_base", io_test::f32v(0.f)},
      {"llama.rope.freq_base", io_test::f32v(nan)},
  };
  for (const auto& c : cases) {
    const std::string error = gguf_error({c});
    EXPECT_NE(error.find(c.first), std::string::npos) << c.first << " -> '" << error << "'";
  }
  // 2048 heads of 64 fit the hidden size but not the head limit.
  std::string error = gguf_error({{"llama.embedding_length", io_test::u32(2048 * 64)},
                                  {"llama.attention.head_count", io_test::u32(2048)},
                                  {"llama.attention.head_count_kv", io_test::u32(2048)}});
  EXPECT_NE(error.find("llama.attention.head_count is 2048"), std::string::npos) << error;
  // Linear rope scaling: factor 1 by default, 0 and NaN rejected.
  EXPECT_EQ(gguf_error({{"llama.rope.scaling.type", io_test::str("linear")}}), "");
  for (float factor : {0.f, -2.f, nan}) {
    error = gguf_error({{"llama.rope.scaling.type", io_test::str("linear")}, {"llama.rope.scaling.factor", io_test::f32v(factor)}});
    EXPECT_NE(error.find("llama.rope.scaling.factor"), std::string::npos) << factor << " -> '" << error << "'";
  }
}

}  // namespace
}  // namespace kiln
