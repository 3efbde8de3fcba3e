// load_model / config_from_gguf: tiny HF directories (single and sharded), synthetic GGUF files
// (llama with permuted Q/K, qwen2, Mixtral with stacked experts), and the real SmolLM2 GGUF
// against rows dumped from transformers (scripts/make_io_fixtures.py).
#include "kiln/io/model_loader.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>

#include "gguf_test_writer.h"
#include "kiln/io/safetensors.h"

namespace kiln {
namespace {

using io_test::Bytes;
using io_test::GgufTestWriter;

void write_text(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

std::vector<float> to_f32(const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  EXPECT_TRUE(convert(t.data, t.dtype, out.data(), DType::kF32, t.numel()).ok());
  return out;
}

std::vector<float> iota(int64_t n, float scale) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = static_cast<float>(i) * scale - 1.f;
  return v;
}

// ---- Hugging Face directories ----------------------------------------------------------------

const char* kTinyConfig = R"({"architectures": ["LlamaForCausalLM"], "vocab_size": 6, "hidden_size": 4,
  "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
  "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2})";

TEST(ModelLoader, HfDirectory) {
  const io_test::TempDir tmp("hf_dir");
  const std::string& dir = tmp.path;
  write_text(dir + "/config.json", kTinyConfig);
  std::vector<uint16_t> embed(24);
  for (size_t i = 0; i < embed.size(); ++i) embed[i] = f32_to_bf16(static_cast<float>(i) * 0.5f);
  std::vector<float> norm = {1.f, 2.f, 3.f, 4.f};
  std::vector<int64_t> ids = {0, 1};
  ASSERT_TRUE(write_safetensors(dir + "/model.safetensors",
                                {{"model.embed_tokens.weight", Tensor::view(embed.data(), DType::kBF16, {6, 4})},
                                 {"model.norm.weight", Tensor::view(norm.data(), DType::kF32, {4})},
                                 {"lm_head.weight", Tensor::view(embed.data(), DType::kBF16, {6, 4})},
                                 {"position_ids", Tensor::view(ids.data(), DType::kInt64, {2})}})
                  .ok());
  int64_t last_done = 0, last_total = 0;
  Result<LoadedModel> m = load_model(dir, DType::kF16, [&](int64_t d, int64_t t) { last_done = d, last_total = t; });
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_EQ(m->hf_dir, dir);
  EXPECT_EQ(m->gguf, nullptr);
  EXPECT_EQ(m->config.num_kv_heads, 1);
  EXPECT_EQ(last_done, last_total);
  EXPECT_GT(last_total, 0);
  EXPECT_EQ(m->find("lm_head.weight"), nullptr);  // tied
  EXPECT_EQ(m->find("position_ids"), nullptr);    // not a weight
  const Tensor* e = m->find("model.embed_tokens.weight");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->dtype, DType::kF16);
  EXPECT_EQ(e->shape_string(), "[6, 4] f16 cpu");
  EXPECT_EQ(to_f32(*e)[23], 11.5f);
  EXPECT_EQ(to_f32(*m->find("model.norm.weight")), norm);
}

TEST(ModelLoader, HfShardedDirectory) {
  const io_test::TempDir tmp("hf_sharded");
  const std::string& dir = tmp.path;
  write_text(dir + "/config.json", kTinyConfig);
  std::vector<float> a = iota(24, 1.f), b = {1.f, 2.f, 3.f, 4.f};
  ASSERT_TRUE(write_safetensors(dir + "/model-00001-of-00002.safetensors",
                                {{"model.embed_tokens.weight", Tensor::view(a.data(), DType::kF32, {6, 4})}})
                  .ok());
  ASSERT_TRUE(write_safetensors(dir + "/model-00002-of-00002.safetensors",
                                {{"model.norm.weight", Tensor::view(b.data(), DType::kF32, {4})}})
                  .ok());
  write_text(dir + "/model.safetensors.index.json", R"({"metadata": {"total_size": 112}, "weight_map": {
    "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
    "model.norm.weight": "model-00002-of-00002.safetensors"}})");
  Result<LoadedModel> m = load_model(dir, DType::kBF16);
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_EQ(m->weights.size(), 2u);
  EXPECT_EQ(to_f32(*m->find("model.norm.weight")), b);

  // The index names a tensor that no shard holds.
  write_text(dir + "/model.safetensors.index.json", R"({"weight_map": {
    "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
    "model.layers.0.mlp.up_proj.weight": "model-00002-of-00002.safetensors",
    "model.norm.weight": "model-00002-of-00002.safetensors"}})");
  m = load_model(dir, DType::kBF16);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
  EXPECT_NE(m.status().message().find("model.layers.0.mlp.up_proj.weight"), std::string::npos);

  // A missing shard.
  write_text(dir + "/model.safetensors.index.json", R"({"weight_map": {
    "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
    "model.norm.weight": "model-00003-of-00002.safetensors"}})");
  m = load_model(dir, DType::kBF16);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
  EXPECT_NE(m.status().message().find("model-00003-of-00002.safetensors"), std::string::npos) << m.status().message();

  write_text(dir + "/model.safetensors.index.json", R"({"weight_map": 3})");
  EXPECT_EQ(load_model(dir, DType::kBF16).status().code(), StatusCode::kDataLoss);
}

