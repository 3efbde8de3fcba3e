// Workload: synthetic prompts (single-token words, adjusted until the tokenizer counts exactly the
// length asked for), JSONL prompts, and the request bodies around them.
#include "kiln/bench/workload.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "kiln/tokenizer/tokenizer.h"

namespace kiln::bench {

using nlohmann::json;

namespace {

bool is_word_piece(const std::string& p) {
  if (p.size() < 3 || p.size() > 12 || p[0] != ' ') return false;
  return std::all_of(p.begin() + 1, p.end(), [](char c) { return c >= 'a' && c <= 'z'; });
}

int64_t draw_len(int64_t len, double ratio, std::mt19937_64& rng) {
  if (ratio <= 0) return std::max<int64_t>(1, len);
  const auto lo = static_cast<int64_t>(std::floor(static_cast<double>(len) * (1 - ratio)));
  const auto hi = static_cast<int64_t>(std::ceil(static_cast<double>(len) * (1 + ratio)));
  return std::max<int64_t>(1, std::uniform_int_distribution<int64_t>(std::max<int64_t>(1, lo), std::max<int64_t>(1, hi))(rng));
}

// A prompt of exactly `len` tokens as the server counts it (encode with special tokens): the
// shared prefix words, then random words, trimmed or extended until the count is right.
Result<std::string> synthetic_prompt(const Tokenizer& tok, const std::vector<std::string>& words,
                                     const std::vector<std::string>& prefix, int64_t len, bool add_special,
                                     std::mt19937_64& rng) {
  std::uniform_int_distribution<size_t> pick(0, words.size() - 1);
  std::vector<std::string> w(prefix.begin(), prefix.begin() + std::min<int64_t>(len, static_cast<int64_t>(prefix.size())));
  while (static_cast<int64_t>(w.size()) < len) w.push_back(words[pick(rng)]);
  for (int attempt = 0; attempt < 64; ++attempt) {
    std::string text;
    for (const std::string& x : w) text += x;
    KILN_ASSIGN_OR_RETURN(std::vector<int32_t> ids, tok.encode(text, add_special));
    const auto n = static_cast<int64_t>(ids.size());
    if (n == len) return text;
    if (n > len) {
      const int64_t drop = std::min<int64_t>(n - len, static_cast<int64_t>(w.size()) - 1);
      if (drop <= 0) break;
      w.resize(w.size() - static_cast<size_t>(drop));
    } else {
      for (int64_t i = 0; i < len - n; ++i) w.push_back(words[pick(rng)]);
    }
  }
  return internal_error("cannot build a prompt of exactly " + std::to_string(len) +
                        " tokens with this tokenizer (the special tokens it adds alone may be more)");
}

struct Prompt {
  std::string text;
  json messages;  // chat from JSONL, else null
  int64_t tokens = 0;
  int64_t output_tokens = 0;  // 0: draw one
};

Result<std::vector<Prompt>> random_prompts(const WorkloadOptions& o, const Tokenizer* tok, int64_t count,
                                           std::mt19937_64& rng) {
  if (!tok) return invalid_argument("the random dataset needs a tokenizer (--tokenizer PATH)");
  const std::vector<std::string> words = single_token_words(*tok);
  if (words.size() < 100) return unimplemented("the tokenizer has too few single-token words for synthetic prompts");
  std::mt19937_64 prefix_rng(o.seed ^ 0x5eedULL);
  std::uniform_int_distribution<size_t> pick(0, words.size() - 1);
  std::vector<std::string> prefix;
  for (int64_t i = 0; i < o.shared_prefix_len; ++i) prefix.push_back(words[pick(prefix_rng)]);
  std::vector<Prompt> out;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t len = std::max(draw_len(o.input_len, o.range_ratio, rng), o.shared_prefix_len + 1);
    KILN_ASSIGN_OR_RETURN(std::string text, synthetic_prompt(*tok, words, prefix, len, !o.chat, rng));
    out.push_back({std::move(text), nullptr, len, 0});
  }
  return out;
}

Result<std::vector<Prompt>> jsonl_prompts(const WorkloadOptions& o, const Tokenizer* tok) {
  std::ifstream in(o.dataset_path);
  if (!in) return not_found(o.dataset_path + ": cannot open");
  std::vector<Prompt> out;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = o.dataset_path + ":" + std::to_string(n) + ": ";
    json j = json::parse(line, nullptr, false);
    if (!j.is_object()) return data_loss(where + "not a JSON object");
    Prompt p;
    if (j.contains("prompt") && j["prompt"].is_string()) {
      p.text = j["prompt"].get<std::string>();
    } else if (j.contains("messages") && j["messages"].is_array()) {
      if (!o.chat) return invalid_argument(where + "'messages' needs the chat endpoint (--backend openai-chat)");
      p.messages = j["messages"];
    } else {
      return data_loss(where + "expected a string 'prompt' or an array 'messages'");
    }
    for (const char* key : {"output_tokens", "max_tokens"})
      if (j.contains(key) && j[key].is_number_integer()) p.output_tokens = j[key].get<int64_t>();
    if (tok && p.messages.is_null()) {
      KILN_ASSIGN_OR_RETURN(std::vector<int32_t> ids, tok->encode(p.text, !o.chat));
      p.tokens = static_cast<int64_t>(ids.size());
    }
    out.push_back(std::move(p));
  }
  if (out.empty()) return data_loss(o.dataset_path + ": no prompts");
  return out;
}

