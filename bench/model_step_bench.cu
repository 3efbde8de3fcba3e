// Whole forward steps of a dummy-weight model on the GPU, the shapes a serving step takes
// (Mixtral-8x7B fp8 by default: the serving benchmark A's model): wall time per step (forward +
// device sampling, as the engine's ModelRunner calls it) and the model TFLOP/s it implies.
//   model_step_bench [CONFIG_DIR] [bf16]     (default bench/models/mixtral-8x7b, fp8 weights + fp8 KV)
// Steps: "prefill" two 1024-token prompts; "mixed" one 1024-token chunk + 40 decode tokens;
// "decodeN" N (48, 32, 16, 4, 1) single-token sequences at ~1050 cached tokens. Each is timed
// warm (the same batch again: GEMM plans cached) and fresh (other token ids: new routing, new
// expert row counts).
// KILN_STEP_PROFILE=1: one warm run of each step between cudaProfilerStart/Stop (for
// `ncu --profile-from-start off`; steps split at the embedding kernel).
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kiln/io/model_loader.h"
#include "kiln/kernels/cuda/common/device_buffer.h"
#include "kiln/kernels/cuda/common/gpu_bench.h"
#include "kiln/models/model.h"

namespace kiln {
namespace {

using bench::check;

struct Step {
  std::string name;
  std::vector<int> prompt;  // per sequence: new tokens this step
  std::vector<int> cached;  // per sequence: tokens cached before this step
};

constexpr int kBlock = 16;

ForwardBatch make_batch(const Step& s, int64_t vocab, int salt, int max_blocks) {
  ForwardBatch b;
  b.max_blocks_per_seq = max_blocks;
  b.cu_seqlens_q.push_back(0);
  int next_block = 0;
  for (size_t i = 0; i < s.prompt.size(); ++i) {
    const int total = s.cached[i] + s.prompt[i];
    for (int t = 0; t < s.prompt[i]; ++t) {
      const int pos = s.cached[i] + t;
      b.token_ids.push_back(static_cast<int32_t>((static_cast<int64_t>(pos) * 7919 + i * 104729 + salt * 15485863 + 17) % vocab));
      b.positions.push_back(pos);
      b.slot_mapping.push_back((next_block + pos / kBlock) * kBlock + pos % kBlock);
    }
    b.cu_seqlens_q.push_back(static_cast<int32_t>(b.token_ids.size()));
    b.kv_lens.push_back(total);
    for (int j = 0; j < max_blocks; ++j) b.block_tables.push_back(next_block + std::min(j, (total - 1) / kBlock));
    next_block += (total + kBlock - 1) / kBlock;
    b.logits_rows.push_back(b.cu_seqlens_q.back() - 1);
  }
  return b;
}

// Model FLOPs of one step: 2 x active weights per token + attention (QK^T and PV over the context).
double step_flops(const ModelConfig& c, const Step& s, int64_t top_k) {
  const double h = static_cast<double>(c.hidden_size), d = static_cast<double>(c.head_dim);
  const double qkvo = h * (c.num_q_heads + 2 * c.num_kv_heads) * d + c.num_q_heads * d * h;
  const double ffn = 3.0 * h * c.intermediate_size * (c.num_experts ? static_cast<double>(top_k) : 1.0);
  double tokens = 0, attn = 0;
  for (size_t i = 0; i < s.prompt.size(); ++i) {
    tokens += s.prompt[i];
    for (int t = 0; t < s.prompt[i]; ++t) attn += 4.0 * c.num_q_heads * d * (s.cached[i] + t + 1);
  }
  return c.num_layers * (2.0 * tokens * (qkvo + ffn) + attn) + 2.0 * static_cast<double>(s.prompt.size()) * h * c.vocab_size;
}

double run_ms(Model& m, const ForwardBatch& b, const KvCacheView& kv) {
  const size_t rows = b.logits_rows.size();
  std::vector<SamplingParams> params(rows);
  std::vector<uint64_t> steps(rows, 0);
  std::vector<int32_t> ids;
  const auto t0 = std::chrono::steady_clock::now();
  check(m.forward_sample(b, kv, params, steps, {}, &ids), "forward_sample");
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace
}  // namespace kiln

int main(int argc, char** argv) {
  using namespace kiln;
  if (!cuda_available()) {
    std::printf("model_step_bench: %s\n", cuda_device_summary().c_str());
    return 0;
  }
  const std::string dir = argc > 1 ? argv[1] : std::string("bench/models/mixtral-8x7b");
  const bool fp8 = !(argc > 2 && std::string(argv[2]) == "bf16");
  auto loaded = load_config_only(dir);
  check(loaded.status(), "load_config_only");
  const ModelConfig config = loaded->config;
  ModelOptions o;
  o.device = Device::kCuda;
  o.dummy_weights = true;
  o.fp8_weights = fp8;
  o.fp8_kv_cache = fp8;
  auto model = create_model(std::move(loaded).value(), o);
  check(model.status(), "create_model");
  Model& m = **model;
  const int max_blocks = 72;
  auto kv = m.allocate_kv_cache(4096, kBlock);
  check(kv.status(), "allocate_kv_cache");
  const int64_t top_k = config.num_experts_per_tok;

  // KILN_STEP_SET: "prefill" the prefill and mixed steps only, "decode" the decode steps only.
  const char* set = std::getenv("KILN_STEP_SET");
  const bool prefill_only = set && std::string(set) == "prefill", decode_only = set && std::string(set) == "decode";
  std::vector<Step> steps;
  if (!decode_only) {
    steps.push_back({"prefill 2x1024", {1024, 1024}, {0, 0}});
    Step s{"mixed 1024+40", {}, {}};
    for (int i = 0; i < 40; ++i) { s.prompt.push_back(1); s.cached.push_back(1024 + i); }
    s.prompt.push_back(1024);
    s.cached.push_back(0);
    steps.push_back(s);
  }
  for (int n : {48, 32, 16, 4, 1}) {
    if (prefill_only) break;
    Step s{"decode " + std::to_string(n), {}, {}};
    for (int i = 0; i < n; ++i) { s.prompt.push_back(1); s.cached.push_back(1030 + i); }
    steps.push_back(s);
  }
  std::printf("model_step_bench: %s, %s weights, %d layers\n", dir.c_str(), fp8 ? "fp8" : "bf16", static_cast<int>(config.num_layers));
  const double peak = fp8 ? 1300.0 : 790.0;
  const char* prof = std::getenv("KILN_STEP_PROFILE");
  const bool profile = prof && std::string(prof) == "1";
  for (const Step& s : steps) {
    if (profile) {  // warm-up only: the profiled runs below
      const ForwardBatch warm = make_batch(s, config.vocab_size, 0, max_blocks);
      for (int i = 0; i < 2; ++i) run_ms(m, warm, *kv);
      continue;
    }
    const ForwardBatch warm = make_batch(s, config.vocab_size, 0, max_blocks);
    const double first = run_ms(m, warm, *kv);
    for (int i = 0; i < 2; ++i) run_ms(m, warm, *kv);
    std::vector<double> t;
    for (int i = 0; i < 5; ++i) t.push_back(run_ms(m, warm, *kv));
    std::sort(t.begin(), t.end());
    std::vector<double> fresh;
    for (int i = 1; i <= 3; ++i) fresh.push_back(run_ms(m, make_batch(s, config.vocab_size, i, max_blocks), *kv));
    std::sort(fresh.begin(), fresh.end());
    const double fl = step_flops(config, s, top_k);
    std::printf("  %-16s first %8.2f ms  warm %8.2f ms (min %8.2f)  fresh ids %8.2f ms  %.1f TFLOP/step\n", s.name.c_str(),
                first, t[2], t[0], fresh[1], fl / 1e12);
    bench::report("model_step", s.name, t[2], fl / t[2] / 1e9, peak, "TFLOP/s");
  }
  if (profile) {
    std::vector<ForwardBatch> batches;
    for (const Step& s : steps) batches.push_back(make_batch(s, config.vocab_size, 0, max_blocks));
    check(cudaDeviceSynchronize(), "sync");
    check(cudaProfilerStart(), "cudaProfilerStart");
    for (const ForwardBatch& b : batches) run_ms(m, b, *kv);
    check(cudaProfilerStop(), "cudaProfilerStop");
  }
  return 0;
}
