// llama.cpp's tokenizer test vectors: every input of ../shared/testdata/vocab/*.inp (separated by
// "\n__ggml_vocab_test__\n") must encode, without special tokens, to its line of the .out file.
// The .out files were made with the Hugging Face tokenizers of each model.
#include <gtest/gtest.h>

#include "tests/tokenizer/tokenizer_test_util.h"

namespace kiln {
namespace {

using testing::first_difference;
using testing::ids_to_string;

class VocabTest : public ::testing::TestWithParam<std::string> {};

TEST_P(VocabTest, EncodesEveryTestVector) {
  const std::string base = testing::vocab_dir() + "/ggml-vocab-" + GetParam() + ".gguf";
  std::string inp, out, error;
  ASSERT_TRUE(testing::read_file(base + ".inp", &inp)) << base;
  ASSERT_TRUE(testing::read_file(base + ".out", &out)) << base;
  std::vector<std::string> inputs = testing::split(inp, "\n__ggml_vocab_test__\n");
  std::vector<std::string> expected = testing::split(out, "\n");
  // Both files end with a separator / newline, which leaves one empty tail element.
  ASSERT_EQ(inputs.back(), "");
  ASSERT_EQ(expected.back(), "");
  inputs.pop_back();
  expected.pop_back();
  ASSERT_EQ(inputs.size(), expected.size()) << "inputs and expected lines differ in number";
  ASSERT_GE(inputs.size(), 40u);

  auto tok = testing::load(base, &error);
  ASSERT_NE(tok, nullptr) << error;
  int failures = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    auto ids = tok->encode(inputs[i], /*add_special=*/false);
    ASSERT_TRUE(ids.ok()) << ids.status().to_string();
    const std::vector<int32_t> want = testing::parse_ids(expected[i]);
    if (*ids != want) {
      ++failures;
      ADD_FAILURE() << GetParam() << " case " << i << " '" << inputs[i] << "'\n  first difference at "
                    << first_difference(*ids, want) << "\n  kiln: " << ids_to_string(*ids)
                    << "\n  want: " << ids_to_string(want);
    }
  }
  EXPECT_EQ(failures, 0);
}

INSTANTIATE_TEST_SUITE_P(AllVocabs, VocabTest,
                         ::testing::Values("llama-spm", "phi-3", "gpt-2", "starcoder", "falcon",
                                           "deepseek-llm"),
                         [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) c = (c == '-') ? '_' : c;
                           return name;
                         });

}  // namespace
}  // namespace kiln
