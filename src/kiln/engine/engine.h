// Engine: the serving loop. Callers on any thread add requests (each gets a RequestStream) and
// abort them; one engine thread repeats step() = schedule -> run -> postprocess over every live
// sequence: the scheduler picks this step's tokens and blocks, the model runner computes them,
// postprocessing samples, detokenizes, checks stop conditions and feeds the streams.
#pragma once
#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "kiln/engine/block_manager.h"
#include "kiln/engine/engine_stats.h"
#include "kiln/engine/model_runner.h"
#include "kiln/engine/request_stream.h"
#include "kiln/engine/scheduler.h"

namespace kiln {

class Tokenizer;

struct EngineConfig {
  int64_t max_num_seqs = 64;
  int64_t max_num_batched_tokens = 512;
  int64_t block_size = 16;
  int64_t num_kv_blocks = 0;          // 0: room for max_num_seqs full contexts, within kv_cache_bytes
  int64_t kv_cache_bytes = int64_t{1} << 30;
  int64_t max_model_len = 0;          // 0: the model's context
  bool prefix_caching = true;
};

class Engine {
 public:
  // tokenizer (may be null: no text, no stop strings) must outlive the engine.
  static Result<std::unique_ptr<Engine>> create(std::unique_ptr<Model> model, const Tokenizer* tokenizer,
                                                EngineConfig config);
  ~Engine();

  const EngineConfig& config() const { return config_; }  // with the defaults resolved
  const ModelConfig& model_config() const { return model_->config(); }
  // The longest prompt + completion a request may ask for (the context, or the whole KV pool).
  int64_t max_total_tokens() const;

  // Thread-safe. Checks the request (empty or too long prompt, bad parameters, more KV blocks than
  // the pool has) and queues it; on_output runs on the engine thread after each output.
  Result<std::shared_ptr<RequestStream>> add_request(Request request, std::function<void()> on_output = {});
  // Thread-safe. The request's stream gets a final kAbort output and its blocks are freed.
  void abort(int64_t request_id);
  EngineStats stats() const;

  // Before start(): one request whose prompt fills a whole step (max_num_batched_tokens tokens,
  // within the context and the KV pool) and decode_tokens decode steps, then as many one-token
  // requests at once as a step holds, so that the first real requests do not pay first-use costs
  // (on the GPU: scratch buffers grown to their largest, which keeps later decode graphs valid; GEMM
  // plans and workspaces). It leaves no trace: its blocks leave the prefix cache and the statistics
  // start from zero.
  Status warm_up(int64_t decode_tokens = 8);
  void start();  // runs the step loop on its own thread
  void stop();   // aborts what is left and joins the thread

  // One step (schedule -> run -> postprocess); tests call it directly instead of start().
  Status step();
  bool has_unfinished() const { return scheduler_.has_unfinished(); }

 private:
  Engine(std::unique_ptr<Model> model, KvCacheView cache, const Tokenizer* tokenizer, EngineConfig config);
  void loop();
  void take_inbox();
  void postprocess(const SchedulerOutput& step, StepLogits& logits);
  void record_prompt_logprobs(Sequence& seq, const StepLogits& logits, int32_t first_row, int64_t num_tokens);
  void append_token(Sequence& seq, TokenOutput token);
  void finish(Sequence& seq, FinishReason reason, RequestOutput out);
  void fail_all(const SchedulerOutput& step, const Status& error);
  void update_gauges(const SchedulerOutput& step);

  std::unique_ptr<Model> model_;
  const Tokenizer* tokenizer_;
  EngineConfig config_;
  std::vector<int32_t> eos_ids_;
  BlockManager blocks_;
  Scheduler scheduler_;
  ModelRunner runner_;
  std::unordered_map<int64_t, std::unique_ptr<Sequence>> seqs_;  // engine thread only
  std::vector<float> sample_rows_;

  std::mutex inbox_mu_;
  std::condition_variable inbox_cv_;
  std::vector<std::unique_ptr<Sequence>> inbox_;
  std::vector<int64_t> aborts_;
  bool stop_ = false;
  std::atomic<int64_t> next_id_{1};
  std::thread thread_;

  mutable std::mutex stats_mu_;
  EngineStats stats_;
};

}  // namespace kiln
