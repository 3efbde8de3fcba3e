// Engine: request intake, the step loop, and postprocessing of each step's logits.
#include "kiln/engine/engine.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>

#include "kiln/core/log.h"
#include "kiln/engine/sampler.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln {
namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// num_kv_blocks 0: as many blocks of the model's KV dtype as kv_cache_bytes hold, at most room
// for max_num_seqs full contexts.
EngineConfig resolve(EngineConfig c, const Model& model) {
  const ModelConfig& m = model.config();
  if (c.max_model_len <= 0) c.max_model_len = m.max_position_embeddings;
  if (c.num_kv_blocks <= 0) {
    const int64_t per_block = model.kv_block_bytes(c.block_size);
    const int64_t want = c.max_num_seqs * Sequence::blocks_for(c.max_model_len, c.block_size);
    c.num_kv_blocks = std::max<int64_t>(1, std::min(want, c.kv_cache_bytes / per_block));
  }
  return c;
}

}  // namespace

Result<std::unique_ptr<Engine>> Engine::create(std::unique_ptr<Model> model, const Tokenizer* tokenizer,
                                               EngineConfig config) {
  const ModelConfig& m = model->config();
  if (config.block_size <= 0 || config.max_num_seqs <= 0 || config.max_num_batched_tokens <= 0)
    return invalid_argument("engine: block_size, max_num_seqs and max_num_batched_tokens must be positive");
  if (config.max_model_len > m.max_position_embeddings)
    return invalid_argument("max_model_len " + std::to_string(config.max_model_len) + " exceeds the model's context of " +
                            std::to_string(m.max_position_embeddings));
  config = resolve(config, *model);
  // Slots (block * block_size + offset) are int32 in every batch.
  if (config.num_kv_blocks > std::numeric_limits<int32_t>::max() / config.block_size)
    return out_of_range("a KV cache of " + std::to_string(config.num_kv_blocks) + " blocks of " +
                        std::to_string(config.block_size) + " tokens exceeds 2^31 token slots");
  KILN_ASSIGN_OR_RETURN(KvCacheView cache, model->allocate_kv_cache(config.num_kv_blocks, config.block_size));
  int64_t cache_bytes = 0;
  for (size_t l = 0; l < cache.k.size(); ++l) cache_bytes += cache.k[l].nbytes() + cache.v[l].nbytes();
  log_info("engine: ", config.num_kv_blocks, " KV blocks of ", config.block_size, " tokens (", cache_bytes >> 20, " MiB, ",
           cache.k.empty() ? "-" : dtype_name(cache.k[0].dtype), "), max_model_len ",
           config.max_model_len, ", max_num_seqs ", config.max_num_seqs, ", ", config.max_num_batched_tokens,
           " tokens per step");
  return std::unique_ptr<Engine>(new Engine(std::move(model), std::move(cache), tokenizer, config));
}

Engine::Engine(std::unique_ptr<Model> model, KvCacheView cache, const Tokenizer* tokenizer, EngineConfig config)
    : model_(std::move(model)),
      tokenizer_(tokenizer),
      config_(config),
      blocks_(config.num_kv_blocks, config.block_size, config.prefix_caching),
      scheduler_({config.max_num_seqs, config.max_num_batched_tokens}, blocks_),
      runner_(*model_, std::move(cache), config.block_size) {
  if (tokenizer_) eos_ids_ = tokenizer_->eos_ids();
  for (int64_t id : model_->config().eos_token_ids)
    if (std::find(eos_ids_.begin(), eos_ids_.end(), id) == eos_ids_.end()) eos_ids_.push_back(static_cast<int32_t>(id));
  stats_.num_blocks = stats_.num_free_blocks = config.num_kv_blocks;
  stats_.block_size = config.block_size;
}

Engine::~Engine() { stop(); }

int64_t Engine::max_total_tokens() const {
  return std::min(config_.max_model_len, config_.num_kv_blocks * config_.block_size + 1);
}

