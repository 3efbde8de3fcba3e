// fp8 weights and KV cache in the model layer: quantize-at-load vs `kiln quantize` checkpoints
// (same bytes, scales and logits), the CPU model's dequantized weights, hand-written fp8
// checkpoints (scalar / [n, 1] / [n] scales, input_scale, k_scale), clear errors for bad ones,
// the fp8 KV cache and calibrated KV scales.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "kiln/engine/generator.h"
#include "kiln/eval/kv_scale_calibration.h"
#include "kiln/io/model_loader.h"
#include "kiln/kernels/quantize.h"
#include "kiln/models/decoder_weights.h"
#include "kiln/models/fp8_checkpoint.h"
#include "kiln/models/model.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;
const std::string kGolden = std::string(KILN_SOURCE_DIR) + "/tests/golden/";

struct TempDir {
  std::string path;
  explicit TempDir(const std::string& name) {
    path = (fs::temp_directory_path() / ("kiln_fp8_" + name + "_" + std::to_string(::getpid()))).string();
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

LoadedModel load(const std::string& dir) {
  auto m = load_model(dir, DType::kF32);
  EXPECT_TRUE(m.ok()) << m.status().to_string();
  return std::move(m).value();
}

std::vector<int32_t> ids(int64_t n, int64_t vocab) {
  std::vector<int32_t> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(static_cast<int32_t>((i * 131 + 7) % vocab));
  return v;
}

HostTensor logits_of(const std::string& dir, const ModelOptions& o, LoadedModel* given = nullptr) {
  LoadedModel m = given ? std::move(*given) : load(dir);
  auto model = create_model(std::move(m), o);
  EXPECT_TRUE(model.ok()) << model.status().to_string();
  if (!model.ok()) return {};
  auto l = prompt_logits(**model, ids(24, (*model)->config().vocab_size), 5);
  EXPECT_TRUE(l.ok()) << l.status().to_string();
  return std::move(l).value();
}

double max_abs_diff(const HostTensor& a, const HostTensor& b) {
  double m = 0;
  for (int64_t i = 0; i < a.tensor.numel(); ++i) m = std::max(m, std::fabs(double(a.tensor.ptr<float>()[i]) - b.tensor.ptr<float>()[i]));
  return m;
}

bool same_bytes(const HostTensor& a, const HostTensor& b) {
  return a.tensor.dtype == b.tensor.dtype && a.tensor.numel() == b.tensor.numel() &&
         std::memcmp(a.tensor.data, b.tensor.data, static_cast<size_t>(a.tensor.nbytes())) == 0;
}

void expect_same_linear(const HostTensor& w1, const HostTensor& s1, const HostTensor& w2, const HostTensor& s2, const std::string& what) {
  EXPECT_EQ(w1.tensor.dtype, DType::kFp8E4M3) << what;
  EXPECT_TRUE(same_bytes(w1, w2)) << what;
  EXPECT_TRUE(same_bytes(s1, s2)) << what << ": scales " << s1.tensor.shape_string() << " vs " << s2.tensor.shape_string();
}

// ---- kiln quantize's checkpoint == quantizing at load ----------------------------------------

class Fp8RoundTrip : public ::testing::TestWithParam<std::tuple<const char*, bool>> {};

TEST_P(Fp8RoundTrip, SameBytesScalesAndLogits) {
  const auto [name, per_tensor] = GetParam();
  const std::string src = kGolden + name;
  TempDir tmp(std::string(name) + (per_tensor ? "_pt" : "_pc"));
  Fp8CheckpointOptions co;
  co.per_tensor = per_tensor;
  int64_t last = -1, total = 0;
  ASSERT_TRUE(write_fp8_checkpoint(load(src), co, tmp.path, [&](int64_t d, int64_t t) { last = d, total = t; }).ok());
  EXPECT_EQ(last, total);
  LoadedModel written = load(tmp.path);
  EXPECT_TRUE(written.quantization.fp8());
  EXPECT_EQ(written.quantization.per_channel, !per_tensor);
  auto w1 = build_decoder_weights(written);
  ModelOptions o;
  o.fp8_weights = true;
  o.fp8_per_tensor = per_tensor;
  LoadedModel original = load(src);
  auto w2 = build_decoder_weights(original, o);
  ASSERT_TRUE(w1.ok() && w2.ok()) << w1.status().to_string() << w2.status().to_string();
  EXPECT_TRUE(has_fp8_weights(*w1));
  for (size_t l = 0; l < w1->layers.size(); ++l) {
    const LayerWeights &a = w1->layers[l], &b = w2->layers[l];
    const std::string at = std::string(name) + " layer " + std::to_string(l);
    expect_same_linear(a.qkv, a.qkv_scale, b.qkv, b.qkv_scale, at + " qkv");
    expect_same_linear(a.o_proj, a.o_proj_scale, b.o_proj, b.o_proj_scale, at + " o_proj");
    if (a.experts.empty()) {
      expect_same_linear(a.gate_up, a.gate_up_scale, b.gate_up, b.gate_up_scale, at + " gate_up");
      expect_same_linear(a.down, a.down_scale, b.down, b.down_scale, at + " down");
    }
    for (size_t e = 0; e < a.experts.size(); ++e) {
      expect_same_linear(a.experts[e].gate_up, a.experts[e].gate_up_scale, b.experts[e].gate_up, b.experts[e].gate_up_scale, at + " expert gate_up");
      expect_same_linear(a.experts[e].down, a.experts[e].down_scale, b.experts[e].down, b.experts[e].down_scale, at + " expert down");
    }
    // Per channel: one scale per output row; per tensor: [1] or rows expanded when q/k/v differ.
    if (!per_tensor) {
      EXPECT_EQ(a.qkv_scale.tensor.numel(), a.qkv.tensor.shape[0]);
    }
    EXPECT_TRUE(same_bytes(a.attn_norm, b.attn_norm));
  }
  EXPECT_TRUE(same_bytes(w1->embed, w2->embed));  // bf16 golden weights survive bf16 storage exactly
  const HostTensor from_dir = logits_of(tmp.path, {});
  const HostTensor at_load = logits_of(src, o);
  EXPECT_EQ(max_abs_diff(from_dir, at_load), 0.0) << name;
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, Fp8RoundTrip,
                         ::testing::Combine(::testing::Values("llama3", "llama_tied_sharded", "qwen2", "mixtral"),
                                            ::testing::Bool()));

// ---- the CPU model computes with dequantize(quantize(w)) -------------------------------------

TEST(Fp8Weights, CpuModelUsesDequantizedWeights) {
  for (bool per_tensor : {false, true}) {
    LoadedModel m = load(kGolden + "mixtral");
    for (auto& [name, t] : m.weights) {
      if (!is_fp8_linear_weight(name)) continue;
      auto q = quantize_fp8_weights_cpu(t.tensor, per_tensor);
      ASSERT_TRUE(q.ok());
      ASSERT_TRUE(dequantize_fp8_weights_cpu(q->q.tensor, q->scale.tensor, t.tensor).ok());
    }
    ModelOptions o;
    o.fp8_weights = true;
    o.fp8_per_tensor = per_tensor;
    const HostTensor fp8 = logits_of(kGolden + "mixtral", o);
    const HostTensor manual = logits_of("", {}, &m);
    const HostTensor f32 = logits_of(kGolden + "mixtral", {});
    EXPECT_EQ(max_abs_diff(fp8, manual), 0.0) << "per_tensor " << per_tensor;
    const double err = max_abs_diff(fp8, f32);
    std::printf("mixtral fp8 weights (per_tensor %d) vs f32: max |logit err| %.3e\n", per_tensor, err);
    EXPECT_GT(err, 0.0);
    EXPECT_LT(err, 3.0);  // logits of these random models span ~+-10; a wrong scale gives errors of tens
  }
}

// fp8_activations: the same fp8 weights, each fp8 layer's input rounded to fp8 per token. Changes
// the logits a little (dense and MoE), only with fp8 weights, and never by tens.
TEST(Fp8Weights, Fp8ActivationsRoundLayerInputs) {
  for (const char* name : {"llama3", "mixtral"}) {
    ModelOptions w8;
    w8.fp8_weights = true;
    ModelOptions w8a8 = w8;
    w8a8.fp8_activations = true;
    ModelOptions a8_only;
    a8_only.fp8_activations = true;  // ignored without fp8 weights
    const HostTensor base = logits_of(kGolden + name, w8), act = logits_of(kGolden + name, w8a8);
    const double err = max_abs_diff(base, act);
    double top = 0;
    for (int64_t i = 0; i < base.tensor.numel(); ++i) top = std::max(top, std::fabs(double(base.tensor.ptr<float>()[i])));
    std::printf("%s fp8 activations vs f32 activations: max |logit err| %.3e (%.2e of max |logit|)\n", name, err, err / top);
    EXPECT_GT(err, 0.0) << name;
    EXPECT_LT(err, 3.0) << name;
    EXPECT_EQ(max_abs_diff(logits_of(kGolden + name, {}), logits_of(kGolden + name, a8_only)), 0.0) << name;
  }
}

TEST(Fp8Weights, PerTensorFusionExpandsDifferentScales) {
  LoadedModel m = load(kGolden + "llama3");
  const Tensor& q = *m.find("model.layers.0.self_attn.q_proj.weight");
  const Tensor& v = *m.find("model.layers.0.self_attn.v_proj.weight");
  auto sq = quantize_fp8_weights_cpu(q, true);
  auto sv = quantize_fp8_weights_cpu(v, true);
  ASSERT_TRUE(sq.ok() && sv.ok());
  const int64_t q_rows = q.shape[0];  // build_decoder_weights takes the tensors out of m: q and v dangle after it
  ModelOptions o;
  o.fp8_weights = o.fp8_per_tensor = true;
  auto w = build_decoder_weights(m, o);
  ASSERT_TRUE(w.ok());
  const HostTensor& s = w->layers[0].qkv_scale;
  ASSERT_EQ(s.tensor.numel(), w->layers[0].qkv.tensor.shape[0]);  // q, k, v amax differ
  EXPECT_EQ(s.tensor.ptr<float>()[0], sq->scale.tensor.ptr<float>()[0]);
  EXPECT_EQ(s.tensor.ptr<float>()[q_rows - 1], sq->scale.tensor.ptr<float>()[0]);
  EXPECT_EQ(s.tensor.ptr<float>()[s.tensor.numel() - 1], sv->scale.tensor.ptr<float>()[0]);
  EXPECT_EQ(w->layers[0].o_proj_scale.tensor.numel(), 1);
  EXPECT_EQ(w->embed.tensor.dtype, DType::kF32);  // embeddings stay in the compute dtype
}

// ---- hand-written fp8 checkpoints ---------------------------------------------------------------

// Minimal safetensors writer that allows rank-0 (scalar) tensors, as real fp8 checkpoints have.
struct RawTensor {
  std::string dtype;  // "F8_E4M3", "F32", "BF16", ...
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

void write_raw_safetensors(const std::string& path, const std::map<std::string, RawTensor>& ts) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  size_t off = 0;
  for (const auto& [n, t] : ts) {
    h[n] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.bytes.size()}}};
    off += t.bytes.size();
  }
  std::string header = h.dump();
  while (header.size() % 8) header += ' ';
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header;
  for (const auto& [name, t] : ts) out.write(reinterpret_cast<const char*>(t.bytes.data()), static_cast<std::streamsize>(t.bytes.size()));
}

