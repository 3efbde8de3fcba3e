// `kiln bench latency` (run_latency): the greedy chain it decodes, the forwards it times, and that
// a model which samples on the device is driven through forward_sample (no logits to the host),
// as the engine's runner drives it.
#include "kiln/bench/latency_bench.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

namespace kiln::bench {
namespace {

constexpr int64_t kVocab = 97;

// Scripted logits: row r's largest entry is at (token + 3 * position + 5) % vocab of its last
// token, so the greedy chain is known in advance. Records every batch it is given.
class ScriptedModel : public Model {
 public:
  explicit ScriptedModel(bool on_device) : on_device_(on_device) {
    config_.vocab_size = kVocab;
    config_.max_position_embeddings = 4096;
  }
  static int32_t next_of(int32_t token, int32_t pos) { return (token + 3 * pos + 5) % kVocab; }
  const ModelConfig& config() const override { return config_; }
  Result<KvCacheView> allocate_kv_cache(int64_t blocks, int64_t block_size) override {
    kv_blocks = blocks * block_size;
    return KvCacheView{};
  }
  Status forward(const ForwardBatch& b, const KvCacheView&, Tensor logits) override {
    ++host_calls;
    batches.push_back(b);
    float* p = logits.ptr<float>();
    for (size_t r = 0; r < b.logits_rows.size(); ++r) {
      float* row = p + static_cast<int64_t>(r) * kVocab;
      std::fill(row, row + kVocab, 0.f);
      const auto i = static_cast<size_t>(b.logits_rows[r]);
      row[next_of(b.token_ids[i], b.positions[i])] = 1.f;
    }
    return ok_status();
  }
  bool samples_on_device() const override { return on_device_; }
  Status forward_sample(const ForwardBatch& b, const KvCacheView&, const std::vector<SamplingParams>& params,
                        const std::vector<uint64_t>& steps, const std::vector<std::pair<int32_t, int32_t>>& banned,
                        std::vector<int32_t>* ids) override {
    ++device_calls;
    batches.push_back(b);
    EXPECT_EQ(params.size(), b.logits_rows.size());
    EXPECT_EQ(steps.size(), b.logits_rows.size());
    EXPECT_TRUE(banned.empty());
    for (const SamplingParams& s : params) EXPECT_EQ(s.temperature, 0.f) << "greedy";
    ids->clear();
    for (int32_t row : b.logits_rows) ids->push_back(next_of(b.token_ids[static_cast<size_t>(row)], b.positions[static_cast<size_t>(row)]));
    return ok_status();
  }
  int host_calls = 0, device_calls = 0;
  int64_t kv_blocks = 0;
  std::vector<ForwardBatch> batches;

 private:
  bool on_device_;
  ModelConfig config_;
};

// Checks the recorded batches of one iteration: ceil(input / chunk) prefill forwards of every
// sequence's next prompt tokens, then output - 1 decode forwards, each feeding the greedy token of
// the forward before it at the next position.
void expect_greedy_chain(const ScriptedModel& m, const LatencyOptions& o) {
  const int64_t chunk = std::max<int64_t>(1, o.max_prefill_tokens / o.batch_size);
  const auto prefills = static_cast<size_t>((o.input_len + chunk - 1) / chunk);
  ASSERT_EQ(m.batches.size(), prefills + static_cast<size_t>(o.output_len - 1));
  std::vector<int32_t> next;
  for (size_t f = 0; f < m.batches.size(); ++f) {
    const ForwardBatch& b = m.batches[f];
    ASSERT_EQ(b.logits_rows.size(), static_cast<size_t>(o.batch_size));
    if (f >= prefills) {  // decode: one token per sequence, the previous greedy pick
      ASSERT_EQ(b.token_ids.size(), static_cast<size_t>(o.batch_size));
      for (int64_t s = 0; s < o.batch_size; ++s) {
        EXPECT_EQ(b.token_ids[static_cast<size_t>(s)], next[static_cast<size_t>(s)]) << "forward " << f << " seq " << s;
        EXPECT_EQ(b.positions[static_cast<size_t>(s)], o.input_len + static_cast<int64_t>(f - prefills));
      }
    }
    next.clear();
    for (int32_t row : b.logits_rows)
      next.push_back(ScriptedModel::next_of(b.token_ids[static_cast<size_t>(row)], b.positions[static_cast<size_t>(row)]));
  }
}

LatencyOptions small_options() {
  LatencyOptions o;
  o.batch_size = 3;
  o.input_len = 7;
  o.output_len = 5;
  o.num_iters = 1;
  o.num_iters_warmup = 0;
  o.max_prefill_tokens = 9;  // 3 tokens per sequence per prefill forward: 3 forwards for 7
  return o;
}

TEST(LatencyBench, HostModelDecodesTheGreedyChainFromHostLogits) {
  ScriptedModel m(false);
  const LatencyOptions o = small_options();
  auto its = run_latency(m, o);
  ASSERT_TRUE(its.ok()) << its.status().to_string();
  ASSERT_EQ(its->size(), 1u);
  EXPECT_EQ((*its)[0].decode_step_s.size(), static_cast<size_t>(o.output_len - 1));
  EXPECT_EQ(m.device_calls, 0);
  EXPECT_EQ(m.host_calls, 3 + 4);
  expect_greedy_chain(m, o);
}

// A GPU model: every forward goes through forward_sample (greedy on the device); the f32 logits of
// the whole batch never come back to the host (the cost that made batched steps look ~2x slow).
TEST(LatencyBench, DeviceSamplingModelNeverCopiesLogits) {
  ScriptedModel m(true);
  const LatencyOptions o = small_options();
  auto its = run_latency(m, o);
  ASSERT_TRUE(its.ok()) << its.status().to_string();
  EXPECT_EQ(m.host_calls, 0);
  EXPECT_EQ(m.device_calls, 3 + 4);
  expect_greedy_chain(m, o);
  const auto j = latency_json(*its, o);
  EXPECT_EQ(j["decode_steps"].get<int64_t>(), o.output_len - 1);
  EXPECT_TRUE(std::isfinite(j["decode_step_mean_ms"].get<double>()));
}

TEST(LatencyBench, RefusesEmptyRuns) {
  ScriptedModel m(true);
  LatencyOptions o = small_options();
  o.output_len = 0;
  EXPECT_FALSE(run_latency(m, o).ok());
  EXPECT_EQ(m.device_calls, 0);
}

}  // namespace
}  // namespace kiln::bench