TEST(ModelLoader, HfDirectoryErrors) {
  const io_test::TempDir tmp("hf_errors");
  const std::string& dir = tmp.path;
  Result<LoadedModel> m = load_model(dir, DType::kF32);
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
  EXPECT_NE(m.status().message().find(dir + "/config.json"), std::string::npos);
  write_text(dir + "/config.json", kTinyConfig);
  m = load_model(dir, DType::kF32);
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
  EXPECT_NE(m.status().message().find("model.safetensors"), std::string::npos);
  write_text(dir + "/model.safetensors", "garbage");
  m = load_model(dir, DType::kF32);
  EXPECT_EQ(m.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(m.status().message().find(dir + "/model.safetensors"), std::string::npos);
  EXPECT_EQ(load_model(dir + "/nope", DType::kF32).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(load_model(dir, DType::kInt8).status().code(), StatusCode::kInvalidArgument);
}

// The checked-in tiny transformers checkpoints (tests/golden, scripts/make_golden.py).
TEST(ModelLoader, GoldenHfCheckpoints) {
  struct Golden {
    const char* dir;
    Arch arch;
    int64_t layers;
    bool tied;
    bool bias;
    int64_t experts;
  };
  const Golden kGolden[] = {{"llama3", Arch::kLlama, 2, false, false, 0},
                            {"llama_tied_sharded", Arch::kLlama, 3, true, false, 0},
                            {"qwen2", Arch::kQwen2, 2, true, true, 0},
                            {"mistral", Arch::kMistral, 2, false, false, 0},
                            {"mixtral", Arch::kMixtral, 2, false, false, 4}};
  for (const Golden& g : kGolden) {
    SCOPED_TRACE(g.dir);
    const std::string dir = std::string(KILN_SOURCE_DIR) + "/tests/golden/" + g.dir;
    if (!std::ifstream(dir + "/config.json").good()) continue;
    Result<LoadedModel> m = load_model(dir, DType::kBF16);
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    const ModelConfig& c = m->config;
    EXPECT_EQ(c.arch, g.arch);
    EXPECT_EQ(c.num_layers, g.layers);
    EXPECT_EQ(c.vocab_size, 320);
    EXPECT_EQ(c.hidden_size, 64);
    EXPECT_EQ(c.num_q_heads, 4);
    EXPECT_EQ(c.num_kv_heads, 2);
    EXPECT_EQ(c.head_dim, 16);
    EXPECT_EQ(c.tie_word_embeddings, g.tied);
    EXPECT_EQ(c.attention_bias, g.bias);
    EXPECT_EQ(c.num_experts, g.experts);
    EXPECT_EQ(c.sliding_window, 0);
    if (c.arch == Arch::kLlama && !g.tied) {
      EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kLlama3);
      EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 64);
    }
    const int64_t per_layer = 4 + 2 + (g.bias ? 3 : 0) + (g.experts ? 1 + 3 * g.experts : 3);
    EXPECT_EQ(static_cast<int64_t>(m->weights.size()), 2 + (g.tied ? 0 : 1) + g.layers * per_layer);
    EXPECT_EQ(m->find("model.layers.0.self_attn.k_proj.weight")->shape_string(), "[32, 64] bf16 cpu");
  }
}