RawTensor raw(const Tensor& t, const char* dtype) {
  RawTensor r{dtype, std::vector<int64_t>(t.shape.begin(), t.shape.begin() + t.ndim), {}};
  const auto* p = static_cast<const uint8_t*>(t.data);
  r.bytes.assign(p, p + t.nbytes());
  return r;
}
RawTensor f32_scalar(float v, std::vector<int64_t> shape = {}) {
  RawTensor r{"F32", shape, std::vector<uint8_t>(4)};
  std::memcpy(r.bytes.data(), &v, 4);
  return r;
}

// The llama3 golden model as an fp8 checkpoint written by hand: q/k/v/o per tensor with one
// shared scalar scale per layer, gate/up per channel [n, 1], down per channel [n]; input_scale
// scalars; layer 0 has k_scale / v_scale. Returns the tensors so tests can damage them.
std::map<std::string, RawTensor> hand_checkpoint() {
  LoadedModel m = load(kGolden + "llama3");
  std::map<std::string, RawTensor> ts;
  for (auto& [name, t] : m.weights) {
    const std::string base = name.substr(0, name.rfind('.'));
    if (!is_fp8_linear_weight(name)) {
      HostTensor b = HostTensor::zeros(DType::kBF16, t.tensor.shape.data(), t.tensor.ndim);
      EXPECT_TRUE(convert(t.tensor.data, DType::kF32, b.tensor.data, DType::kBF16, t.tensor.numel()).ok());
      ts[name] = raw(b.tensor, "BF16");
      continue;
    }
    const bool attn = name.find("self_attn") != std::string::npos;
    const bool down = name.find("down_proj") != std::string::npos;
    const int64_t n = t.tensor.shape[0], k = t.tensor.shape[1];
    HostTensor q = HostTensor::zeros(DType::kFp8E4M3, {n, k});
    std::vector<float> scale(static_cast<size_t>(attn ? 1 : n));
    for (size_t r = 0; r < scale.size(); ++r) scale[r] = attn ? 0.002f : 0.001f * static_cast<float>(r + 1);
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < k; ++c)
        q.tensor.ptr<uint8_t>()[r * k + c] = f32_to_fp8_e4m3(t.tensor.ptr<float>()[r * k + c] / scale[attn ? 0 : static_cast<size_t>(r)]);
    ts[name] = raw(q.tensor, "F8_E4M3");
    RawTensor s{"F32", attn ? std::vector<int64_t>{} : down ? std::vector<int64_t>{n} : std::vector<int64_t>{n, 1},
                std::vector<uint8_t>(scale.size() * 4)};
    std::memcpy(s.bytes.data(), scale.data(), s.bytes.size());
    ts[base + ".weight_scale"] = s;
    ts[base + ".input_scale"] = f32_scalar(0.5f);
  }
  ts["model.layers.0.self_attn.k_scale"] = f32_scalar(0.25f);
  ts["model.layers.0.self_attn.v_scale"] = f32_scalar(0.125f, {1});
  return ts;
}

