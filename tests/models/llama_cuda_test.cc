// The GPU model (bf16) against the same golden logits as the CPU model, and against the CPU
// model itself on SmolLM2. Skipped without a GPU (CI has none; scripts/device_run.sh runs it).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <cstring>
#include <map>
#include <random>

#include "kiln/engine/generator.h"
#include "kiln/io/model_loader.h"
#include "kiln/io/safetensors.h"
#include "kiln/models/model.h"
#include "tests/models/golden_cuda_model.h"
#ifdef KILN_WITH_CUDA
#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/models/llama_cuda_model.h"
#endif

namespace kiln {
namespace {

class CudaGolden : public ::testing::TestWithParam<const char*> {};

TEST_P(CudaGolden, LogitsMatchTransformersInBf16) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const std::string dir = std::string(KILN_SOURCE_DIR) + "/tests/golden/" + GetParam();
  auto golden = SafetensorsFile::open(dir + "/golden.safetensors");
  ASSERT_TRUE(golden.ok());
  const SafetensorsTensor* ids_t = golden->find("input_ids");
  const SafetensorsTensor* want = golden->find("logits");
  std::vector<int32_t> ids(reinterpret_cast<const int32_t*>(ids_t->data), reinterpret_cast<const int32_t*>(ids_t->data) + ids_t->nbytes / 4);
  auto loaded = load_model(dir, DType::kBF16);
  ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
  ModelOptions o;
  o.device = Device::kCuda;
  auto model = create_model(std::move(loaded).value(), o);
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  auto logits = prompt_logits(**model, ids, 5);
  ASSERT_TRUE(logits.ok()) << logits.status().to_string();
  const Agreement a = agree(logits->tensor.ptr<float>(), reinterpret_cast<const float*>(want->data),
                            static_cast<int64_t>(ids.size()), (*model)->config().vocab_size);
  std::printf("cuda golden %s: max |err| / max |logit| %.2e, top-1 agreement %.3f\n", GetParam(), a.rel_err, a.top1);
  EXPECT_LE(a.rel_err, 3e-2);
  EXPECT_GE(a.top1, 0.9);
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, CudaGolden, ::testing::Values("llama3", "llama_tied_sharded", "qwen2", "mistral", "mixtral"));

// Decode steps replayed from CUDA graphs give the same tokens as eager launches.
TEST(CudaGraphs, DecodeMatchesEager) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  for (const char* name : {"llama3", "qwen2", "mistral", "mixtral"}) {
    const std::string dir = std::string(KILN_SOURCE_DIR) + "/tests/golden/" + name;
    ModelOptions o;
    o.device = Device::kCuda;
    std::vector<std::vector<int32_t>> outputs;
    for (const char* graphs : {"0", "1"}) {
      setenv("KILN_CUDA_GRAPHS", graphs, 1);
      auto loaded = load_model(dir, DType::kBF16);
      ASSERT_TRUE(loaded.ok());
      auto model = create_model(std::move(loaded).value(), o);
      ASSERT_TRUE(model.ok()) << model.status().to_string();
      GenerateOptions go;
      go.max_new_tokens = 20;
      auto gen = generate(**model, {5, 17, 99, 3, 250, 8, 41, 7}, go);
      ASSERT_TRUE(gen.ok()) << gen.status().to_string();
      outputs.push_back(gen->tokens);
    }
    unsetenv("KILN_CUDA_GRAPHS");
    EXPECT_EQ(outputs[0], outputs[1]) << name;
  }
}