// ---- synthetic GGUF --------------------------------------------------------------------------

// llama.cpp's HF -> GGUF permutation of Q/K rows: w.reshape(n_head, 2, hd/2, in).swapaxes(1, 2).
std::vector<float> permute_for_gguf(const std::vector<float>& w, int64_t n_head, int64_t rows, int64_t cols) {
  std::vector<float> out(w.size());
  const int64_t hd = rows / n_head, half = hd / 2;
  for (int64_t h = 0; h < n_head; ++h) {
    for (int64_t j = 0; j < half; ++j) {
      for (int64_t s = 0; s < 2; ++s) {
        for (int64_t c = 0; c < cols; ++c) {
          out[static_cast<size_t>((h * hd + 2 * j + s) * cols + c)] = w[static_cast<size_t>((h * hd + s * half + j) * cols + c)];
        }
      }
    }
  }
  return out;
}

// hidden 8, 2 query heads of 4, 1 KV head, ff 32, vocab 5, 1 layer.
struct TinyGguf {
  std::vector<float> q = iota(8 * 8, 0.01f), k = iota(4 * 8, 0.1f), v = iota(4 * 8, 0.2f), o = iota(64, 0.3f);
  std::vector<float> embd = iota(5 * 8, 0.5f), norm = iota(8, 1.f), q_bias = iota(8, 2.f);
  GgufTestWriter w;

  explicit TinyGguf(const std::string& arch, bool permute) {
    w.add("general.architecture", io_test::str(arch));
    w.add(arch + ".block_count", io_test::u32(1));
    w.add(arch + ".context_length", io_test::u32(256));
    w.add(arch + ".embedding_length", io_test::u32(8));
    w.add(arch + ".feed_forward_length", io_test::u32(32));
    w.add(arch + ".attention.head_count", io_test::u32(2));
    w.add(arch + ".attention.head_count_kv", io_test::u32(1));
    w.add(arch + ".rope.freq_base", io_test::f32v(500000.f));
    w.add(arch + ".attention.layer_norm_rms_epsilon", io_test::f32v(1e-6f));
    w.add(arch + ".rope.dimension_count", io_test::u32(4));
    w.add("tokenizer.ggml.tokens", io_test::array(GgufValueType::kString, {io_test::str("a"), io_test::str("b"),
                                   io_test::str("c"), io_test::str("d"), io_test::str("e")}));
    w.add("tokenizer.ggml.bos_token_id", io_test::u32(1));
    w.add("tokenizer.ggml.eos_token_id", io_test::u32(2));
    w.add_f32_tensor("token_embd.weight", {8, 5}, embd);
    w.add_f32_tensor("blk.0.attn_norm.weight", {8}, norm);
    w.add_f32_tensor("blk.0.attn_q.weight", {8, 8}, permute ? permute_for_gguf(q, 2, 8, 8) : q);
    w.add_f32_tensor("blk.0.attn_q.bias", {8}, permute ? permute_for_gguf(q_bias, 2, 8, 1) : q_bias);
    w.add_f32_tensor("blk.0.attn_k.weight", {8, 4}, permute ? permute_for_gguf(k, 1, 4, 8) : k);
    w.add_f32_tensor("blk.0.attn_v.weight", {8, 4}, v);
    w.add_f32_tensor("blk.0.attn_output.weight", {8, 8}, o);
    w.add_f32_tensor("blk.0.ffn_norm.weight", {8}, norm);
    w.add_f32_tensor("output_norm.weight", {8}, norm);
    w.add_f32_tensor("rope_freqs.weight", {2}, {1.f, 1.f});  // no scaling
  }
};