void write_hand_dir(const std::string& dir, const std::map<std::string, RawTensor>& ts,
                    const std::string& qcfg = R"({"quant_method": "fp8", "activation_scheme": "static", "ignored_layers": ["lm_head"]})") {
  std::ifstream in(kGolden + "llama3/config.json");
  nlohmann::json cfg = nlohmann::json::parse(in);
  cfg["quantization_config"] = nlohmann::json::parse(qcfg);
  std::ofstream(dir + "/config.json") << cfg.dump();
  write_raw_safetensors(dir + "/model.safetensors", ts);
}

TEST(Fp8Checkpoint, HandWrittenScalesInEveryLayout) {
  TempDir tmp("hand");
  write_hand_dir(tmp.path, hand_checkpoint());
  LoadedModel m = load(tmp.path);
  EXPECT_EQ(m.quantization.method, QuantizationConfig::Method::kFp8);
  EXPECT_EQ(m.find("model.layers.0.self_attn.q_proj.weight")->dtype, DType::kFp8E4M3);  // not converted
  EXPECT_EQ(m.find("model.layers.0.self_attn.q_proj.weight_scale")->shape_string(), "[1] f32 cpu");
  ModelOptions o;
  o.kv_cache_scale = 2.0f;
  auto w = build_decoder_weights(m, o);
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  const LayerWeights& l0 = w->layers[0];
  EXPECT_EQ(l0.qkv_scale.tensor.numel(), 1);  // equal per-tensor scales stay one
  EXPECT_EQ(l0.qkv_scale.tensor.ptr<float>()[0], 0.002f);
  EXPECT_EQ(l0.gate_up_scale.tensor.numel(), 2 * 160);
  EXPECT_EQ(l0.gate_up_scale.tensor.ptr<float>()[160], 0.001f);  // up's first row
  EXPECT_EQ(l0.down_scale.tensor.shape_string(), "[64] f32 cpu");
  EXPECT_EQ(l0.k_scale, 0.25f);
  EXPECT_EQ(l0.v_scale, 0.125f);
  EXPECT_EQ(w->layers[1].k_scale, 2.0f);  // none in the checkpoint: the option
  for (const auto& [name, t] : m.weights) EXPECT_EQ(name.find("input_scale"), std::string::npos) << name << " left over";
  // The CPU model runs it (dequantized) and stays close to the original bf16 model.
  const HostTensor fp8 = logits_of(tmp.path, {});
  const HostTensor ref = logits_of(kGolden + "llama3", {});
  EXPECT_LT(max_abs_diff(fp8, ref), 1.0);
}