// A decode graph captured before the fp8 GEMM's activation workspace grows must not be replayed
// after it (it would read freed buffers: the Mixtral serving fault of 2026-11-22). fp8 Mixtral,
// 17 single-token sequences (m = 17 > the fp8 decode-GEMM range: cuBLASLt fp8 reads the
// workspace; 34 expert slots: the MoE decode path with KILN_MOE_DECODE=64, captured), then a
// 200-token prompt (the workspace grows), then the same decode step twice more: same logits as
// the first, eager one.
TEST(CudaGraphs, DecodeAfterGemmWorkspaceGrows) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  setenv("KILN_MOE_DECODE", "64", 1);  // read when the model is created
  const std::string dir = std::string(KILN_SOURCE_DIR) + "/tests/golden/mixtral";
  auto loaded = load_model(dir, DType::kBF16);
  ASSERT_TRUE(loaded.ok());
  ModelOptions o;
  o.device = Device::kCuda;
  o.fp8_weights = true;
  auto model = create_model(std::move(loaded).value(), o);
  unsetenv("KILN_MOE_DECODE");
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  Model& m = **model;
  auto kv = m.allocate_kv_cache(64, 16);
  ASSERT_TRUE(kv.ok());
  const int64_t vocab = m.config().vocab_size;
  std::mt19937 rng(9);
  ForwardBatch decode;  // sequence s: one token at position 0 in block s
  decode.cu_seqlens_q.push_back(0);
  decode.max_blocks_per_seq = 1;
  for (int s = 0; s < 17; ++s) {
    decode.token_ids.push_back(static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab)));
    decode.positions.push_back(0);
    decode.slot_mapping.push_back(s * 16);
    decode.cu_seqlens_q.push_back(s + 1);
    decode.kv_lens.push_back(1);
    decode.block_tables.push_back(s);
    decode.logits_rows.push_back(s);
  }
  ForwardBatch prompt;  // one 200-token sequence in blocks 40..52
  prompt.cu_seqlens_q = {0, 200};
  prompt.max_blocks_per_seq = 13;
  for (int p = 0; p < 200; ++p) {
    prompt.token_ids.push_back(static_cast<int32_t>(rng() % static_cast<uint32_t>(vocab)));
    prompt.positions.push_back(p);
    prompt.slot_mapping.push_back((40 + p / 16) * 16 + p % 16);
  }
  for (int b = 0; b < 13; ++b) prompt.block_tables.push_back(40 + b);
  prompt.kv_lens = {200};
  prompt.logits_rows = {199};
  std::vector<HostTensor> runs;
  for (int step = 0; step < 4; ++step) {
    if (step == 2) {
      HostTensor l = HostTensor::zeros(DType::kF32, {1, vocab});
      const Status st = m.forward(prompt, *kv, l.tensor);
      ASSERT_TRUE(st.ok()) << st.to_string();
      continue;
    }
    HostTensor l = HostTensor::zeros(DType::kF32, {17, vocab});
    const Status st = m.forward(decode, *kv, l.tensor);
    ASSERT_TRUE(st.ok()) << "step " << step << ": " << st.to_string();
    runs.push_back(std::move(l));
  }
  // runs: eager (captures), replay, after the growth (eager again, recaptures), replay.
  for (size_t r = 1; r < runs.size(); ++r)
    EXPECT_EQ(0, std::memcmp(runs[0].tensor.data, runs[r].tensor.data, static_cast<size_t>(runs[0].tensor.nbytes())))
        << "decode run " << r;
}

