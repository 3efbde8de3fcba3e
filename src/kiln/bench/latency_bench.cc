// LatencyBench: batch layout (sequence s owns KV blocks [s * max_blocks, (s + 1) * max_blocks)),
// chunked batched prefill, greedy decode steps.
#include "kiln/bench/latency_bench.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <random>

#include "kiln/bench/bench_summary.h"
#include "kiln/core/host_memory.h"

namespace kiln::bench {

using nlohmann::json;

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// tokens[s] go to sequence s at positions [begin, begin + tokens[s].size()); logits: the last of each.
ForwardBatch batch_of(const std::vector<std::vector<int32_t>>& tokens, int64_t begin, int64_t max_blocks, int64_t block_size) {
  ForwardBatch b;
  b.max_blocks_per_seq = static_cast<int32_t>(max_blocks);
  b.cu_seqlens_q.push_back(0);
  for (size_t s = 0; s < tokens.size(); ++s) {
    const auto n = static_cast<int64_t>(tokens[s].size());
    const int64_t base_slot = static_cast<int64_t>(s) * max_blocks * block_size;
    for (int64_t i = 0; i < n; ++i) {
      b.token_ids.push_back(tokens[s][static_cast<size_t>(i)]);
      b.positions.push_back(static_cast<int32_t>(begin + i));
      b.slot_mapping.push_back(static_cast<int32_t>(base_slot + begin + i));
    }
    b.cu_seqlens_q.push_back(static_cast<int32_t>(b.token_ids.size()));
    b.kv_lens.push_back(static_cast<int32_t>(begin + n));
    for (int64_t j = 0; j < max_blocks; ++j) b.block_tables.push_back(static_cast<int32_t>(static_cast<int64_t>(s) * max_blocks + j));
    b.logits_rows.push_back(b.cu_seqlens_q.back() - 1);
  }
  return b;
}

std::vector<int32_t> argmax_rows(const HostTensor& logits, int64_t rows, int64_t vocab) {
  std::vector<int32_t> out;
  const float* p = logits.tensor.ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = p + r * vocab;
    out.push_back(static_cast<int32_t>(std::max_element(row, row + vocab) - row));
  }
  return out;
}

// One forward of `batch` and the greedy next token of each sequence. GPU models pick it on the
// device (Model::forward_sample, as the engine's runner does: only the ids come back); CPU models
// fill the host logits and take the argmax here.
Result<std::vector<int32_t>> forward_greedy(Model& model, const ForwardBatch& batch, const KvCacheView& cache,
                                            HostTensor& logits, int64_t rows, int64_t vocab) {
  if (model.samples_on_device()) {
    const std::vector<SamplingParams> params(static_cast<size_t>(rows));  // temperature 0: greedy
    const std::vector<uint64_t> steps(static_cast<size_t>(rows), 0);
    std::vector<int32_t> ids;
    KILN_RETURN_IF_ERROR(model.forward_sample(batch, cache, params, steps, {}, &ids));
    return ids;
  }
  KILN_RETURN_IF_ERROR(model.forward(batch, cache, logits.tensor));
  return argmax_rows(logits, rows, vocab);
}

Result<LatencyIteration> one_iteration(Model& model, const LatencyOptions& o, const KvCacheView& cache, int64_t max_blocks,
                                       std::mt19937_64& rng) {
  const int64_t vocab = model.config().vocab_size, b = o.batch_size;
  std::uniform_int_distribution<int32_t> token(0, static_cast<int32_t>(vocab - 1));
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(b));
  for (auto& p : prompts)
    for (int64_t i = 0; i < o.input_len; ++i) p.push_back(token(rng));
  // [b, vocab] f32 host logits: CPU models only (GPU models sample on the device)
  HostTensor logits = HostTensor::zeros(DType::kF32, {model.samples_on_device() ? 1 : b, vocab});
  LatencyIteration it;
  const double t0 = now_seconds();
  const int64_t chunk = std::max<int64_t>(1, o.max_prefill_tokens / b);
  std::vector<int32_t> next;
  for (int64_t begin = 0; begin < o.input_len; begin += chunk) {
    std::vector<std::vector<int32_t>> part;
    for (const auto& p : prompts)
      part.emplace_back(p.begin() + begin, p.begin() + std::min(o.input_len, begin + chunk));
    KILN_ASSIGN_OR_RETURN(next, forward_greedy(model, batch_of(part, begin, max_blocks, o.block_size), cache, logits, b, vocab));
  }
  it.prefill_s = now_seconds() - t0;
  for (int64_t step = 1; step < o.output_len; ++step) {
    const double s0 = now_seconds();
    std::vector<std::vector<int32_t>> part;
    for (int32_t id : next) part.push_back({id});
    KILN_ASSIGN_OR_RETURN(next, forward_greedy(model, batch_of(part, o.input_len + step - 1, max_blocks, o.block_size), cache, logits, b, vocab));
    it.decode_step_s.push_back(now_seconds() - s0);
  }
  it.total_s = now_seconds() - t0;
  return it;
}

}  // namespace