void expect_load_error(const std::string& what, std::map<std::string, RawTensor> ts, StatusCode code,
                       const std::string& words, const std::string& qcfg = R"({"quant_method": "fp8"})") {
  TempDir tmp("bad");
  write_hand_dir(tmp.path, ts, qcfg);
  Status s = ok_status();
  auto m = load_model(tmp.path, DType::kF32);
  if (!m.ok()) s = m.status();
  else s = create_model(std::move(m).value()).status();
  ASSERT_FALSE(s.ok()) << what;
  EXPECT_EQ(s.code(), code) << what << ": " << s.to_string();
  EXPECT_NE(s.message().find(words), std::string::npos) << what << ": " << s.to_string();
}

TEST(Fp8Checkpoint, BadCheckpointsGiveClearErrors) {
  const auto good = hand_checkpoint();
  const std::string q = "model.layers.1.self_attn.q_proj.";
  auto ts = good;
  ts.erase(q + "weight_scale");
  expect_load_error("missing weight_scale", ts, StatusCode::kNotFound, q + "weight_scale");
  ts = good;
  ts[q + "weight_scale"] = f32_scalar(0.002f, {2, 2});
  ts[q + "weight_scale"].bytes.resize(16);
  expect_load_error("block-wise scale", ts, StatusCode::kUnimplemented, "block-wise");
  ts = good;
  ts[q + "weight_scale_inv"] = f32_scalar(1.f, {1});
  expect_load_error("weight_scale_inv", ts, StatusCode::kUnimplemented, "weight_scale_inv");
  expect_load_error("weight_block_size", good, StatusCode::kUnimplemented, "weight_block_size",
                    R"({"quant_method": "fp8", "weight_block_size": [128, 128]})");
  expect_load_error("gptq", good, StatusCode::kUnimplemented, "gptq", R"({"quant_method": "gptq"})");
  ts = good;
  ts[q + "weight"].dtype = "F8_E5M2";
  expect_load_error("e5m2 weight", ts, StatusCode::kUnimplemented, "e5m2");
  ts = good;
  ts[q + "weight_scale"] = f32_scalar(-1.f);
  expect_load_error("negative scale", ts, StatusCode::kDataLoss, "scale");
  ts = good;
  ts["model.layers.1.self_attn.k_scale"] = f32_scalar(0.f);
  expect_load_error("zero k_scale", ts, StatusCode::kDataLoss, "k_scale");
  ts = good;
  LoadedModel m = load(kGolden + "llama3");
  const Tensor& w = *m.find("model.layers.1.mlp.down_proj.weight");
  HostTensor b = HostTensor::zeros(DType::kBF16, {w.shape[0], w.shape[1]});
  ASSERT_TRUE(convert(w.data, DType::kF32, b.tensor.data, DType::kBF16, w.numel()).ok());
  ts["model.layers.1.mlp.down_proj.weight"] = raw(b.tensor, "BF16");
  expect_load_error("scale on a bf16 weight", ts, StatusCode::kDataLoss, "weight_scale given for a");
}

