// Workload: synthetic prompts have exactly the token count asked for (SmolLM2's tokenizer),
// differ from each other except for a requested shared prefix, and the bodies ask for a fixed
// output length with usage; JSONL prompts are read and cycled.
#include "kiln/bench/workload.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "kiln/tokenizer/tokenizer.h"

namespace kiln::bench {
namespace {

using nlohmann::json;

std::string smollm2_path() {
  if (const char* m = std::getenv("KILN_MODEL")) return m;
  const char* d = std::getenv("KILN_MODEL_DIR");
  const std::string dir = d ? d : std::string(std::getenv("HOME") ? std::getenv("HOME") : ".") + "/.cache/kiln/models";
  return dir + "/SmolLM2-135M-Instruct.Q4_1.gguf";
}

TEST(Workload, ExactPromptLengthsAndFixedOutput) {
  if (!std::filesystem::exists(smollm2_path())) GTEST_SKIP() << smollm2_path() << " missing (run scripts/setup.sh)";
  auto tok = load_tokenizer(smollm2_path());
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  WorkloadOptions o;
  o.model = "m";
  o.input_len = 37;
  o.output_len = 5;
  o.range_ratio = 0.5;
  o.seed = 3;
  auto reqs = build_workload(o, tok->get(), 20);
  ASSERT_TRUE(reqs.ok()) << reqs.status().to_string();
  std::vector<int32_t> firsts;
  for (const BenchRequest& r : *reqs) {
    json b = json::parse(r.body);
    auto ids = (*tok)->encode(b["prompt"].get<std::string>(), true);
    EXPECT_EQ(static_cast<int64_t>(ids->size()), r.prompt_tokens);
    EXPECT_GE(r.prompt_tokens, 18);
    EXPECT_LE(r.prompt_tokens, 56);
    EXPECT_EQ(b["max_tokens"], r.output_tokens);
    EXPECT_EQ(b["min_tokens"], r.output_tokens);
    EXPECT_EQ(b["ignore_eos"], true);
    EXPECT_EQ(b["stream"], true);
    EXPECT_EQ(b["stream_options"]["include_usage"], true);
    EXPECT_EQ(b["model"], "m");
    firsts.push_back((*ids)[0]);
  }
  std::sort(firsts.begin(), firsts.end());
  EXPECT_GE(std::unique(firsts.begin(), firsts.end()) - firsts.begin(), 18);  // no shared prefix

  o.range_ratio = 0;
  o.shared_prefix_len = 16;
  o.chat = true;
  o.extra_body = R"({"temperature": 0.5})";
  auto chat = build_workload(o, tok->get(), 3);
  ASSERT_TRUE(chat.ok()) << chat.status().to_string();
  std::vector<std::vector<int32_t>> ids;
  for (const BenchRequest& r : *chat) {
    json b = json::parse(r.body);
    EXPECT_EQ(b["max_completion_tokens"], 5);
    EXPECT_EQ(b["temperature"], 0.5);
    ids.push_back(*(*tok)->encode(b["messages"][0]["content"].get<std::string>(), false));
    EXPECT_EQ(ids.back().size(), 37u);
  }
  EXPECT_TRUE(std::equal(ids[0].begin(), ids[0].begin() + 16, ids[1].begin()));
  EXPECT_NE(ids[0][16], ids[1][16]);
}

TEST(Workload, JsonlPromptsCycle) {
  const std::string path = (std::filesystem::temp_directory_path() / "kiln_workload_test.jsonl").string();
  {
    std::ofstream out(path);
    out << R"({"prompt": "one", "output_tokens": 3})" << "\n\n" << R"({"prompt": "two"})" << "\n";
  }
  WorkloadOptions o;
  o.dataset = "jsonl";
  o.dataset_path = path;
  o.output_len = 9;
  auto reqs = build_workload(o, nullptr, 3);
  ASSERT_TRUE(reqs.ok()) << reqs.status().to_string();
  EXPECT_EQ(json::parse((*reqs)[0].body)["prompt"], "one");
  EXPECT_EQ((*reqs)[0].output_tokens, 3);
  EXPECT_EQ((*reqs)[1].output_tokens, 9);
  EXPECT_EQ(json::parse((*reqs)[2].body)["prompt"], "one");
  {
    std::ofstream out(path);
    out << "{\"messages\": []}\n";
  }
  EXPECT_FALSE(build_workload(o, nullptr, 1).ok());  // messages without the chat endpoint
  o.dataset = "sharegpt";
  EXPECT_FALSE(build_workload(o, nullptr, 1).ok());
}

}  // namespace
}  // namespace kiln::bench
