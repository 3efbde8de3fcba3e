// Engine on the tiny Llama 3 checkpoint (tests/golden/llama3): batched, chunked, prefix-cached and
// preempted runs give exactly the tokens of the single-sequence generate(); prompt logprobs match
// prompt_logits(); aborts free every block; impossible requests are rejected up front.
#include "kiln/engine/engine.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include <cmath>
#include <map>
#include <random>

#include "kiln/engine/generator.h"
#include "kiln/engine/sampler.h"
#include "kiln/io/model_loader.h"
#include "kiln/kernels/sampling.h"

namespace kiln {
namespace {

const std::string kTiny = std::string(KILN_SOURCE_DIR) + "/tests/golden/llama3";

std::unique_ptr<Model> tiny_model() {
  auto loaded = load_model(kTiny, DType::kF32);
  EXPECT_TRUE(loaded.ok()) << loaded.status().to_string();
  auto model = create_model(std::move(loaded).value());
  EXPECT_TRUE(model.ok()) << model.status().to_string();
  return std::move(model).value();
}

std::vector<std::vector<int32_t>> random_prompts(int count, uint32_t seed) {
  std::mt19937 rng(seed);
  const int lengths[] = {1, 5, 16, 17, 40, 3, 33, 64, 9, 2, 70, 31};
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < count; ++i) {
    std::vector<int32_t> p(static_cast<size_t>(lengths[i % 12]));
    for (auto& id : p) id = static_cast<int32_t>(3 + rng() % 300);
    prompts.push_back(p);
  }
  return prompts;
}

GenerationParams params_for(int i, int64_t max_tokens) {
  GenerationParams p;
  p.max_tokens = max_tokens;
  p.ignore_eos = true;
  if (i % 2 == 1) p.sampling = {0.8f, 40, 0.95f, 0.f, static_cast<uint64_t>(1000 + i)};
  return p;
}

// Runs every request to the end with step(); returns each one's tokens and final output.
struct Outcome {
  std::vector<int32_t> tokens;
  RequestOutput last;
  std::vector<TokenOutput> prompt_logprobs;
};

std::vector<Outcome> run_all(Engine& engine, const std::vector<Request>& requests) {
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const Request& r : requests) {
    auto s = engine.add_request(r);
    EXPECT_TRUE(s.ok()) << s.status().to_string();
    streams.push_back(*s);
  }
  do {
    EXPECT_TRUE(engine.step().ok());
  } while (engine.has_unfinished());
  std::vector<Outcome> out(streams.size());
  for (size_t i = 0; i < streams.size(); ++i) {
    for (RequestOutput& o : streams[i]->take()) {
      for (const TokenOutput& t : o.tokens) out[i].tokens.push_back(t.id);
      if (!o.prompt_logprobs.empty()) out[i].prompt_logprobs = o.prompt_logprobs;
      out[i].last = std::move(o);
    }
    EXPECT_TRUE(out[i].last.finished());
  }
  return out;
}

std::vector<int32_t> reference(Model& model, const std::vector<int32_t>& prompt, const GenerationParams& p) {
  GenerateOptions go;
  go.max_new_tokens = p.max_tokens;
  go.sampling = p.sampling;
  auto r = generate(model, prompt, go);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r->tokens;
}

struct Case {
  const char* name;
  EngineConfig config;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class EngineMatchesGenerate : public ::testing::TestWithParam<Case> {};

TEST_P(EngineMatchesGenerate, SameTokens) {
  auto model = tiny_model();
  std::unique_ptr<Model> ref_model = tiny_model();
  auto engine = Engine::create(std::move(model), nullptr, GetParam().config);
  ASSERT_TRUE(engine.ok()) << engine.status().to_string();
  const auto prompts = random_prompts(12, 7);
  std::vector<Request> requests;
  for (size_t i = 0; i < prompts.size(); ++i) requests.push_back({prompts[i], params_for(static_cast<int>(i), 24)});
  auto out = run_all(**engine, requests);
  // Some of the prompts again: now their prefixes are in the cache.
  const std::vector<Request> again(requests.begin() + 3, requests.begin() + 9);
  const auto out2 = run_all(**engine, again);
  requests.insert(requests.end(), again.begin(), again.end());
  out.insert(out.end(), out2.begin(), out2.end());
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(out[i].tokens, reference(*ref_model, requests[i].prompt, requests[i].params)) << GetParam().name << " request " << i;
    EXPECT_EQ(out[i].last.finish, FinishReason::kLength);
    EXPECT_EQ(out[i].last.completion_tokens, 24);
  }
  const EngineStats st = (*engine)->stats();
  EXPECT_EQ(st.num_free_blocks, st.num_blocks);
  EXPECT_EQ(st.generation_tokens_total, 24 * static_cast<int64_t>(requests.size()));
  std::printf("%s: %lld steps, %lld preemptions, %lld cached prompt tokens\n", GetParam().name,
              static_cast<long long>(st.steps_total), static_cast<long long>(st.preemptions_total),
              static_cast<long long>(st.cached_prompt_tokens_total));
  if (std::string(GetParam().name) == "tiny_pool") {
    EXPECT_GT(st.preemptions_total, 0);
  }
  if (GetParam().config.prefix_caching && GetParam().config.num_kv_blocks >= 64) {
    EXPECT_GT(st.cached_prompt_tokens_total, 0);  // the repeated prompts found their prefixes
  }
}