// Decode graphs are keyed by the block-table width rounded up (graph_table_width: 16 blocks here),
// so steps whose tables are 5, 7, 12 and 16 blocks wide replay one graph, their rows padded. Each
// step's logits against an eager model (KILN_CUDA_GRAPHS=0, tables as given) fed the same steps:
// the split plan differs (it follows the width), so within a tolerance, argmax equal.
TEST(CudaGraphs, PaddedTableWidthsShareAGraph) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  setenv("KILN_CUDA_GRAPHS", "0", 1);
  auto eager = golden_cuda_model("llama3");
  unsetenv("KILN_CUDA_GRAPHS");
  auto graphs = golden_cuda_model("llama3");
  ASSERT_TRUE(eager.ok() && graphs.ok());
  const int64_t vocab = (*graphs)->config().vocab_size;
  const int lens[] = {10, 40, 70}, first_block[] = {0, 10, 20};
  auto batch = [&](int step, int width) {  // step < 0: the prompts; else one token per sequence
    ForwardBatch b;
    b.cu_seqlens_q.push_back(0);
    b.max_blocks_per_seq = width;
    for (int s = 0; s < 3; ++s) {
      const int begin = step < 0 ? 0 : lens[s] + step, end = step < 0 ? lens[s] : begin + 1;
      for (int p = begin; p < end; ++p) {
        b.token_ids.push_back((p * 31 + s * 7 + 3) % 200);
        b.positions.push_back(p);
        b.slot_mapping.push_back((first_block[s] + p / 16) * 16 + p % 16);
      }
      b.cu_seqlens_q.push_back(static_cast<int32_t>(b.token_ids.size()));
      b.kv_lens.push_back(end);
      for (int j = 0; j < width; ++j) b.block_tables.push_back(j < (end + 15) / 16 ? first_block[s] + j : 0);
      b.logits_rows.push_back(static_cast<int32_t>(b.token_ids.size()) - 1);
    }
    return b;
  };
  auto kv_e = (*eager)->allocate_kv_cache(32, 16), kv_g = (*graphs)->allocate_kv_cache(32, 16);
  ASSERT_TRUE(kv_e.ok() && kv_g.ok());
  HostTensor le = HostTensor::zeros(DType::kF32, {3, vocab}), lg = HostTensor::zeros(DType::kF32, {3, vocab});
  ASSERT_TRUE((*eager)->forward(batch(-1, 5), *kv_e, le.tensor).ok());
  ASSERT_TRUE((*graphs)->forward(batch(-1, 5), *kv_g, lg.tensor).ok());
  const int widths[] = {5, 7, 12, 16};
  for (int step = 0; step < 4; ++step) {
    SCOPED_TRACE("step " + std::to_string(step) + " width " + std::to_string(widths[step]));
    const ForwardBatch b = batch(step, widths[step]);
    ASSERT_TRUE((*eager)->forward(b, *kv_e, le.tensor).ok());
    const Status st = (*graphs)->forward(b, *kv_g, lg.tensor);
    ASSERT_TRUE(st.ok()) << st.to_string();
    const Agreement g = agree(lg.tensor.ptr<float>(), le.tensor.ptr<float>(), 3, vocab);
    EXPECT_LE(g.rel_err, 1e-2);
    EXPECT_EQ(g.top1, 1.0);
  }
}

#ifdef KILN_WITH_CUDA
// Decode graphs of dense models run at a rounded token count (graph_tokens: multiples of 8 past
// 8): steps of 10, 12, 16 and again 10 of 16 sequences replay one graph with dummy rows appended,
// and their logits match an eager model fed the same steps (KILN_CUDA_GRAPHS=0, no padding; the
// split plans differ with the table width, hence a tolerance). Sequence 0 lives in block 0, whose
// first slot the dummy rows read: had they written there, its later steps would disagree. MoE
// models keep exact sizes (the MoE decode path, 16 tokens x top-2 = 32 slots, the bf16 limit):
// three graphs, the last step a replay.
class CudaGraphPadding : public ::testing::TestWithParam<const char*> {};

