// kiln against the Hugging Face reference (tests/data/tokenizer/, written by
// scripts/tokenizer_make_reference.py with `tokenizers`/`transformers`/`sentencepiece`):
//  - 2500 random Unicode strings and the whole of tinyshakespeare.txt encode to the same ids,
//    token for token, for every test vocabulary and SmolLM2's own;
//  - decode(encode(s)) == s for every one of them (these vocabularies are lossless);
//  - Hugging Face directories (tokenizer.json byte-level and metaspace, tokenizer.model) load
//    with from_hf_dir and agree with their reference, added tokens and BOS included.
#include <gtest/gtest.h>

#include <cstring>

#include <nlohmann/json.hpp>

#include "tests/tokenizer/tokenizer_test_util.h"

namespace kiln {
namespace {

using testing::first_difference;
using testing::ids_to_string;

uint64_t fnv1a64(const std::vector<int32_t>& ids) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (const int32_t id : ids) {
    const auto v = static_cast<uint32_t>(id);
    for (int b = 0; b < 4; ++b) h = (h ^ ((v >> (8 * b)) & 0xFF)) * 0x100000001B3ull;
  }
  return h;
}

// One reference line: the ids, or "#count hash" of them.
bool matches_reference(const std::vector<int32_t>& ids, const std::string& line, std::string* want) {
  if (!line.empty() && line[0] == '#') {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "#%zu %016llx", ids.size(), static_cast<unsigned long long>(fnv1a64(ids)));
    *want = line;
    return line == buf;
  }
  *want = line;
  return ids == testing::parse_ids(line);
}

// Whether decode(encode(s)) must give s back. Not when a byte has no token of its own (byte-level
// vocabularies may lack some control bytes, which Hugging Face drops), nor, for SentencePiece
// vocabularies, when the text holds a '▁' (read back as a space), added-token text (after
// which the prefix space is inserted again) or starts with a space (Metaspace adds no prefix
// then, and decoding drops that space, as Hugging Face's does).
class LosslessCheck {
 public:
  explicit LosslessCheck(const Tokenizer& tok) : tok_(tok) {
    for (int64_t id = 0; id < tok.vocab_size(); ++id) {
      const std::string piece = tok.token_piece(static_cast<int32_t>(id));
      if (piece.size() == 1 && !tok.is_special(static_cast<int32_t>(id))) byte_ok_[static_cast<uint8_t>(piece[0])] = true;
    }
  }
  bool operator()(const std::string& s) const {
    for (const char c : s) {
      if (!byte_ok_[static_cast<uint8_t>(c)]) return false;
    }
    if (!tok_.strips_leading_space()) return true;
    if (!s.empty() && s[0] == ' ') return false;
    if (s.find("\xE2\x96\x81") != std::string::npos) return false;
    for (const AddedToken& t : tok_.vocab().added) {
      if (s.find(t.content) != std::string::npos) return false;
    }
    return true;
  }

 private:
  const Tokenizer& tok_;
  bool byte_ok_[256] = {};
};

std::vector<std::string> random_strings() {
  std::string text;
  EXPECT_TRUE(testing::read_file(testing::tokenizer_data_dir() + "/random_strings.json", &text));
  return nlohmann::json::parse(text).get<std::vector<std::string>>();
}

// Encodes every random string and compares with the reference lines; also checks the round trip.
void check_random_strings(const Tokenizer& tok, const std::string& ids_path, const std::string& name) {
  const std::vector<std::string> strings = random_strings();
  std::string text;
  ASSERT_TRUE(testing::read_file(ids_path, &text)) << ids_path;
  std::vector<std::string> lines = testing::split(text, "\n");
  ASSERT_EQ(lines.back(), "");
  lines.pop_back();
  ASSERT_EQ(lines.size(), strings.size()) << ids_path;
  const LosslessCheck lossless(tok);
  int mismatches = 0, round_trip_failures = 0, round_trips = 0;
  for (size_t i = 0; i < strings.size(); ++i) {
    auto ids = tok.encode(strings[i], /*add_special=*/false);
    ASSERT_TRUE(ids.ok()) << ids.status().to_string();
    std::string want;
    if (!matches_reference(*ids, lines[i], &want) && ++mismatches <= 5) {
      ADD_FAILURE() << name << " random string " << i << " " << nlohmann::json(strings[i]).dump()
                    << "\n  kiln: " << ids_to_string(*ids) << "\n  want: " << want
                    << "\n  (full reference: scripts/tokenizer_make_reference.py --show " << name << " " << i << ")";
    }
    if (!lossless(strings[i])) continue;
    ++round_trips;
    const std::string back = tok.decode(*ids);
    if (back != strings[i] && ++round_trip_failures <= 5) {
      ADD_FAILURE() << name << " round trip of string " << i << ": " << nlohmann::json(strings[i]).dump()
                    << " decoded to " << nlohmann::json(back).dump();
    }
  }
  EXPECT_EQ(mismatches, 0) << name << ": strings whose ids differ from the reference";
  EXPECT_EQ(round_trip_failures, 0) << name << ": strings where decode(encode(s)) != s";
  EXPECT_GE(round_trips, static_cast<int>(strings.size()) / 2) << name << ": too few strings were round-tripped";
}