EngineConfig make_config(int64_t seqs, int64_t tokens, int64_t blocks, bool prefix) {
  EngineConfig c;
  c.max_num_seqs = seqs;
  c.max_num_batched_tokens = tokens;
  c.num_kv_blocks = blocks;
  c.prefix_caching = prefix;
  return c;
}

INSTANTIATE_TEST_SUITE_P(Configs, EngineMatchesGenerate,
                         ::testing::Values(Case{"roomy", make_config(64, 512, 256, true)},
                                           Case{"no_prefix_cache", make_config(64, 512, 256, false)},
                                           Case{"small_chunks", make_config(5, 7, 256, true)},
                                           Case{"tiny_pool", make_config(16, 64, 8, true)},
                                           Case{"tiny_pool_no_cache", make_config(16, 64, 8, false)}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(Engine, PromptLogprobsMatchPromptLogits) {
  auto engine = Engine::create(tiny_model(), nullptr, make_config(8, 6, 64, true));
  ASSERT_TRUE(engine.ok());
  auto ref_model = tiny_model();
  const std::vector<int32_t> prompt = random_prompts(5, 3)[4];  // 40 tokens, 7 chunks
  GenerationParams p;
  p.max_tokens = 2;
  p.prompt_logprobs = 3;
  p.logprobs = 2;
  const auto out = run_all(**engine, {{prompt, p}});
  auto logits = prompt_logits(*ref_model, prompt);
  ASSERT_TRUE(logits.ok());
  const int64_t vocab = ref_model->config().vocab_size;
  ASSERT_EQ(out[0].prompt_logprobs.size(), prompt.size() - 1);
  for (size_t pos = 0; pos + 1 < prompt.size(); ++pos) {
    const float* row = logits->tensor.ptr<float>() + static_cast<int64_t>(pos) * vocab;
    const TokenOutput want = token_logprobs(row, vocab, prompt[pos + 1], 3);
    const TokenOutput& got = out[0].prompt_logprobs[pos];
    EXPECT_EQ(got.id, prompt[pos + 1]);
    EXPECT_NEAR(got.logprob, want.logprob, 1e-4) << pos;
    ASSERT_EQ(got.top.size(), 3u);
    EXPECT_EQ(got.top[0].id, want.top[0].id);
  }
  const TokenOutput& first = out[0].last.tokens.empty() ? TokenOutput{} : out[0].last.tokens[0];
  EXPECT_TRUE(std::isfinite(first.logprob));
  EXPECT_EQ(first.top.size(), 2u);
}

TEST(Engine, AbortFreesBlocksAndEndsTheStream) {
  auto engine = Engine::create(tiny_model(), nullptr, make_config(8, 64, 32, true));
  ASSERT_TRUE(engine.ok());
  GenerationParams p;
  p.max_tokens = 200;
  p.ignore_eos = true;
  auto a = (*engine)->add_request({random_prompts(5, 9)[4], p});
  auto b = (*engine)->add_request({random_prompts(5, 9)[2], p});
  ASSERT_TRUE(a.ok() && b.ok());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE((*engine)->step().ok());
  EXPECT_LT((*engine)->stats().num_free_blocks, 32);
  (*engine)->abort((*a)->id());
  (*engine)->abort((*b)->id());
  (*engine)->abort(12345);  // unknown ids are ignored
  ASSERT_TRUE((*engine)->step().ok());
  EXPECT_FALSE((*engine)->has_unfinished());
  EXPECT_EQ((*engine)->stats().num_free_blocks, 32);
  auto outs = (*a)->take();
  ASSERT_FALSE(outs.empty());
  EXPECT_EQ(outs.back().finish, FinishReason::kAbort);
  EXPECT_TRUE((*b)->finished());
}

TEST(Engine, WarmUpLeavesNoTrace) {
  auto engine = Engine::create(tiny_model(), nullptr, make_config(8, 48, 32, true));
  ASSERT_TRUE(engine.ok());
  ASSERT_TRUE((*engine)->warm_up(5).ok());
  const EngineStats st = (*engine)->stats();
  EXPECT_EQ(st.steps_total, 0);
  EXPECT_EQ(st.prompt_tokens_total, 0);
  EXPECT_EQ(st.generation_tokens_total, 0);
  EXPECT_EQ(st.time_to_first_token.count(), 0);
  EXPECT_EQ(st.num_free_blocks, 32);
  EXPECT_EQ(st.num_blocks, 32);
  // A prompt that starts like the warm-up's (48 tokens: 3 full blocks) finds nothing cached and
  // gives generate()'s tokens.
  const int64_t vocab = (*engine)->model_config().vocab_size;
  std::vector<int32_t> prompt;
  for (int64_t i = 0; i < 40; ++i) prompt.push_back(static_cast<int32_t>((i * 7919 + 13) % vocab));
  const GenerationParams p = params_for(0, 6);
  const std::vector<Outcome> out = run_all(**engine, {{prompt, p}});
  EXPECT_EQ(out[0].last.cached_tokens, 0);
  auto ref = tiny_model();
  EXPECT_EQ(out[0].tokens, reference(*ref, prompt, p));
  EXPECT_EQ((*engine)->stats().prompt_tokens_total, 40);
  (*engine)->start();
  EXPECT_EQ((*engine)->warm_up().code(), StatusCode::kInvalidArgument);  // not while the loop runs
  (*engine)->stop();
}

TEST(Engine, RejectsWhatCanNeverRun) {
  auto engine = Engine::create(tiny_model(), nullptr, make_config(8, 64, 4, true));  // 64 KV slots
  ASSERT_TRUE(engine.ok());
  GenerationParams p;
  p.max_tokens = 10;
  EXPECT_EQ((*engine)->add_request({{}, p}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*engine)->add_request({{5, 400}, p}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*engine)->add_request({std::vector<int32_t>(60, 5), p}).status().code(), StatusCode::kResourceExhausted);
  p.max_tokens = 300;  // context is 256
  EXPECT_EQ((*engine)->add_request({{5}, p}).status().code(), StatusCode::kOutOfRange);
  p.max_tokens = 10;
  p.sampling.top_p = 0.f;
  EXPECT_EQ((*engine)->add_request({{5}, p}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*engine)->max_total_tokens(), 65);
}

TEST(Engine, ThreadedLoopStreamsAndStops) {
  auto engine = Engine::create(tiny_model(), nullptr, make_config(8, 64, 64, true));
  ASSERT_TRUE(engine.ok());
  auto ref_model = tiny_model();
  (*engine)->start();
  std::atomic<int> notified{0};
  GenerationParams p;
  p.max_tokens = 12;
  p.ignore_eos = true;
  const auto prompt = random_prompts(3, 5)[2];
  auto s = (*engine)->add_request({prompt, p}, [&] { ++notified; });
  ASSERT_TRUE(s.ok());
  std::vector<int32_t> tokens;
  for (bool done = false; !done;) {
    for (RequestOutput& o : (*s)->wait()) {
      for (const TokenOutput& t : o.tokens) tokens.push_back(t.id);
      done = o.finished();
    }
  }
  EXPECT_EQ(tokens, reference(*ref_model, prompt, p));
  // The engine thread may call the last notification just after the stream shows the output.
  for (int i = 0; i < 1000 && notified.load() < 12; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(notified.load(), 12);
  p.max_tokens = 200;
  // Its notification sleeps 1 ms a step on the engine thread, so that the tiny model cannot run
  // the request to its length before stop() (CI on a loaded 2-core machine once saw kLength).
  auto long_one = (*engine)->add_request({prompt, p}, [] { std::this_thread::sleep_for(std::chrono::milliseconds(1)); });
  ASSERT_TRUE(long_one.ok());
  (*engine)->stop();  // whatever is left is aborted
  auto outs = (*long_one)->take();
  ASSERT_FALSE(outs.empty());
  EXPECT_EQ(outs.back().finish, FinishReason::kAbort);
}

// A model that "samples on the device" the way a GPU model does (forward, then the kernels'
// sampler with the banned pairs), so the runner's choice between device and host sampling and its
// min_tokens masking run here without a GPU. It records what it was asked.
class DeviceSamplingModel : public Model {
 public:
  explicit DeviceSamplingModel(std::unique_ptr<Model> inner) : inner_(std::move(inner)) {}
  const ModelConfig& config() const override { return inner_->config(); }
  Status forward(const ForwardBatch& b, const KvCacheView& kv, Tensor logits) override {
    ++host_calls;
    return inner_->forward(b, kv, logits);
  }
  Result<KvCacheView> allocate_kv_cache(int64_t blocks, int64_t block_size) override {
    return inner_->allocate_kv_cache(blocks, block_size);
  }
  bool samples_on_device() const override { return true; }
  Status forward_sample(const ForwardBatch& b, const KvCacheView& kv, const std::vector<SamplingParams>& params,
                        const std::vector<uint64_t>& steps, const std::vector<std::pair<int32_t, int32_t>>& banned,
                        std::vector<int32_t>* ids) override {
    ++device_calls;
    const auto rows = static_cast<int64_t>(b.logits_rows.size());
    HostTensor logits = HostTensor::zeros(DType::kF32, {rows, config().vocab_size});
    KILN_RETURN_IF_ERROR(inner_->forward(b, kv, logits.tensor));
    ids->assign(static_cast<size_t>(rows), -1);
    for (const auto& pair : banned) seen_banned.push_back(pair);
    return sample_cpu({logits.tensor, params, steps, Tensor::view(ids->data(), DType::kInt32, {rows}), banned});
  }
  int host_calls = 0, device_calls = 0;
  std::vector<std::pair<int32_t, int32_t>> seen_banned;

 private:
  std::unique_ptr<Model> inner_;
};

// Device sampling gives the tokens of host sampling; min_tokens bans the EOS and stop ids while
// it applies (and only then); a request that wants logprobs sends its steps back to the host.
TEST(EngineDeviceSampling, MatchesHostSamplingAndMasksMinTokens) {
  const auto prompts = random_prompts(6, 11);
  std::vector<Request> requests;
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerationParams p = params_for(static_cast<int>(i), 12);
    p.ignore_eos = false;
    p.min_tokens = i < 3 ? 6 : 0;
    if (i == 1) p.stop_token_ids = {7, 9};
    requests.push_back({prompts[i], p});
  }
  EngineConfig config = make_config(8, 64, 256, false);
  auto host = Engine::create(tiny_model(), nullptr, config);
  ASSERT_TRUE(host.ok());
  const auto want = run_all(**host, requests);
  auto wrapped = std::make_unique<DeviceSamplingModel>(tiny_model());
  DeviceSamplingModel* dev = wrapped.get();
  auto engine = Engine::create(std::move(wrapped), nullptr, config);
  ASSERT_TRUE(engine.ok());
  const auto got = run_all(**engine, requests);
  for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(got[i].tokens, want[i].tokens) << "request " << i;
  EXPECT_GT(dev->device_calls, 0);
  EXPECT_EQ(dev->host_calls, 0);
  // Banned pairs name the model's EOS ids and request 1's stop ids, for rows under min_tokens only.
  const std::vector<int64_t>& eos = dev->config().eos_token_ids;
  ASSERT_FALSE(dev->seen_banned.empty());
  bool saw_stop = false;
  for (const auto& [row, token] : dev->seen_banned) {
    const bool is_eos = std::find(eos.begin(), eos.end(), token) != eos.end();
    saw_stop = saw_stop || token == 7 || token == 9;
    EXPECT_TRUE(is_eos || token == 7 || token == 9) << token;
  }
  EXPECT_TRUE(saw_stop);
  for (size_t i = 0; i < 3; ++i) EXPECT_GE(got[i].tokens.size(), 6u);

  // One request with logprobs: the steps it is in sample on the host.
  std::vector<Request> with_logprobs = {requests[3], requests[4]};
  with_logprobs[1].params.logprobs = 2;
  const int before = dev->host_calls;
  const auto mixed = run_all(**engine, with_logprobs);
  EXPECT_GT(dev->host_calls, before);
  EXPECT_EQ(mixed[0].tokens, want[3].tokens);
  EXPECT_EQ(mixed[1].tokens, want[4].tokens);
}

}  // namespace
}  // namespace kiln