Result<std::shared_ptr<RequestStream>> Engine::add_request(Request request, std::function<void()> on_output) {
  const int64_t vocab = model_->config().vocab_size, prompt = static_cast<int64_t>(request.prompt.size());
  if (prompt == 0) return invalid_argument("the prompt is empty");
  for (int32_t id : request.prompt)
    if (id < 0 || id >= vocab) return invalid_argument("prompt token id " + std::to_string(id) + " is outside the vocabulary");
  KILN_RETURN_IF_ERROR(validate_generation_params(request.params, vocab));
  const int64_t total = prompt + request.params.max_tokens;
  if (total > config_.max_model_len)
    return out_of_range("this model's maximum context length is " + std::to_string(config_.max_model_len) +
                        " tokens, but the request asks for " + std::to_string(total) + " (" + std::to_string(prompt) +
                        " in the prompt, " + std::to_string(request.params.max_tokens) + " to generate)");
  const int64_t need = Sequence::blocks_for(total - 1, config_.block_size);
  if (need > config_.num_kv_blocks)
    return resource_exhausted("the request can never be scheduled: it needs " + std::to_string(need) +
                              " KV cache blocks (" + std::to_string(total) + " tokens) and the pool holds " +
                              std::to_string(config_.num_kv_blocks));
  const int64_t id = next_id_++;
  auto stream = std::make_shared<RequestStream>(id, std::move(on_output));
  auto seq = std::make_unique<Sequence>(id, std::move(request), stream, tokenizer_, eos_ids_, config_.max_model_len,
                                        now_seconds());
  {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    inbox_.push_back(std::move(seq));
  }
  inbox_cv_.notify_one();
  return stream;
}

void Engine::abort(int64_t request_id) {
  {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    aborts_.push_back(request_id);
  }
  inbox_cv_.notify_one();
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(stats_mu_);
  return stats_;
}

Status Engine::warm_up(int64_t decode_tokens) {
  if (thread_.joinable() || scheduler_.has_unfinished())
    return invalid_argument("warm_up: only before start() and with no requests queued");
  decode_tokens = std::max<int64_t>(decode_tokens, 1);
  const double t0 = now_seconds();
  const int64_t vocab = model_->config().vocab_size;
  auto run = [&](std::vector<Request> requests) -> Status {
    std::vector<std::shared_ptr<RequestStream>> streams;
    for (Request& r : requests) {
      r.params.ignore_eos = true;
      KILN_ASSIGN_OR_RETURN(std::shared_ptr<RequestStream> stream, add_request(std::move(r)));
      streams.push_back(std::move(stream));
    }
    do {
      KILN_RETURN_IF_ERROR(step());
    } while (has_unfinished());
    for (const auto& stream : streams)
      for (const RequestOutput& o : stream->take())
        if (!o.error.ok()) return o.error;
    return ok_status();
  };
  // A prompt that fills a whole step, then decode steps.
  const int64_t prompt = std::min(config_.max_num_batched_tokens, max_total_tokens() - decode_tokens);
  if (prompt >= 1) {
    Request r;
    for (int64_t i = 0; i < prompt; ++i) r.prompt.push_back(static_cast<int32_t>((i * 7919 + 13) % vocab));
    r.params.max_tokens = decode_tokens;
    KILN_RETURN_IF_ERROR(run({std::move(r)}));
  }
  // As many one-token prompts as a step may hold, two tokens each: the buffers with a row per
  // sequence (logits, sampling) reach their largest too. Grown later, they would move under the
  // decode graphs captured so far, which then have to be captured again.
  const int64_t seqs = std::min({config_.max_num_seqs, config_.max_num_batched_tokens,
                                 config_.num_kv_blocks / Sequence::blocks_for(3, config_.block_size)});
  if (seqs >= 2 && max_total_tokens() >= 3) {
    std::vector<Request> many(static_cast<size_t>(seqs));
    for (int64_t i = 0; i < seqs; ++i) {
      many[static_cast<size_t>(i)].prompt = {static_cast<int32_t>((i * 104729 + 7) % vocab)};
      many[static_cast<size_t>(i)].params.max_tokens = 2;
    }
    KILN_RETURN_IF_ERROR(run(std::move(many)));
  }
  blocks_.forget_cached();
  std::lock_guard<std::mutex> lock(stats_mu_);
  const EngineStats kept = stats_;
  stats_ = EngineStats{};
  stats_.num_blocks = kept.num_blocks;
  stats_.num_free_blocks = kept.num_free_blocks;
  stats_.block_size = kept.block_size;
  log_info("engine: warm-up (", std::max<int64_t>(prompt, 0), " prompt tokens + ", decode_tokens, " decode steps; ",
           seqs >= 2 ? seqs : 0, " one-token sequences) in ", static_cast<int64_t>((now_seconds() - t0) * 1000), " ms");
  return ok_status();
}