Result<std::string> request_body(const WorkloadOptions& o, const Prompt& p, int64_t output_tokens,
                                 const json& extra) {
  json b = json::object();
  if (!o.model.empty()) b["model"] = o.model;
  if (o.chat) {
    b["messages"] = p.messages.is_null() ? json::array({{{"role", "user"}, {"content", p.text}}}) : p.messages;
    b["max_completion_tokens"] = output_tokens;
  } else {
    b["prompt"] = p.text;
    b["max_tokens"] = output_tokens;
  }
  if (o.ignore_eos) {
    b["ignore_eos"] = true;
    b["min_tokens"] = output_tokens;
  }
  if (o.temperature) b["temperature"] = *o.temperature;
  b["stream"] = true;
  b["stream_options"] = {{"include_usage", true}};
  for (auto it = extra.begin(); it != extra.end(); ++it) b[it.key()] = it.value();
  return b.dump();
}

}  // namespace

std::vector<std::string> single_token_words(const Tokenizer& tok) {
  std::vector<std::string> words;
  for (int64_t id = 0; id < tok.vocab_size(); ++id) {
    const auto i = static_cast<int32_t>(id);
    if (tok.is_special(i)) continue;
    std::string piece = tok.token_piece(i);
    if (!is_word_piece(piece)) continue;
    // One token where it counts, inside a prompt; a SentencePiece vocabulary's dummy prefix may add
    // a lone "▁" in front of a prompt's first word, which the exact-length adjustment absorbs.
    auto ids = tok.encode(piece, false);
    if (ids.ok() && !ids->empty() && ids->size() <= 2 && ids->back() == i &&
        (ids->size() == 1 || tok.token_piece((*ids)[0]) == " "))
      words.push_back(std::move(piece));
  }
  return words;
}

Result<std::vector<BenchRequest>> build_workload(const WorkloadOptions& o, const Tokenizer* tok, int64_t count) {
  if (count < 1) return invalid_argument("a workload needs at least one request");
  if (o.input_len < 1 || o.output_len < 1) return invalid_argument("input and output lengths must be at least 1");
  if (o.range_ratio < 0 || o.range_ratio >= 1) return invalid_argument("--random-range-ratio must be in [0, 1)");
  if (o.shared_prefix_len < 0 || o.shared_prefix_len >= o.input_len)
    return invalid_argument("--shared-prefix-len must be below --random-input-len");
  json extra = json::object();
  if (!o.extra_body.empty()) {
    extra = json::parse(o.extra_body, nullptr, false);
    if (!extra.is_object()) return invalid_argument("--extra-body must be a JSON object");
  }
  std::mt19937_64 rng(o.seed);
  std::vector<Prompt> prompts;
  if (o.dataset == "random") {
    KILN_ASSIGN_OR_RETURN(prompts, random_prompts(o, tok, count, rng));
  } else if (o.dataset == "jsonl") {
    KILN_ASSIGN_OR_RETURN(prompts, jsonl_prompts(o, tok));
  } else {
    return invalid_argument("--dataset-name " + o.dataset + " (supported: random, jsonl)");
  }
  std::vector<BenchRequest> out;
  for (int64_t i = 0; i < count; ++i) {
    const Prompt& p = prompts[static_cast<size_t>(i) % prompts.size()];
    const int64_t output = p.output_tokens > 0 ? p.output_tokens : draw_len(o.output_len, o.range_ratio, rng);
    KILN_ASSIGN_OR_RETURN(std::string body, request_body(o, p, output, extra));
    out.push_back({std::move(body), p.tokens, output});
  }
  return out;
}

}  // namespace kiln::bench