TEST_P(CudaGraphPadding, PaddedBatchesShareAGraph) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  setenv("KILN_CUDA_GRAPHS", "0", 1);
  auto eager = golden_cuda_model(GetParam());
  unsetenv("KILN_CUDA_GRAPHS");
  auto graphs = golden_cuda_model(GetParam());
  ASSERT_TRUE(eager.ok() && graphs.ok());
  auto* g = dynamic_cast<cuda_llama::CudaLlamaModel*>(graphs->get());
  ASSERT_NE(g, nullptr);
  const int64_t vocab = g->config().vocab_size;
  constexpr int kSeqs = 16;
  std::vector<int> len(kSeqs);  // tokens cached per sequence; sequence s owns block s
  auto batch = [&](int seqs, bool prompt) {
    ForwardBatch b;
    b.cu_seqlens_q.push_back(0);
    b.max_blocks_per_seq = 1;
    for (int s = 0; s < seqs; ++s) {
      const int begin = prompt ? 0 : len[s], end = prompt ? 3 + s % 5 : len[s] + 1;
      for (int p = begin; p < end; ++p) {
        b.token_ids.push_back((p * 37 + s * 11 + 5) % 250);
        b.positions.push_back(p);
        b.slot_mapping.push_back(s * 16 + p);
      }
      b.cu_seqlens_q.push_back(static_cast<int32_t>(b.token_ids.size()));
      b.kv_lens.push_back(end);
      b.block_tables.push_back(s);
      b.logits_rows.push_back(static_cast<int32_t>(b.token_ids.size()) - 1);
      len[s] = end;
    }
    return b;
  };
  auto kv_e = (*eager)->allocate_kv_cache(kSeqs, 16), kv_g = g->allocate_kv_cache(kSeqs, 16);
  ASSERT_TRUE(kv_e.ok() && kv_g.ok());
  for (int step = -1; step < 4; ++step) {
    const int seqs = step < 0 ? kSeqs : std::vector<int>{10, 12, 16, 10}[static_cast<size_t>(step)];
    SCOPED_TRACE("step " + std::to_string(step) + ", " + std::to_string(seqs) + " sequences");
    const ForwardBatch b = batch(seqs, step < 0);
    HostTensor le = HostTensor::zeros(DType::kF32, {seqs, vocab}), lg = HostTensor::zeros(DType::kF32, {seqs, vocab});
    ASSERT_TRUE((*eager)->forward(b, *kv_e, le.tensor).ok());
    const Status st = g->forward(b, *kv_g, lg.tensor);
    ASSERT_TRUE(st.ok()) << st.to_string();
    const Agreement a = agree(lg.tensor.ptr<float>(), le.tensor.ptr<float>(), seqs, vocab);
    EXPECT_LE(a.rel_err, 1e-2);
    EXPECT_EQ(a.top1, 1.0);
  }
  EXPECT_EQ(g->graph_captures(), g->config().num_experts > 0 ? 3 : 1);
}

INSTANTIATE_TEST_SUITE_P(Models, CudaGraphPadding, ::testing::Values("llama3", "mixtral"));

// With room for two decode graphs (KILN_CUDA_GRAPH_CAP=2), decode steps of 4, 2, 4, 3, 4 sequences
// (4 first: the scratch buffers grow to it, and growth would drop every graph): the third step
// replays 4; 3 evicts 2, the least recently used (evicting 4 would make the last step capture it
// again), and the last step replays 4: 3 captures, never more than 2 graphs. Every step's logits
// equal those of the first (eager) step of its size, bit for bit.
TEST(CudaGraphs, LeastRecentlyUsedGraphIsEvicted) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  setenv("KILN_CUDA_GRAPH_CAP", "2", 1);
  auto model = golden_cuda_model("llama3");
  unsetenv("KILN_CUDA_GRAPH_CAP");
  ASSERT_TRUE(model.ok());
  auto* m = dynamic_cast<cuda_llama::CudaLlamaModel*>(model->get());
  ASSERT_NE(m, nullptr);
  const int64_t vocab = m->config().vocab_size;
  auto kv = m->allocate_kv_cache(16, 16);
  ASSERT_TRUE(kv.ok());
  auto decode = [](int seqs) {  // sequence s: one token at position 0 of block s
    ForwardBatch b;
    b.cu_seqlens_q.push_back(0);
    b.max_blocks_per_seq = 1;
    for (int s = 0; s < seqs; ++s) {
      b.token_ids.push_back(17 * s + 5);
      b.positions.push_back(0);
      b.slot_mapping.push_back(16 * s);
      b.cu_seqlens_q.push_back(s + 1);
      b.kv_lens.push_back(1);
      b.block_tables.push_back(s);
      b.logits_rows.push_back(s);
    }
    return b;
  };
  std::map<int, HostTensor> first;
  const int sizes[] = {4, 2, 4, 3, 4};
  for (int step = 0; step < 5; ++step) {
    const int seqs = sizes[step];
    HostTensor l = HostTensor::zeros(DType::kF32, {seqs, vocab});
    const Status st = m->forward(decode(seqs), *kv, l.tensor);
    ASSERT_TRUE(st.ok()) << "step " << step << ": " << st.to_string();
    EXPECT_LE(m->num_graphs(), 2);
    if (!first.count(seqs)) {
      first.emplace(seqs, std::move(l));
      continue;
    }
    EXPECT_EQ(0, std::memcmp(first.at(seqs).tensor.data, l.tensor.data, static_cast<size_t>(l.tensor.nbytes())))
        << "step " << step;
  }
  EXPECT_EQ(m->graph_captures(), 3) << "captures";
}
#endif

