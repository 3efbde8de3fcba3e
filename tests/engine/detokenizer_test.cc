// Detokenizer on SmolLM2's tokenizer: the deltas add up to the decoded continuation, whole
// characters only, and the first token keeps its leading space as the prompt's continuation.
#include "kiln/engine/detokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "kiln/tokenizer/tokenizer.h"

namespace kiln {
namespace {

std::string smollm2_path() {
  if (const char* m = std::getenv("KILN_MODEL")) return m;
  const char* d = std::getenv("KILN_MODEL_DIR");
  const std::string dir = d ? d : std::string(std::getenv("HOME") ? std::getenv("HOME") : ".") + "/.cache/kiln/models";
  return dir + "/SmolLM2-135M-Instruct.Q4_1.gguf";
}

TEST(Detokenizer, DeltasAddUpToTheContinuation) {
  const std::string path = smollm2_path();
  if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " missing (run scripts/setup.sh)";
  auto tok = load_tokenizer(path);
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  auto prompt = (*tok)->encode("The capital of France is", true);
  auto rest = (*tok)->encode(" Paris, déjà vu 東京 🙂<|im_end|> ok", false);
  ASSERT_TRUE(prompt.ok() && rest.ok());
  Detokenizer d(tok->get(), *prompt, /*skip_special=*/true);
  std::string text;
  for (int32_t id : *rest) {
    const std::string delta = d.step(id);
    EXPECT_EQ(utf8_complete_prefix(delta, delta.size()), delta.size()) << "a delta ends inside a character";
    text += delta;
  }
  EXPECT_EQ(text, (*tok)->decode(*rest, true));
  EXPECT_EQ(text.substr(0, 6), " Paris");
}

TEST(Detokenizer, NoTokenizerNoText) {
  Detokenizer d(nullptr, {1, 2}, true);
  EXPECT_EQ(d.step(3), "");
}

}  // namespace
}  // namespace kiln