TEST(ModelLoader, GgufLlamaUnpermutesQk) {
  const io_test::TempDir tmp("gguf_llama");
  const std::string& dir = tmp.path;
  TinyGguf g("llama", /*permute=*/true);
  g.w.add_f32_tensor("blk.0.ffn_gate.weight", {8, 32}, iota(256, 0.1f));
  g.w.add_f32_tensor("blk.0.ffn_up.weight", {8, 32}, iota(256, 0.2f));
  g.w.add_f32_tensor("blk.0.ffn_down.weight", {32, 8}, iota(256, 0.3f));
  g.w.write(dir + "/tiny.gguf");
  Result<LoadedModel> m = load_model(dir + "/tiny.gguf", DType::kF32);
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  const ModelConfig& c = m->config;
  EXPECT_EQ(c.arch, Arch::kLlama);
  EXPECT_EQ(c.num_layers, 1);
  EXPECT_EQ(c.hidden_size, 8);
  EXPECT_EQ(c.intermediate_size, 32);
  EXPECT_EQ(c.num_q_heads, 2);
  EXPECT_EQ(c.num_kv_heads, 1);
  EXPECT_EQ(c.head_dim, 4);
  EXPECT_EQ(c.vocab_size, 5);  // from tokenizer.ggml.tokens
  EXPECT_EQ(c.max_position_embeddings, 256);
  EXPECT_FLOAT_EQ(c.rope_theta, 500000.f);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-6f);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{2}));
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kNone);
  ASSERT_NE(m->gguf, nullptr);
  EXPECT_TRUE(m->hf_dir.empty());

  EXPECT_EQ(m->weights.size(), 12u);  // rope_freqs skipped, no lm_head
  EXPECT_EQ(m->find("lm_head.weight"), nullptr);
  const Tensor* q = m->find("model.layers.0.self_attn.q_proj.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->shape_string(), "[8, 8] f32 cpu");
  EXPECT_EQ(to_f32(*q), g.q);
  EXPECT_EQ(to_f32(*m->find("model.layers.0.self_attn.q_proj.bias")), g.q_bias);
  EXPECT_EQ(to_f32(*m->find("model.layers.0.self_attn.k_proj.weight")), g.k);
  EXPECT_EQ(to_f32(*m->find("model.layers.0.self_attn.v_proj.weight")), g.v);
  EXPECT_EQ(m->find("model.layers.0.self_attn.v_proj.weight")->shape_string(), "[4, 8] f32 cpu");
  EXPECT_EQ(to_f32(*m->find("model.layers.0.self_attn.o_proj.weight")), g.o);
  EXPECT_EQ(to_f32(*m->find("model.embed_tokens.weight")), g.embd);
  for (const char* n : {"model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight",
                        "model.norm.weight", "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight"}) {
    EXPECT_NE(m->find(n), nullptr) << n;
  }
  EXPECT_EQ(m->find("model.layers.0.mlp.down_proj.weight")->shape_string(), "[8, 32] f32 cpu");
}