TEST(CudaSmolLM2, AgreesWithCpuModel) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const char* home = std::getenv("HOME");
  const std::string path = std::string(home ? home : ".") + "/.cache/kiln/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  const std::string alt = std::string(KILN_SOURCE_DIR) + "/.carry/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  const std::string p = std::filesystem::exists(path) ? path : alt;
  if (!std::filesystem::exists(p)) GTEST_SKIP() << "SmolLM2 GGUF missing";
  const std::vector<int32_t> ids = {504, 3575, 282, 4649, 314, 7042, 30, 378, 3575, 282, 4521, 314};
  auto cpu_loaded = load_model(p, DType::kF32);
  auto gpu_loaded = load_model(p, DType::kBF16);
  ASSERT_TRUE(cpu_loaded.ok() && gpu_loaded.ok());
  ModelOptions o;
  o.device = Device::kCuda;
  auto cpu = create_model(std::move(cpu_loaded).value());
  auto gpu = create_model(std::move(gpu_loaded).value(), o);
  ASSERT_TRUE(cpu.ok() && gpu.ok()) << gpu.status().to_string();
  auto a = prompt_logits(**cpu, ids), b = prompt_logits(**gpu, ids, 4);
  ASSERT_TRUE(a.ok() && b.ok()) << b.status().to_string();
  const Agreement g = agree(b->tensor.ptr<float>(), a->tensor.ptr<float>(), static_cast<int64_t>(ids.size()), (*cpu)->config().vocab_size);
  std::printf("cuda smollm2 vs cpu f32: max |err| / max |logit| %.2e, top-1 agreement %.3f\n", g.rel_err, g.top1);
  EXPECT_LE(g.rel_err, 5e-2);
  EXPECT_GE(g.top1, 0.8);
  GenerateOptions go;
  go.max_new_tokens = 8;
  auto gen = generate(**gpu, ids, go);
  ASSERT_TRUE(gen.ok()) << gen.status().to_string();
  EXPECT_EQ(gen->tokens.front(), 11452);  // " Berlin" (transformers' greedy continuation)
}

// forward_sample (logits stay on the GPU, CudaSampler draws) picks the ids that forward + sample_cpu
// pick for the same batch: greedy rows and seeded temperature/top-k/top-p/min-p rows.
TEST(CudaDeviceSampling, MatchesHostSampling) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  auto model = golden_cuda_model("llama3");
  ASSERT_TRUE(model.ok()) << model.status().to_string();
  Model& m = **model;
  ASSERT_TRUE(m.samples_on_device());
  auto kv = m.allocate_kv_cache(64, 16);
  ASSERT_TRUE(kv.ok());
  // Three sequences of 7, 1 and 20 prompt tokens in blocks 0.., 10.., 20...
  ForwardBatch b;
  const int lens[] = {7, 1, 20};
  b.cu_seqlens_q.push_back(0);
  b.max_blocks_per_seq = 2;
  std::mt19937 rng(7);
  for (int s = 0; s < 3; ++s) {
    for (int p = 0; p < lens[s]; ++p) {
      b.token_ids.push_back(static_cast<int32_t>(rng() % static_cast<uint32_t>(m.config().vocab_size)));
      b.positions.push_back(p);
      b.slot_mapping.push_back((s * 10 + p / 16) * 16 + p % 16);
    }
    b.cu_seqlens_q.push_back(static_cast<int32_t>(b.token_ids.size()));
    b.kv_lens.push_back(lens[s]);
    b.block_tables.push_back(s * 10);
    b.block_tables.push_back(s * 10 + 1);
    b.logits_rows.push_back(b.cu_seqlens_q.back() - 1);
  }
  for (int trial = 0; trial < 4; ++trial) {
    std::vector<SamplingParams> params(3);
    std::vector<uint64_t> steps = {0, 3, 11};
    for (int r = 0; r < 3; ++r) {
      if (trial == 0) continue;  // all greedy
      params[r].temperature = 0.5f + 0.4f * r;
      params[r].top_k = trial == 2 ? 40 : 0;
      params[r].top_p = trial == 3 ? 0.9f : 1.0f;
      params[r].min_p = trial == 3 ? 0.02f : 0.0f;
      params[r].seed = 1000 + trial * 7 + r;
    }
    HostTensor logits = HostTensor::zeros(DType::kF32, {3, m.config().vocab_size});
    ASSERT_TRUE(m.forward(b, *kv, logits.tensor).ok());
    // Odd trials ban each row's argmax (and one more token): the pick must move the same way.
    std::vector<std::pair<int32_t, int32_t>> banned;
    const int64_t vocab = m.config().vocab_size;
    for (int32_t r = 0; r < 3 && trial % 2 == 1; ++r) {
      const float* row = logits.tensor.ptr<float>() + r * vocab;
      banned.emplace_back(r, static_cast<int32_t>(std::max_element(row, row + vocab) - row));
      banned.emplace_back(r, static_cast<int32_t>((r * 37 + 11) % vocab));
    }
    std::vector<int32_t> want(3);
    SampleArgs args{logits.tensor, params, steps, Tensor::view(want.data(), DType::kInt32, {3}), banned};
    ASSERT_TRUE(sample_cpu(args).ok());
    for (const auto& [r, t] : banned) EXPECT_NE(want[static_cast<size_t>(r)], t);
    std::vector<int32_t> got;
    const Status s = m.forward_sample(b, *kv, params, steps, banned, &got);
    ASSERT_TRUE(s.ok()) << s.to_string();
    EXPECT_EQ(got, want) << "trial " << trial;
  }
}