// ---- fp8 KV cache ---------------------------------------------------------------------------------

TEST(Fp8KvCache, Fp8CacheStaysCloseAndUsesTheScale) {
  ModelOptions o;
  o.fp8_kv_cache = true;
  LoadedModel m = load(kGolden + "qwen2");
  auto model = create_model(std::move(m), o);
  ASSERT_TRUE(model.ok());
  auto kv = (*model)->allocate_kv_cache(2, 16);
  ASSERT_TRUE(kv.ok());
  EXPECT_EQ(kv->k[0].dtype, DType::kFp8E4M3);
  EXPECT_EQ(kv->v[1].dtype, DType::kFp8E4M3);
  EXPECT_GT((*model)->max_kv_blocks(16, 1.0), 0);
  const HostTensor ref = logits_of(kGolden + "qwen2", {});
  const HostTensor fp8 = logits_of(kGolden + "qwen2", o);
  const double err = max_abs_diff(fp8, ref);
  o.kv_cache_scale = 1e-3f;  // |k| up to ~1: saturates at 0.448
  const double err_saturated = max_abs_diff(logits_of(kGolden + "qwen2", o), ref);
  std::printf("qwen2 fp8 KV cache: max |logit err| %.3e (scale 1), %.3e (scale 1e-3, saturating)\n", err, err_saturated);
  EXPECT_GT(err, 0.0);
  EXPECT_LT(err, 1.0);
  EXPECT_GT(err_saturated, 2 * err);
}