void Engine::start() {
  if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
}

void Engine::stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    stop_ = true;
  }
  inbox_cv_.notify_one();
  thread_.join();
}

void Engine::loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(inbox_mu_);
      inbox_cv_.wait(lock, [&] { return stop_ || !inbox_.empty() || !aborts_.empty() || scheduler_.has_unfinished(); });
      if (stop_) break;
    }
    if (Status s = step(); !s.ok()) log_error("engine step failed: ", s.to_string());
  }
  take_inbox();
  std::vector<Sequence*> left;
  for (auto& [id, seq] : seqs_) left.push_back(seq.get());
  for (Sequence* seq : left) finish(*seq, FinishReason::kAbort, {});
}

void Engine::take_inbox() {
  std::vector<std::unique_ptr<Sequence>> added;
  std::vector<int64_t> aborts;
  {
    std::lock_guard<std::mutex> lock(inbox_mu_);
    added.swap(inbox_);
    aborts.swap(aborts_);
  }
  for (auto& seq : added) {
    {
      std::lock_guard<std::mutex> lock(stats_mu_);
      stats_.prompt_tokens_total += seq->num_prompt_tokens;
    }
    scheduler_.add(seq.get());
    seqs_[seq->id] = std::move(seq);
  }
  for (int64_t id : aborts)
    if (auto it = seqs_.find(id); it != seqs_.end()) finish(*it->second, FinishReason::kAbort, {});
  if (!added.empty() || !aborts.empty()) update_gauges({});
}

Status Engine::step() {
  const double t0 = now_seconds();
  take_inbox();
  const SchedulerOutput scheduled = scheduler_.schedule();
  if (scheduled.empty()) return ok_status();
  const double t1 = now_seconds();
  Result<StepLogits> logits = runner_.run(scheduled, eos_ids_);
  const double t2 = now_seconds();
  if (!logits.ok()) {
    fail_all(scheduled, logits.status());
    return logits.status();
  }
  postprocess(scheduled, *logits);
  update_gauges(scheduled);
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_.forward_seconds_total += t2 - t1;
  stats_.step_seconds_total += now_seconds() - t0;
  return ok_status();
}

void Engine::postprocess(const SchedulerOutput& step, StepLogits& logits) {
  const int64_t vocab = model_->config().vocab_size;
  std::vector<Sequence*> sampled;
  sample_rows_.clear();
  for (size_t i = 0; i < step.seqs.size(); ++i) {
    Sequence& seq = *step.seqs[i].seq;
    if (logits.first_row[i] >= 0) record_prompt_logprobs(seq, logits, logits.first_row[i], step.seqs[i].num_tokens);
    seq.num_computed_tokens += step.seqs[i].num_tokens;
    blocks_.cache_full_blocks(seq);
    if (logits.sample_row[i] < 0) continue;
    if (logits.sampled) {
      TokenOutput t;
      t.id = logits.ids[static_cast<size_t>(logits.sample_row[i])];
      append_token(seq, std::move(t));
      continue;
    }
    const float* row = logits.logits.ptr<float>() + int64_t{logits.sample_row[i]} * vocab;
    sample_rows_.insert(sample_rows_.end(), row, row + vocab);
    sampled.push_back(&seq);
  }
  std::vector<TokenOutput> tokens;
  const int64_t rows = static_cast<int64_t>(sampled.size());
  const Tensor rows_view = Tensor::view(sample_rows_.data(), DType::kF32, {rows, vocab});
  if (Status s = sample_sequences(rows_view, std::vector<const Sequence*>(sampled.begin(), sampled.end()), eos_ids_, &tokens); !s.ok()) {
    fail_all(step, s);
    return;
  }
  for (size_t i = 0; i < sampled.size(); ++i) append_token(*sampled[i], std::move(tokens[i]));
}