// The same model seen as one that samples on the host (forward + sample_cpu): generate's path
// before device sampling, for comparing the two.
class HostSampling : public Model {
 public:
  explicit HostSampling(Model& m) : m_(m) {}
  const ModelConfig& config() const override { return m_.config(); }
  Status forward(const ForwardBatch& b, const KvCacheView& kv, Tensor logits) override { return m_.forward(b, kv, logits); }
  Device device() const override { return m_.device(); }
  Result<KvCacheView> allocate_kv_cache(int64_t blocks, int64_t block_size) override {
    return m_.allocate_kv_cache(blocks, block_size);
  }

 private:
  Model& m_;
};

// generate() on a GPU model draws on the device (forward_sample, no logits copy): the same tokens
// as forward + sample_cpu, greedy and seeded temperature / top-k / top-p, with a prompt longer
// than one prefill chunk (the first token comes from the last chunk).
TEST(CudaDeviceSampling, GenerateMatchesHostSampling) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  for (const char* name : {"llama3", "mixtral"}) {
    auto model = golden_cuda_model(name);
    ASSERT_TRUE(model.ok()) << model.status().to_string();
    ASSERT_TRUE((*model)->samples_on_device());
    HostSampling host(**model);
    std::vector<int32_t> prompt;
    for (int i = 0; i < 21; ++i) prompt.push_back((i * 37 + 5) % 200);
    for (int trial = 0; trial < 3; ++trial) {
      SCOPED_TRACE(std::string(name) + " trial " + std::to_string(trial));
      GenerateOptions go;
      go.max_new_tokens = 12;
      go.prefill_chunk = 8;  // three prefill steps
      if (trial > 0) {
        go.sampling = {0.8f, trial == 2 ? 20 : 0, trial == 2 ? 0.9f : 1.0f, 0.0f, 77u + static_cast<uint64_t>(trial)};
      }
      auto dev = generate(**model, prompt, go), ref = generate(host, prompt, go);
      ASSERT_TRUE(dev.ok() && ref.ok()) << dev.status().to_string() << ref.status().to_string();
      EXPECT_EQ(dev->tokens.size(), 12u);
      EXPECT_EQ(dev->tokens, ref->tokens);
    }
  }
}