TEST(Fp8KvCache, CalibratedScalesFromTheCheckpoint) {
  LoadedModel m = load(kGolden + "llama3");
  auto model = create_model(std::move(m));
  ASSERT_TRUE(model.ok());
  auto scales = eval::calibrate_kv_scales(**model, ids(64, 320), 16);
  ASSERT_TRUE(scales.ok()) << scales.status().to_string();
  ASSERT_EQ(scales->k.size(), 2u);
  for (size_t l = 0; l < 2; ++l) EXPECT_TRUE(scales->k[l] > 0 && scales->v[l] > 0 && std::isfinite(scales->k[l]));
  // Written by `kiln quantize` and read back as the layers' scales.
  TempDir tmp("kvcal");
  Fp8CheckpointOptions co;
  co.k_scales = scales->k;
  co.v_scales = scales->v;
  ASSERT_TRUE(write_fp8_checkpoint(load(kGolden + "llama3"), co, tmp.path).ok());
  LoadedModel written = load(tmp.path);
  EXPECT_TRUE(written.quantization.kv_cache_fp8);
  auto w = build_decoder_weights(written);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->layers[1].k_scale, scales->k[1]);
  EXPECT_EQ(w->layers[0].v_scale, scales->v[0]);
  // Calibrated scales do not saturate; a quarter of them does, and costs accuracy.
  ModelOptions o;
  o.fp8_kv_cache = true;
  const HostTensor ref = logits_of(tmp.path, {});
  const double err = max_abs_diff(logits_of(tmp.path, o), ref);
  for (float& s : co.k_scales) s *= 0.25f;
  for (float& s : co.v_scales) s *= 0.25f;
  TempDir tmp2("kvcal_small");
  ASSERT_TRUE(write_fp8_checkpoint(load(kGolden + "llama3"), co, tmp2.path).ok());
  const double err_small = max_abs_diff(logits_of(tmp2.path, o), ref);
  std::printf("llama3 fp8 KV, calibrated scales: max |logit err| %.3e; scales / 4: %.3e\n", err, err_small);
  EXPECT_LT(err, err_small);
}

}  // namespace
}  // namespace kiln