TEST(ModelLoader, GgufQwen2KeepsQkAndHasBias) {
  const io_test::TempDir tmp("gguf_qwen2");
  const std::string& dir = tmp.path;
  TinyGguf g("qwen2", /*permute=*/false);
  g.w.add_f32_tensor("output.weight", {8, 5}, g.embd);
  g.w.write(dir + "/q.gguf");
  Result<LoadedModel> m = load_model(dir + "/q.gguf", DType::kBF16);
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_EQ(m->config.arch, Arch::kQwen2);
  EXPECT_TRUE(m->config.attention_bias);
  EXPECT_FALSE(m->config.tie_word_embeddings);
  ASSERT_NE(m->find("lm_head.weight"), nullptr);
  const Tensor* q = m->find("model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(q->dtype, DType::kBF16);
  std::vector<float> want(g.q.size());
  for (size_t i = 0; i < want.size(); ++i) want[i] = bf16_to_f32(f32_to_bf16(g.q[i]));
  EXPECT_EQ(to_f32(*q), want);
}

TEST(ModelLoader, GgufMixtralSplitsStackedExperts) {
  const io_test::TempDir tmp("gguf_mixtral");
  const std::string& dir = tmp.path;
  TinyGguf g("llama", /*permute=*/true);
  g.w.add("llama.expert_count", io_test::u32(2));
  g.w.add("llama.expert_used_count", io_test::u32(1));
  g.w.add_f32_tensor("blk.0.ffn_gate_inp.weight", {8, 2}, iota(16, 1.f));
  const std::vector<float> gate = iota(2 * 32 * 8, 0.25f), up = iota(2 * 32 * 8, 0.5f);
  g.w.add_f32_tensor("blk.0.ffn_gate_exps.weight", {8, 32, 2}, gate);
  g.w.add_f32_tensor("blk.0.ffn_up_exps.weight", {8, 32, 2}, up);
  // down: [2 experts, 8 rows, 32 cols] in Q8_0, one block per row: expert e, row r -> d = e + 1, q_i = r + i.
  Bytes down;
  for (int e = 0; e < 2; ++e) {
    for (int r = 0; r < 8; ++r) {
      io_test::put(down, f32_to_f16(static_cast<float>(e + 1)));
      for (int i = 0; i < 32; ++i) down.push_back(static_cast<uint8_t>(r + i));
    }
  }
  g.w.add_tensor("blk.0.ffn_down_exps.weight", {32, 8, 2}, GgmlType::kQ8_0, down);
  g.w.write(dir + "/x.gguf");
  Result<LoadedModel> m = load_model(dir + "/x.gguf", DType::kF32);
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  EXPECT_EQ(m->config.arch, Arch::kMixtral);
  EXPECT_EQ(m->config.num_experts, 2);
  EXPECT_EQ(m->config.num_experts_per_tok, 1);
  EXPECT_EQ(m->find("model.layers.0.block_sparse_moe.gate.weight")->shape_string(), "[2, 8] f32 cpu");
  for (int e = 0; e < 2; ++e) {
    const std::string p = "model.layers.0.block_sparse_moe.experts." + std::to_string(e) + ".";
    const Tensor* w1 = m->find(p + "w1.weight");
    const Tensor* w2 = m->find(p + "w2.weight");
    const Tensor* w3 = m->find(p + "w3.weight");
    ASSERT_TRUE(w1 && w2 && w3) << p;
    EXPECT_EQ(w1->shape_string(), "[32, 8] f32 cpu");
    EXPECT_EQ(w2->shape_string(), "[8, 32] f32 cpu");
    EXPECT_EQ(to_f32(*w1), std::vector<float>(gate.begin() + e * 256, gate.begin() + (e + 1) * 256));
    EXPECT_EQ(to_f32(*w3), std::vector<float>(up.begin() + e * 256, up.begin() + (e + 1) * 256));
    const std::vector<float> d = to_f32(*w2);
    for (int r = 0; r < 8; ++r) {
      for (int i = 0; i < 32; ++i) ASSERT_EQ(d[static_cast<size_t>(r * 32 + i)], static_cast<float>((e + 1) * (r + i)));
    }
  }
  EXPECT_EQ(m->find("model.layers.0.mlp.gate_proj.weight"), nullptr);
}

// llama.cpp's convert_hf_to_gguf.py (LlamaModel.generate_extra_tensors) in float32.
std::vector<float> llama_cpp_rope_freqs(float theta, int dim, float factor, float low, float high, float old_ctx) {
  std::vector<float> out;
  for (int i = 0; i < dim; i += 2) {
    const float freq = 1.f / std::pow(theta, static_cast<float>(i) / static_cast<float>(dim));
    const double wavelen = 2 * 3.141592653589793 / freq;
    if (wavelen < old_ctx / high) {
      out.push_back(1.f);
    } else if (wavelen > old_ctx / low) {
      out.push_back(factor);
    } else {
      const double smooth = (old_ctx / wavelen - low) / (high - low);
      out.push_back(static_cast<float>(1 / ((1 - smooth) / factor + smooth)));
    }
  }
  return out;
}

Result<ModelConfig> config_with_rope_freqs(const std::string& path, const std::vector<float>& freqs) {
  GgufTestWriter w;
  w.add("general.architecture", io_test::str("llama"));
  w.add("llama.block_count", io_test::u32(1));
  w.add("llama.embedding_length", io_test::u32(256));
  w.add("llama.feed_forward_length", io_test::u32(512));
  w.add("llama.attention.head_count", io_test::u32(2));
  w.add("llama.rope.freq_base", io_test::f32v(500000.f));
  w.add("llama.vocab_size", io_test::u32(10));
  w.add_f32_tensor("rope_freqs.weight", {freqs.size()}, freqs);
  w.write(path);
  Result<GgufFile> g = GgufFile::open(path);
  if (!g.ok()) return g.status();
  return config_from_gguf(*g);
}

TEST(ModelLoader, GgufLlama3RopeFreqs) {
  const io_test::TempDir tmp("gguf_rope_freqs");
  const std::string& dir = tmp.path;
  for (auto [factor, old_ctx] : {std::pair{8.f, 8192.f}, std::pair{32.f, 8192.f}, std::pair{16.f, 4096.f}}) {
    Result<ModelConfig> c = config_with_rope_freqs(dir + "/r.gguf", llama_cpp_rope_freqs(500000.f, 128, factor, 1, 4, old_ctx));
    ASSERT_TRUE(c.ok()) << c.status().to_string();
    EXPECT_EQ(c->head_dim, 128);
    EXPECT_EQ(c->num_kv_heads, 2);
    EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kLlama3);
    EXPECT_FLOAT_EQ(c->rope_scaling.factor, factor);
    EXPECT_FLOAT_EQ(c->rope_scaling.low_freq_factor, 1.f);
    EXPECT_FLOAT_EQ(c->rope_scaling.high_freq_factor, 4.f);
    EXPECT_EQ(c->rope_scaling.original_max_position_embeddings, static_cast<int64_t>(old_ctx));
  }
  std::vector<float> odd(64, 1.f);
  odd[5] = 3.f;  // not llama3-shaped: ignored with a warning
  Result<ModelConfig> c = config_with_rope_freqs(dir + "/odd.gguf", odd);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->rope_scaling.type, RopeScaling::Type::kNone);
  c = config_with_rope_freqs(dir + "/short.gguf", std::vector<float>(10, 1.f));
  EXPECT_EQ(c.status().code(), StatusCode::kDataLoss);
}