void Engine::record_prompt_logprobs(Sequence& seq, const StepLogits& logits, int32_t first_row, int64_t num_tokens) {
  const int64_t vocab = model_->config().vocab_size;
  for (int64_t j = 0; j < num_tokens; ++j) {
    const int64_t pos = seq.num_computed_tokens + j;  // this row predicts token pos + 1
    if (pos + 1 >= seq.num_prompt_tokens) break;
    const float* row = logits.logits.ptr<float>() + (first_row + j) * vocab;
    seq.prompt_logprobs[static_cast<size_t>(pos)] =
        token_logprobs(row, vocab, seq.tokens[static_cast<size_t>(pos + 1)], seq.params.prompt_logprobs);
  }
}

void Engine::append_token(Sequence& seq, TokenOutput token) {
  seq.tokens.push_back(token.id);
  const double now = now_seconds();
  {
    std::lock_guard<std::mutex> lock(stats_mu_);
    ++stats_.generation_tokens_total;
    if (seq.num_generated() == 1) stats_.time_to_first_token.observe(now - seq.arrival_time);
    else stats_.inter_token_latency.observe(now - seq.last_token_time);
  }
  seq.last_token_time = now;
  RequestOutput out;
  const std::string delta = seq.detokenizer.step(token.id);
  const FinishReason reason = seq.stop_checker.check(token.id, seq.num_generated(), seq.num_tokens(), delta, &out.text);
  out.tokens.push_back(std::move(token));
  if (!seq.sent_first_output) out.prompt_logprobs = std::move(seq.prompt_logprobs);
  seq.sent_first_output = true;  // recomputation after a preemption skips prompt logprobs
  if (reason != FinishReason::kNone) return finish(seq, reason, std::move(out));
  seq.stream->push(std::move(out));
}

void Engine::finish(Sequence& seq, FinishReason reason, RequestOutput out) {
  out.finish = reason;
  out.prompt_tokens = seq.num_prompt_tokens;
  out.completion_tokens = seq.num_generated();
  out.cached_tokens = seq.num_cached_tokens;
  {
    std::lock_guard<std::mutex> lock(stats_mu_);
    ++stats_.finished_total[static_cast<size_t>(reason)];
    stats_.cached_prompt_tokens_total += seq.num_cached_tokens;
    if (reason != FinishReason::kAbort) stats_.e2e_latency.observe(now_seconds() - seq.arrival_time);
  }
  scheduler_.remove(&seq);
  std::shared_ptr<RequestStream> stream = seq.stream;
  seqs_.erase(seq.id);  // seq is gone from here on
  stream->push(std::move(out));
}

void Engine::fail_all(const SchedulerOutput& step, const Status& error) {
  log_error("engine: failing ", step.seqs.size(), " requests: ", error.to_string());
  for (const ScheduledSequence& s : step.seqs) {
    RequestOutput out;
    out.error = error;
    finish(*s.seq, FinishReason::kError, std::move(out));
  }
  update_gauges({});
}

void Engine::update_gauges(const SchedulerOutput& step) {
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_.num_running = scheduler_.num_running();
  stats_.num_waiting = scheduler_.num_waiting();
  stats_.num_free_blocks = blocks_.num_free_blocks();
  if (step.empty()) return;
  ++stats_.steps_total;
  stats_.preemptions_total += step.num_preempted;
  stats_.batch_tokens.observe(static_cast<double>(step.num_tokens));
}

}  // namespace kiln
