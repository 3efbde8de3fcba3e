// Chat templates rendered by kiln must equal, byte for byte, what transformers'
// apply_chat_template renders (tests/data/tokenizer/chat_templates.json, written by
// scripts/tokenizer_make_reference.py): Llama 2, Llama 3, Llama 3.1, Mistral, Mixtral, Mistral
// v0.3, Qwen2, Qwen2.5, SmolLM2 and Phi-3, with and without system messages, generation prompts
// and tools. Where transformers raises, kiln must return an error.
#include "kiln/tokenizer/chat_template.h"

#include <gtest/gtest.h>

#include <map>

#include "tests/tokenizer/tokenizer_test_util.h"

namespace kiln {
namespace {

TEST(ChatTemplateTest, MatchesTransformersByteForByte) {
  std::string text;
  ASSERT_TRUE(testing::read_file(testing::tokenizer_data_dir() + "/chat_templates.json", &text));
  const nlohmann::ordered_json cases = nlohmann::ordered_json::parse(text);
  ASSERT_GE(cases.size(), 100u);
  std::map<std::string, int> rendered_per_family;
  for (const auto& c : cases) {
    const std::string family = c["template"];
    std::string source;
    ASSERT_TRUE(testing::read_file(testing::tokenizer_data_dir() + "/templates/" + family + ".jinja", &source));
    auto tmpl = ChatTemplate::parse(source);
    ASSERT_TRUE(tmpl.ok()) << family << ": " << tmpl.status().to_string();
    nlohmann::ordered_json extra = nlohmann::ordered_json::object();
    if (c.contains("tools")) extra["tools"] = c["tools"];
    auto out = tmpl->render_json(c["messages"], c["add_generation_prompt"], c["bos_token"], c["eos_token"], extra);
    const std::string what = family + "/" + c["conversation"].get<std::string>() +
                             (c["add_generation_prompt"].get<bool>() ? " +generation prompt" : "");
    if (!c["error"].is_null()) {
      EXPECT_FALSE(out.ok()) << what << ": transformers raised (" << c["error"] << ") but kiln rendered:\n" << *out;
      continue;
    }
    ASSERT_TRUE(out.ok()) << what << ": " << out.status().to_string();
    EXPECT_EQ(*out, c["expected"].get<std::string>()) << what;
    ++rendered_per_family[family];
  }
  for (const char* family : {"llama2", "llama3", "llama31", "mistral", "mixtral", "mistral_v3", "qwen2", "qwen25",
                             "smollm2", "phi3"}) {
    EXPECT_GE(rendered_per_family[family], 4) << family;
  }
}

TEST(ChatTemplateTest, RenderChatWithPlainMessages) {
  std::string source;
  ASSERT_TRUE(testing::read_file(testing::tokenizer_data_dir() + "/templates/smollm2.jinja", &source));
  auto out = render_chat(source, {{"user", "Hi"}}, /*add_generation_prompt=*/true, "<|im_start|>", "<|im_end|>");
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  EXPECT_EQ(*out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplateTest, RaiseExceptionIsAnError) {
  std::string source;
  ASSERT_TRUE(testing::read_file(testing::tokenizer_data_dir() + "/templates/mistral.jinja", &source));
  auto out = render_chat(source, {{"system", "s"}, {"user", "u"}}, false, "<s>", "</s>");
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("Conversation roles must alternate"), std::string::npos)
      << out.status().to_string();
}

TEST(ChatTemplateTest, UnsupportedTemplateIsAClearError) {
  auto out = render_chat("{% include 'other.jinja' %}", {{"user", "u"}}, false, "", "");
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), StatusCode::kUnimplemented) << out.status().to_string();
  out = render_chat("{{ messages | frobnicate }}", {{"user", "u"}}, false, "", "");
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("frobnicate"), std::string::npos);
  out = render_chat("{% for m in messages %}{{ m.content }}", {{"user", "u"}}, false, "", "");
  ASSERT_FALSE(out.ok());  // missing endfor
  EXPECT_EQ(out.status().message().rfind("chat template: ", 0), 0u) << out.status().to_string();
  out = render_chat("{{ 'a' + }}", {{"user", "u"}}, false, "", "");  // a syntax error
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().message().rfind("chat template: ", 0), 0u) << out.status().to_string();
}

TEST(ChatTemplateTest, TemplatesOfTheTestVocabulariesRender) {
  for (const std::string& path : {testing::vocab_dir() + "/ggml-vocab-phi-3.gguf", testing::smollm2_gguf()}) {
    if (path.empty()) continue;
    std::string error;
    auto tok = testing::load(path, &error);
    ASSERT_NE(tok, nullptr) << error;
    ASSERT_FALSE(tok->chat_template().empty()) << path;
    auto out = render_chat(tok->chat_template(), {{"user", "Hello"}}, true,
                           tok->token_string(tok->bos_id()), tok->token_string(tok->eos_ids()[0]));
    ASSERT_TRUE(out.ok()) << path << ": " << out.status().to_string();
    EXPECT_NE(out->find("Hello"), std::string::npos);
  }
}

}  // namespace
}  // namespace kiln