TEST(ModelLoader, GgufConfigErrors) {
  const io_test::TempDir tmp("gguf_cfg_err");
  const std::string& dir = tmp.path;
  GgufTestWriter w;
  w.add("general.architecture", io_test::str("gpt2"));
  w.write(dir + "/a.gguf");
  Result<LoadedModel> m = load_model(dir + "/a.gguf", DType::kF32);
  EXPECT_EQ(m.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(m.status().message().find("gpt2"), std::string::npos);

  GgufTestWriter missing;
  missing.add("general.architecture", io_test::str("llama"));
  missing.add("llama.block_count", io_test::u32(1));
  missing.write(dir + "/b.gguf");
  m = load_model(dir + "/b.gguf", DType::kF32);
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
  EXPECT_NE(m.status().message().find("llama.embedding_length"), std::string::npos) << m.status().message();
  EXPECT_NE(m.status().message().find(dir + "/b.gguf"), std::string::npos);

  io_test::GgufTestWriter::write_file(dir + "/c.gguf", {'n', 'o', 'p', 'e', 0, 0, 0, 0});
  EXPECT_EQ(load_model(dir + "/c.gguf", DType::kF32).status().code(), StatusCode::kDataLoss);
}

TEST(ModelLoader, UnpermuteRejectsBadShapes) {
  float w[12] = {};
  EXPECT_FALSE(unpermute_gguf_qk(Tensor::view(w, DType::kF32, {6, 2}), 2).ok());  // head_dim 3 is odd
  EXPECT_FALSE(unpermute_gguf_qk(Tensor::view(w, DType::kF32, {6, 2}), 4).ok());
  EXPECT_TRUE(unpermute_gguf_qk(Tensor::view(w, DType::kF32, {4, 3}), 2).ok());
}

// ---- the real SmolLM2 GGUF -------------------------------------------------------------------

std::string model_dir() {
  if (const char* d = std::getenv("KILN_MODEL_DIR")) return d;
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "/root") + "/.cache/kiln/models";
}