// fp8 weights (per channel and per tensor) and the fp8 KV cache on the GPU against the CPU model
// with the same options (the same fp8 weights dequantized, the same fp8 cache rounding); prompt
// chunks above the decode GEMM's m quantize activations per token on the GPU, so those are held
// against a CPU run with fp8_activations. The GPU adds bf16 activations: hence the looser bound
// than the bf16 comparison.
TEST(CudaFp8, LogitsMatchCpuFp8Model) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  struct Case { const char* name; bool per_tensor, kv; };
  for (const Case& tc : {Case{"llama3", false, false}, Case{"llama3", true, true}, Case{"qwen2", false, true},
                         Case{"mixtral", false, true}}) {
    const std::string dir = std::string(KILN_SOURCE_DIR) + "/tests/golden/" + tc.name;
    auto golden = SafetensorsFile::open(dir + "/golden.safetensors");
    ASSERT_TRUE(golden.ok());
    const SafetensorsTensor* ids_t = golden->find("input_ids");
    std::vector<int32_t> ids(reinterpret_cast<const int32_t*>(ids_t->data), reinterpret_cast<const int32_t*>(ids_t->data) + ids_t->nbytes / 4);
    ModelOptions o;
    o.fp8_weights = true;
    o.fp8_per_tensor = tc.per_tensor;
    o.fp8_kv_cache = tc.kv;
    // Runs: CPU (f32 activations), CPU with fp8 activations, GPU chunk 5 (decode GEMMs,
    // bf16 activations), GPU chunk 256 (prefill GEMMs: activations quantized per token). Each GPU
    // run is compared with the CPU run of the same activation numerics.
    std::vector<HostTensor> logits;
    for (int run = 0; run < 3; ++run) {
      const Device dev = run < 2 ? Device::kCpu : Device::kCuda;
      auto loaded = load_model(dir, dev == Device::kCuda ? DType::kBF16 : DType::kF32);
      ASSERT_TRUE(loaded.ok());
      o.device = dev;
      o.fp8_activations = run == 1;
      auto model = create_model(std::move(loaded).value(), o);
      ASSERT_TRUE(model.ok()) << model.status().to_string();
      for (int64_t chunk : {int64_t{5}, int64_t{256}}) {  // decode-sized and prefill-sized GEMMs
        if (dev == Device::kCpu && chunk == 256) continue;
        auto l = prompt_logits(**model, ids, chunk);
        ASSERT_TRUE(l.ok()) << l.status().to_string();
        logits.push_back(std::move(l).value());
      }
    }
    const int64_t vocab = logits[0].tensor.shape[1], rows = static_cast<int64_t>(ids.size());
    for (size_t g = 2; g < logits.size(); ++g) {
      const HostTensor& want = logits[g == 2 ? 0 : 1];
      const Agreement a = agree(logits[g].tensor.ptr<float>(), want.tensor.ptr<float>(), rows, vocab);
      std::printf("cuda fp8 %s per_tensor=%d kv=%d %s: max |err| / max |logit| %.2e, top-1 agreement %.3f\n", tc.name, tc.per_tensor,
                  tc.kv, g == 2 ? "chunk 5 vs cpu" : "chunk 256 vs cpu fp8-activations", a.rel_err, a.top1);
      // Mixtral: a top-2 router on fp8-rounded hidden states may pick another expert for a token
      // here and there (measured 7.2e-2 on the H100; top-1 agreement 0.96). Prompt-sized chunks:
      // the GPU quantizes bf16 activations, the CPU f32 ones, so about 1 in 64 values lands on the
      // neighbouring fp8 code (6% apart) and these tiny random models (logits bunched within a few
      // units) amplify that: measured 0.09-0.18 of max |logit| and top-1 0.71-0.96 on the H100.
      // A missing or misapplied scale gives errors of the order of the logits themselves (>= 1);
      // the GEMM itself is held exactly in GemmFp8PrefillCuda.
      const bool prompt_chunk = g == 3;
      EXPECT_LE(a.rel_err, prompt_chunk ? 2.5e-1 : std::string(tc.name) == "mixtral" ? 1e-1 : 6e-2) << tc.name;
      EXPECT_GE(a.top1, prompt_chunk ? 0.6 : 0.85) << tc.name;
    }
  }
}