Result<std::vector<LatencyIteration>> run_latency(Model& model, const LatencyOptions& o) {
  if (o.batch_size < 1 || o.input_len < 1 || o.output_len < 1 || o.num_iters < 1 || o.num_iters_warmup < 0)
    return invalid_argument("batch size, input and output lengths and iterations must be at least 1");
  const int64_t total = o.input_len + o.output_len;
  if (total > model.config().max_position_embeddings)
    return out_of_range("input + output length " + std::to_string(total) + " exceeds the model's context of " +
                        std::to_string(model.config().max_position_embeddings));
  const int64_t max_blocks = (total + o.block_size - 1) / o.block_size;
  // Slots are int32 in a batch; the prompts (and, for CPU models, the logits rows) are host memory.
  if (static_cast<double>(max_blocks) * static_cast<double>(o.batch_size) * static_cast<double>(o.block_size) >
      static_cast<double>(std::numeric_limits<int32_t>::max()))
    return out_of_range("batch of " + std::to_string(o.batch_size) + " x " + std::to_string(total) +
                        " tokens exceeds 2^31 KV slots");
  const double logits_row = model.samples_on_device() ? 0.0 : 4.0 * static_cast<double>(model.config().vocab_size);
  const double host_bytes = static_cast<double>(o.batch_size) * (logits_row + 4.0 * static_cast<double>(total));
  KILN_RETURN_IF_ERROR(check_fits_host_memory(host_bytes, "a batch of " + std::to_string(o.batch_size) + " sequences (logits and prompts)"));
  KILN_ASSIGN_OR_RETURN(KvCacheView cache, model.allocate_kv_cache(max_blocks * o.batch_size, o.block_size));
  std::mt19937_64 rng(o.seed);
  std::vector<LatencyIteration> out;
  for (int64_t i = 0; i < o.num_iters_warmup + o.num_iters; ++i) {
    KILN_ASSIGN_OR_RETURN(LatencyIteration it, one_iteration(model, o, cache, max_blocks, rng));
    if (i >= o.num_iters_warmup) out.push_back(std::move(it));
  }
  return out;
}

json latency_json(const std::vector<LatencyIteration>& its, const LatencyOptions& o) {
  std::vector<double> steps, totals;
  double prefill = 0;
  for (const LatencyIteration& it : its) {
    prefill += it.prefill_s / static_cast<double>(its.size());
    steps.insert(steps.end(), it.decode_step_s.begin(), it.decode_step_s.end());
    totals.push_back(it.total_s);
  }
  std::sort(steps.begin(), steps.end());
  std::sort(totals.begin(), totals.end());
  double step_mean = 0, total_mean = 0;
  for (double s : steps) step_mean += s / static_cast<double>(steps.size());
  for (double t : totals) total_mean += t / static_cast<double>(totals.size());
  const auto b = static_cast<double>(o.batch_size);
  json j = {{"batch_size", o.batch_size}, {"input_len", o.input_len}, {"output_len", o.output_len},
            {"num_iters", o.num_iters}, {"prefill_ms", prefill * 1e3},
            {"prefill_tokens_per_s", prefill > 0 ? b * static_cast<double>(o.input_len) / prefill : 0.0},
            {"decode_steps", steps.size()}, {"decode_step_mean_ms", step_mean * 1e3},
            {"decode_step_p50_ms", percentile(steps, 50) * 1e3}, {"decode_step_p90_ms", percentile(steps, 90) * 1e3},
            {"decode_step_p99_ms", percentile(steps, 99) * 1e3},
            {"decode_tokens_per_s", step_mean > 0 ? b / step_mean : 0.0},
            {"avg_latency_s", total_mean}, {"p50_latency_s", percentile(totals, 50)}, {"p99_latency_s", percentile(totals, 99)},
            {"output_tokens_per_s", total_mean > 0 ? b * static_cast<double>(o.output_len) / total_mean : 0.0},
            {"latencies_s", totals}};
  return j;
}

void print_latency(const json& j, std::FILE* out) {
  std::fprintf(out, "batch %lld x (prompt %lld + output %lld) tokens, %lld iterations\n",
               static_cast<long long>(j["batch_size"].get<int64_t>()), static_cast<long long>(j["input_len"].get<int64_t>()),
               static_cast<long long>(j["output_len"].get<int64_t>()), static_cast<long long>(j["num_iters"].get<int64_t>()));
  std::fprintf(out, "%-32s %10.2f ms  (%.1f tokens/s)\n", "prefill", j["prefill_ms"].get<double>(), j["prefill_tokens_per_s"].get<double>());
  std::fprintf(out, "%-32s %10.2f ms  (p50 %.2f, p90 %.2f, p99 %.2f; %.1f tokens/s)\n", "decode step (mean)",
               j["decode_step_mean_ms"].get<double>(), j["decode_step_p50_ms"].get<double>(), j["decode_step_p90_ms"].get<double>(),
               j["decode_step_p99_ms"].get<double>(), j["decode_tokens_per_s"].get<double>());
  std::fprintf(out, "%-32s %10.3f s   (p50 %.3f, p99 %.3f; %.1f output tokens/s)\n", "end to end (mean)", j["avg_latency_s"].get<double>(),
               j["p50_latency_s"].get<double>(), j["p99_latency_s"].get<double>(), j["output_tokens_per_s"].get<double>());
}

}  // namespace kiln::bench