TEST(ModelLoader, SmolLM2Gguf) {
  const std::string path = model_dir() + "/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::ifstream(path).good()) GTEST_SKIP() << path << " not found";
  const auto t0 = std::chrono::steady_clock::now();
  Result<LoadedModel> m = load_model(path, DType::kF32);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  std::printf("SmolLM2 Q4_1 -> f32: %.3f s\n", secs);
  const ModelConfig& c = m->config;
  EXPECT_EQ(c.arch, Arch::kLlama);
  EXPECT_EQ(c.num_layers, 30);
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.num_q_heads, 9);
  EXPECT_EQ(c.num_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_FLOAT_EQ(c.rope_theta, 100000.f);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{2}));
  EXPECT_EQ(m->weights.size(), 2u + 30u * 9u);
  EXPECT_EQ(m->find("lm_head.weight"), nullptr);
  EXPECT_EQ(m->find("model.embed_tokens.weight")->shape_string(), "[49152, 576] f32 cpu");
  EXPECT_EQ(m->find("model.layers.29.mlp.down_proj.weight")->shape_string(), "[576, 1536] f32 cpu");

  Result<SafetensorsFile> ref =
      SafetensorsFile::open(std::string(KILN_SOURCE_DIR) + "/tests/data/io/smollm2_qk_rows.safetensors");
  ASSERT_TRUE(ref.ok()) << ref.status().to_string();
  for (const char* proj : {"q_proj", "k_proj"}) {
    SCOPED_TRACE(proj);
    const Tensor* w = m->find(std::string("model.layers.0.self_attn.") + proj + ".weight");
    ASSERT_NE(w, nullptr);
    const SafetensorsTensor* rows = ref->find(std::string(proj) + "_rows");
    const SafetensorsTensor* ids = ref->find(std::string(proj) + "_row_ids");
    ASSERT_TRUE(rows && ids);
    const int64_t cols = w->dim(1);
    ASSERT_EQ(rows->shape[1], cols);
    for (int64_t r = 0; r < ids->shape[0]; ++r) {
      const int32_t row = ids->view().ptr<int32_t>()[r];
      const float* want = rows->view().ptr<float>() + r * cols;
      const float* got = w->ptr<float>() + row * cols;
      for (int64_t i = 0; i < cols; ++i) ASSERT_EQ(got[i], want[i]) << "row " << row << " col " << i;
    }
  }
}

TEST(ModelLoader, SmolLM2GgufBf16) {
  const std::string path = model_dir() + "/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::ifstream(path).good()) GTEST_SKIP() << path << " not found";
  const auto t0 = std::chrono::steady_clock::now();
  Result<LoadedModel> m = load_model(path, DType::kBF16);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  std::printf("SmolLM2 Q4_1 -> bf16: %.3f s\n", secs);
  EXPECT_EQ(m->find("model.layers.0.self_attn.q_proj.weight")->dtype, DType::kBF16);
}

}  // namespace
}  // namespace kiln
