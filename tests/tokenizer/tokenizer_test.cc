// The Tokenizer API the engine uses: load_tokenizer for a loaded model, special ids, BOS on
// add_special, errors as values (invalid UTF-8, unknown vocabularies), token pieces, and encode
// from several threads at once giving the single-threaded ids.
#include "kiln/tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <thread>

#include "kiln/tokenizer/pre_tokenizer.h"
#include "tests/tokenizer/tokenizer_test_util.h"

namespace kiln {
namespace {

std::unique_ptr<Tokenizer> load_vocab(const std::string& name) {
  std::string error;
  auto tok = testing::load(testing::vocab_dir() + "/ggml-vocab-" + name + ".gguf", &error);
  EXPECT_NE(tok, nullptr) << error;
  return tok;
}

TEST(TokenizerTest, LoadTokenizerFromALoadedGgufModel) {
  auto gguf = GgufFile::open(testing::vocab_dir() + "/ggml-vocab-llama-spm.gguf");
  ASSERT_TRUE(gguf.ok()) << gguf.status().to_string();
  LoadedModel model;
  model.path = "llama-spm";
  model.gguf = std::make_shared<const GgufFile>(std::move(gguf).value());
  auto tok = load_tokenizer(model);
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  EXPECT_EQ((*tok)->vocab_size(), 32000);
  EXPECT_EQ((*tok)->bos_id(), 1);
  EXPECT_EQ((*tok)->eos_ids(), std::vector<int32_t>{2});
  EXPECT_FALSE(load_tokenizer(LoadedModel{}).ok());
}

TEST(TokenizerTest, AddSpecialAddsBosWhereTheVocabularySaysSo) {
  auto llama = load_vocab("llama-spm");
  ASSERT_NE(llama, nullptr);
  EXPECT_EQ(*llama->encode("Hello", true), (std::vector<int32_t>{1, 15043}));
  EXPECT_EQ(*llama->encode("Hello", false), (std::vector<int32_t>{15043}));
  EXPECT_EQ(*llama->encode("", true), (std::vector<int32_t>{1}));
  auto gpt2 = load_vocab("gpt-2");  // GPT-2 adds no BOS
  ASSERT_NE(gpt2, nullptr);
  EXPECT_EQ(*gpt2->encode("Hello", true), (std::vector<int32_t>{15496}));
}

TEST(TokenizerTest, SpecialTokensInTheTextBecomeTheirIds) {
  auto gpt2 = load_vocab("gpt-2");
  ASSERT_NE(gpt2, nullptr);
  auto ids = gpt2->encode("a<|endoftext|>b", false);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int32_t>{64, 50256, 65}));
  EXPECT_EQ(gpt2->decode(*ids, /*skip_special=*/true), "ab");
  EXPECT_EQ(gpt2->decode(*ids, /*skip_special=*/false), "a<|endoftext|>b");
  EXPECT_TRUE(gpt2->is_special(50256));
}

TEST(TokenizerTest, InvalidUtf8IsAnErrorNotACrash) {
  auto tok = load_vocab("falcon");
  ASSERT_NE(tok, nullptr);
  auto ids = tok->encode("ok \xC3\x28 no", false);
  ASSERT_FALSE(ids.ok());
  EXPECT_EQ(ids.status().code(), StatusCode::kInvalidArgument);
}

TEST(TokenizerTest, TokenPiecesAndStrings) {
  auto gpt2 = load_vocab("gpt-2");
  ASSERT_NE(gpt2, nullptr);
  EXPECT_EQ(gpt2->token_string(18435), "ĠHello");
  EXPECT_EQ(gpt2->token_piece(18435), " Hello");
  EXPECT_EQ(gpt2->token_id("ĠHello"), 18435);
  EXPECT_EQ(gpt2->token_piece(-1), "");
  EXPECT_EQ(gpt2->token_piece(1 << 30), "");
  auto llama = load_vocab("llama-spm");
  ASSERT_NE(llama, nullptr);
  EXPECT_EQ(llama->token_piece(llama->token_id("<0x0A>")), "\n");
  EXPECT_EQ(llama->token_piece(15043), " Hello");
  EXPECT_TRUE(llama->strips_leading_space());
  EXPECT_EQ(llama->decode({15043, 3186}), "Hello world");
}

TEST(TokenizerTest, UnsupportedVocabularyIsAnError) {
  auto tok = load_tokenizer(testing::tokenizer_data_dir() + "/templates");  // a directory without a tokenizer
  ASSERT_FALSE(tok.ok());
  EXPECT_EQ(tok.status().code(), StatusCode::kNotFound);
  auto pre = PreTokenizer::for_gguf("no-such-pre");
  ASSERT_FALSE(pre.ok());
  EXPECT_EQ(pre.status().code(), StatusCode::kUnimplemented);
}

TEST(TokenizerTest, ConcurrentEncodesAgreeWithOneThread) {
  for (const std::string name : {"gpt-2", "llama-spm"}) {
    auto tok = load_vocab(name);
    ASSERT_NE(tok, nullptr);
    std::string text;
    ASSERT_TRUE(testing::read_file(testing::shared_dir() + "/testdata/text/tinyshakespeare.txt", &text));
    text.resize(200000);
    const std::vector<int32_t> want = *tok->encode(text, false);
    std::vector<std::vector<int32_t>> got(4);
    std::vector<std::thread> threads;
    for (size_t t = 0; t < got.size(); ++t) {
      threads.emplace_back([&, t] { got[t] = *tok->encode(text, false); });
    }
    for (auto& th : threads) th.join();
    for (const auto& g : got) EXPECT_EQ(testing::first_difference(g, want), -1) << name;
  }
}

}  // namespace
}  // namespace kiln
