// StreamDecoder: pushing ids one at a time yields, chunk by chunk, exactly decode(ids); every
// chunk is whole UTF-8 characters; byte-fallback pieces of one character come out together.
#include "kiln/tokenizer/stream_decoder.h"

#include <gtest/gtest.h>

#include <random>

#include "kiln/tokenizer/utf8.h"
#include "tests/tokenizer/tokenizer_test_util.h"

namespace kiln {
namespace {

std::string random_text(std::mt19937& rng) {
  static const char* kPieces[] = {"Hello", " world", "🦙", "😀", "日本語", "é", "e\u0301", " ", "\n",
                                  "  ", "Ä", "𝔘", "\t", "42", "ß", "ក", "!", "<0x41>", "\u200b"};
  std::string s;
  const int n = std::uniform_int_distribution<int>(0, 12)(rng);
  for (int i = 0; i < n; ++i) s += kPieces[rng() % (sizeof(kPieces) / sizeof(kPieces[0]))];
  return s;
}

void expect_stream_matches_decode(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip_special) {
  StreamDecoder stream(tok, skip_special);
  std::string joined;
  for (const int32_t id : ids) {
    const std::string chunk = stream.push(id);
    EXPECT_EQ(utf8::first_invalid(chunk), chunk.size()) << "chunk is not whole UTF-8";
    EXPECT_LE(stream.pending_bytes(), 3u);
    joined += chunk;
  }
  joined += stream.finish();
  EXPECT_EQ(joined, tok.decode(ids, skip_special));
}

class StreamDecoderTest : public ::testing::TestWithParam<std::string> {};

TEST_P(StreamDecoderTest, ChunksJoinToDecode) {
  std::string error;
  auto tok = testing::load(testing::vocab_dir() + "/ggml-vocab-" + GetParam() + ".gguf", &error);
  ASSERT_NE(tok, nullptr) << error;
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 300; ++trial) {
    const std::string text = random_text(rng);
    auto ids = tok->encode(text, /*add_special=*/true);
    ASSERT_TRUE(ids.ok());
    expect_stream_matches_decode(*tok, *ids, true);
    expect_stream_matches_decode(*tok, *ids, false);
  }
  // Arbitrary id sequences too: bytes that never form a character must come out as U+FFFD.
  for (int trial = 0; trial < 100; ++trial) {
    std::vector<int32_t> ids(16);
    for (int32_t& id : ids) id = static_cast<int32_t>(rng() % tok->vocab_size());
    expect_stream_matches_decode(*tok, ids, true);
  }
}

INSTANTIATE_TEST_SUITE_P(Vocabs, StreamDecoderTest, ::testing::Values("llama-spm", "gpt-2", "falcon"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n) c = c == '-' ? '_' : c;
                           return n;
                         });

TEST(StreamDecoderTest, HoldsBackByteTokensUntilTheCharacterCompletes) {
  std::string error;
  auto tok = testing::load(testing::vocab_dir() + "/ggml-vocab-llama-spm.gguf", &error);
  ASSERT_NE(tok, nullptr) << error;
  // 🦙 is not a Llama 2 piece: it becomes the byte tokens <0xF0> <0x9F> <0xA6> <0x99>.
  const std::vector<int32_t> ids = {tok->token_id("<0xF0>"), tok->token_id("<0x9F>"),
                                    tok->token_id("<0xA6>"), tok->token_id("<0x99>")};
  StreamDecoder stream(*tok);
  EXPECT_EQ(stream.push(ids[0]), "");
  EXPECT_EQ(stream.push(ids[1]), "");
  EXPECT_EQ(stream.push(ids[2]), "");
  EXPECT_EQ(stream.pending_bytes(), 3u);
  EXPECT_EQ(stream.push(ids[3]), "🦙");
  EXPECT_EQ(stream.finish(), "");
}

TEST(StreamDecoderTest, DropsTheSentencePiecePrefixSpaceOnlyAtTheStart) {
  std::string error;
  auto tok = testing::load(testing::vocab_dir() + "/ggml-vocab-llama-spm.gguf", &error);
  ASSERT_NE(tok, nullptr) << error;
  auto ids = tok->encode("Hello world", /*add_special=*/true);
  ASSERT_TRUE(ids.ok());
  ASSERT_EQ(*ids, (std::vector<int32_t>{1, 15043, 3186}));
  StreamDecoder stream(*tok);
  EXPECT_EQ(stream.push(1), "");  // BOS is special: skipped
  EXPECT_EQ(stream.push(15043), "Hello");
  EXPECT_EQ(stream.push(3186), " world");
}

TEST(StreamDecoderTest, IncompleteTailBecomesReplacementOnFinish) {
  std::string error;
  auto tok = testing::load(testing::vocab_dir() + "/ggml-vocab-llama-spm.gguf", &error);
  ASSERT_NE(tok, nullptr) << error;
  StreamDecoder stream(*tok);
  EXPECT_EQ(stream.push(tok->token_id("<0xE6>")), "");
  EXPECT_EQ(stream.push(tok->token_id("<0x97>")), "");
  EXPECT_EQ(stream.finish(), "\xEF\xBF\xBD");
  EXPECT_EQ(tok->decode({tok->token_id("<0xE6>"), tok->token_id("<0x97>")}), "\xEF\xBF\xBD");
}

}  // namespace
}  // namespace kiln
