// tokenizer.json of the wrong shape: every malformed file is a data_loss error that names
// tokenizer.json and the field, never an exception, a crash or a huge allocation.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "kiln/tokenizer/hf_tokenizer_files.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln {
namespace {

using nlohmann::json;

// A small valid byte-level BPE: pieces a, b, ab and the special <s>.
json valid_tokenizer() {
  return json::parse(R"({
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},
    "added_tokens": [{"id": 3, "content": "<s>", "special": true}],
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
    "decoder": {"type": "ByteLevel"}
  })");
}

// The error message of loading j; "" when it loads.
std::string load_error(const json& j) {
  auto t = tokenizer_from_json(j, HfTokenizerConfig{}, "/models/x");
  return t.ok() ? "" : t.status().to_string();
}

void expect_error(const json& j, const std::string& field) {
  const std::string error = load_error(j);
  EXPECT_NE(error.find("tokenizer.json"), std::string::npos) << j.dump() << " -> '" << error << "'";
  EXPECT_NE(error.find(field), std::string::npos) << j.dump() << " -> '" << error << "' does not name " << field;
}

TEST(HfTokenizerJson, ValidFileLoads) {
  auto t = tokenizer_from_json(valid_tokenizer(), HfTokenizerConfig{}, "/models/x");
  ASSERT_TRUE(t.ok()) << t.status().to_string();
  EXPECT_EQ((*t)->vocab_size(), 4);
  auto ids = (*t)->encode("ab<s>", false);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int32_t>{2, 3}));
}

TEST(HfTokenizerJson, TopLevelNotAnObject) {
  expect_error(json::parse("[1, 2]"), "JSON object");
  expect_error(json(), "JSON object");
  expect_error(json("text"), "JSON object");
}

TEST(HfTokenizerJson, ModelMissingNullOrWrongType) {
  json j = valid_tokenizer();
  j["model"] = nullptr;
  expect_error(j, "\"model\"");
  j["model"] = json::array({1, 2});
  expect_error(j, "\"model\"");
  j.erase("model");
  expect_error(j, "\"model\"");
}

TEST(HfTokenizerJson, VocabOfTheWrongShape) {
  json j = valid_tokenizer();
  j["model"]["vocab"] = json::array({"a", "b"});
  expect_error(j, "model.vocab");
  j["model"]["vocab"] = nullptr;
  expect_error(j, "model.vocab");
  j["model"]["vocab"] = json::object({{"a", "0"}});  // string id
  expect_error(j, "model.vocab[\"a\"]");
  j["model"]["vocab"] = json::object({{"a", 0.5}});
  expect_error(j, "model.vocab[\"a\"]");
  j["model"]["vocab"] = json::object({{"a", true}});
  expect_error(j, "model.vocab[\"a\"]");
}

TEST(HfTokenizerJson, VocabIdsOutOfRange) {
  for (const json& id : {json(-1), json(int64_t{1} << 40), json(1e9), json(1000000000), json(UINT64_MAX),
                         json(int64_t{1} << 24)}) {
    json j = valid_tokenizer();
    j["model"]["vocab"]["b"] = id;
    const std::string error = load_error(j);
    EXPECT_NE(error.find("model.vocab[\"b\"]"), std::string::npos) << id.dump() << " -> '" << error << "'";
  }
  // A small hole is fine: the missing id becomes an empty piece.
  json j = valid_tokenizer();
  j["model"]["vocab"]["b"] = 10;
  EXPECT_EQ(load_error(j), "");
}

TEST(HfTokenizerJson, AddedTokensOfTheWrongShape) {
  json j = valid_tokenizer();
  j["added_tokens"] = json::object({{"id", 3}, {"content", "<s>"}});
  expect_error(j, "added_tokens must be an array");
  j["added_tokens"] = json::array({json::object({{"id", "3"}, {"content", "<s>"}})});
  expect_error(j, "added_tokens[0].id");
  j["added_tokens"] = json::array({json::object({{"content", "<s>"}})});
  expect_error(j, "added_tokens[0].id");
  j["added_tokens"] = json::array({json::object({{"id", -4}, {"content", "<s>"}})});
  expect_error(j, "added_tokens[0].id");
  j["added_tokens"] = json::array({json::object({{"id", int64_t{1} << 40}, {"content", "<s>"}})});
  expect_error(j, "added_tokens[0].id");
  j["added_tokens"] = json::array({json::object({{"id", 3}})});
  expect_error(j, "added_tokens[0].content");
  j["added_tokens"] = json::array({json::object({{"id", 3}, {"content", nullptr}})});
  expect_error(j, "added_tokens[0].content");
  j["added_tokens"] = json::array({json::object({{"id", 3}, {"content", "<s>"}, {"special", "yes"}})});
  expect_error(j, "added_tokens[0].special");
  j["added_tokens"] = json::array({7});
  expect_error(j, "added_tokens[0]");
  j["added_tokens"] = nullptr;  // null is as good as absent
  EXPECT_EQ(load_error(j), "");
}

TEST(HfTokenizerJson, MergesAndOptionsOfTheWrongShape) {
  json j = valid_tokenizer();
  j["model"]["merges"] = "a b";
  expect_error(j, "model.merges");
  j["model"]["merges"] = json::array({42});
  expect_error(j, "model.merges[0]");
  j = valid_tokenizer();
  j["model"]["byte_fallback"] = "no";
  expect_error(j, "model.byte_fallback");
  j = valid_tokenizer();
  j["pre_tokenizer"] = json::object({{"type", "Split"}, {"pattern", 5}});
  expect_error(j, "pattern");
  j["pre_tokenizer"] = json::object({{"type", "Split"}, {"pattern", json::object({{"Regex", 5}})}});
  expect_error(j, "pattern");
  j["pre_tokenizer"] = json::object({{"type", "Sequence"}, {"pretokenizers", json::array({json::object({{"type", "ByteLevel"}, {"add_prefix_space", "x"}})})}});
  expect_error(j, "wrong JSON type");  // caught at the boundary, not thrown
}

// The file on disk, through the directory loader: null and [1,2] name the file.
TEST(HfTokenizerJson, DirectoryWithMalformedFile) {
  const std::string dir = ::testing::TempDir() + "/kiln_bad_tokenizer_json";
  std::filesystem::create_directories(dir);
  for (const char* text : {"null", "[1,2]", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1099511627776}}}"}) {
    std::ofstream(dir + "/tokenizer.json") << text;
    auto t = Tokenizer::from_hf_dir(dir);
    ASSERT_FALSE(t.ok()) << text;
    EXPECT_NE(t.status().message().find(dir + "/tokenizer.json"), std::string::npos) << t.status().to_string();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kiln