void check_shakespeare(const Tokenizer& tok, const std::string& name) {
  std::string text;
  ASSERT_TRUE(testing::read_file(testing::shared_dir() + "/testdata/text/tinyshakespeare.txt", &text));
  auto ids = tok.encode(text, /*add_special=*/false);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(tok.decode(*ids), text) << name << ": shakespeare does not round-trip";
  std::string base = testing::tokenizer_data_dir();
  base.append("/ids/").append(name).append(".shakespeare");
  std::string ref;
  if (testing::read_file(base + ".u16", &ref)) {
    std::vector<int32_t> want(ref.size() / 2);
    for (size_t i = 0; i < want.size(); ++i) {
      want[i] = static_cast<uint8_t>(ref[2 * i]) | (static_cast<uint8_t>(ref[2 * i + 1]) << 8);
    }
    const int64_t diff = first_difference(*ids, want);
    EXPECT_EQ(diff, -1) << name << ": " << ids->size() << " ids vs " << want.size()
                        << " in the reference; first difference at token " << diff;
    return;
  }
  ASSERT_TRUE(testing::read_file(base + ".fnv", &ref)) << base;
  std::string want;
  std::string line(1, '#');
  line.append(ref, 0, ref.find('\n'));
  EXPECT_TRUE(matches_reference(*ids, line, &want))
      << name << ": shakespeare ids differ from the reference (" << want << "), kiln gives " << ids->size();
}

class ReferenceTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceTest, RandomStringsAndShakespeareMatchHuggingFace) {
  const std::string name = GetParam();
  const std::string path = name == "smollm2" ? testing::smollm2_gguf() : testing::vocab_dir() + "/ggml-vocab-" + name + ".gguf";
  if (path.empty()) GTEST_SKIP() << "SmolLM2-135M-Instruct.Q4_1.gguf is not in ~/.cache/kiln/models";
  std::string error;
  auto tok = testing::load(path, &error);
  ASSERT_NE(tok, nullptr) << error;
  std::string ids_path = testing::tokenizer_data_dir();
  ids_path.append("/ids/").append(name).append(".random.txt");
  check_random_strings(*tok, ids_path, name);
  check_shakespeare(*tok, name);
}

INSTANTIATE_TEST_SUITE_P(Vocabs, ReferenceTest,
                         ::testing::Values("smollm2", "llama-spm", "phi-3", "gpt-2", "starcoder", "falcon",
                                           "deepseek-llm"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n) c = c == '-' ? '_' : c;
                           return n;
                         });

class HfDirTest : public ::testing::TestWithParam<std::string> {};

TEST_P(HfDirTest, MatchesItsReference) {
  const std::string dir = testing::tokenizer_data_dir() + "/" + GetParam();
  auto tok = Tokenizer::from_hf_dir(dir);
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  check_random_strings(**tok, dir + "/random.txt", GetParam());
  std::string text;
  ASSERT_TRUE(testing::read_file(dir + "/special_cases.json", &text));
  for (const auto& c : nlohmann::json::parse(text)) {
    const std::string s = c["text"];
    auto plain = (*tok)->encode(s, false);
    auto with_special = (*tok)->encode(s, true);
    ASSERT_TRUE(plain.ok() && with_special.ok());
    EXPECT_EQ(ids_to_string(*plain), ids_to_string(c["ids"].get<std::vector<int32_t>>())) << nlohmann::json(s).dump();
    EXPECT_EQ(ids_to_string(*with_special), ids_to_string(c["ids_with_special"].get<std::vector<int32_t>>()))
        << nlohmann::json(s).dump() << " with special tokens";
  }
}

INSTANTIATE_TEST_SUITE_P(Dirs, HfDirTest, ::testing::Values("hf_tiny_bytelevel", "hf_tiny_metaspace",
                                                      "hf_tiny_metaspace_first", "spm_tiny"));

TEST(HfDirTest, ReadsTokenizerConfig) {
  auto tok = Tokenizer::from_hf_dir(testing::tokenizer_data_dir() + "/hf_tiny_bytelevel");
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  EXPECT_EQ((*tok)->token_string((*tok)->bos_id()), "<|begin_of_text|>");
  ASSERT_FALSE((*tok)->eos_ids().empty());
  EXPECT_EQ((*tok)->token_string((*tok)->eos_ids()[0]), "<|eot_id|>");
  EXPECT_NE((*tok)->chat_template().find("<|start_header_id|>"), std::string::npos);
  EXPECT_FALSE(Tokenizer::from_hf_dir(testing::tokenizer_data_dir() + "/no_such_dir").ok());
}

}  // namespace
}  // namespace kiln