// The decode-regime MoE path (expert GEMMs reading the routing ids on the device) against the
// grouped path (host offsets, one cuBLASLt/skinny GEMM per expert): same logits up to bf16
// rounding for bf16 experts and for fp8 experts with bf16 x (KILN_MOE_X_FP8=0: the f16-widening
// row). The default fp8 decode row (wgmma) quantizes x per token to e4m3 where the grouped path's
// small per-expert GEMMs keep bf16 x: on this tiny random model that alone moves the logits by
// ~0.1 of their max (H100: max 0.103, mean 9.6e-3, top-1 0.875 in every clean run); so that row
// gets the CudaFp8 prompt bounds plus a bound on the mean error over all logits (a missing or
// misapplied scale moves every logit by about its own size). Its arithmetic is held exactly by
// MoeDecodeGemmCuda against the per-token CPU reference. Some full-suite runs on 2026-11-22 gave
// max 0.22-0.66 / mean 5.3e-2 here (not reproducible on demand; see the MoE decode GEMM's ids read).
TEST(CudaMoeDecode, MatchesGroupedPath) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const std::string dir = std::string(KILN_SOURCE_DIR) + "/tests/golden/mixtral";
  auto golden = SafetensorsFile::open(dir + "/golden.safetensors");
  ASSERT_TRUE(golden.ok());
  const SafetensorsTensor* ids_t = golden->find("input_ids");
  std::vector<int32_t> ids(reinterpret_cast<const int32_t*>(ids_t->data), reinterpret_cast<const int32_t*>(ids_t->data) + ids_t->nbytes / 4);
  // chunk: tokens per forward (3: 6 slots a step; 96 / 192 / 240, the prompt repeated 4 / 8 / 10
  // times: 192 / 384 slots, the wgmma row with 64-slot passes, as past 64 decoding sequences; 480
  // slots, the 96-slot row, past 208).
  struct Case { bool fp8; bool x_fp8; int chunk; double max_err, max_mean_err, min_top1; };
  for (const Case& c : {Case{false, false, 3, 2e-2, 2e-3, 0.95}, Case{true, false, 3, 2e-2, 2e-3, 0.95},
                        Case{true, true, 3, 2.5e-1, 2e-2, 0.75}, Case{true, true, 96, 2.5e-1, 2e-2, 0.75},
                        Case{true, true, 192, 2.5e-1, 2e-2, 0.75}, Case{true, true, 240, 2.5e-1, 2e-2, 0.75}}) {
    std::vector<HostTensor> logits;
    setenv("KILN_MOE_X_FP8", c.x_fp8 ? "1" : "0", 1);
    std::vector<int32_t> prompt;
    const int repeats = c.chunk > 3 ? c.chunk / static_cast<int>(ids.size()) : 1;  // (24 golden ids)
    for (int r = 0; r < repeats; ++r) prompt.insert(prompt.end(), ids.begin(), ids.end());
    for (const char* path : {"0", "512"}) {
      setenv("KILN_MOE_DECODE", path, 1);
      auto model = cuda_model_from(dir, c.fp8);
      ASSERT_TRUE(model.ok()) << model.status().to_string();
      auto l = prompt_logits(**model, prompt, c.chunk);
      ASSERT_TRUE(l.ok()) << l.status().to_string();
      logits.push_back(std::move(l).value());
    }
    unsetenv("KILN_MOE_DECODE");
    unsetenv("KILN_MOE_X_FP8");
    const Agreement a = agree(logits[1].tensor.ptr<float>(), logits[0].tensor.ptr<float>(), static_cast<int64_t>(prompt.size()),
                              logits[0].tensor.shape[1]);
    std::printf("moe decode vs grouped (fp8=%d, x fp8=%d, chunk %d): max |err| / max |logit| %.2e, mean %.2e, top-1 agreement %.3f\n",
                c.fp8, c.x_fp8, c.chunk, a.rel_err, a.mean_rel_err, a.top1);
    EXPECT_LE(a.rel_err, c.max_err);
    EXPECT_LE(a.mean_rel_err, c.max_mean_err);
    EXPECT_GE(a.top1, c.min_top1);
  }
}

}  // namespace
}  // namespace kiln
