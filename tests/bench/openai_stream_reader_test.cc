// OpenAiStreamReader: recorded completions and chat streams cut mid-event, and every kind of
// failure (HTTP status, error event, missing [DONE], transport).
#include "kiln/bench/openai_stream_reader.h"

#include <gtest/gtest.h>

namespace kiln::bench {
namespace {

TEST(OpenAiStreamReader, CompletionsAndChatStreams) {
  RequestRecord r;
  OpenAiStreamReader reader(&r);
  reader.on_status(200);
  reader.on_body("data: {\"choices\":[{\"text\":\"Hel\"}]}\n\ndata: {\"choi", 0.5);
  reader.on_body("ces\":[{\"text\":\"lo\"}]}\n\n", 0.6);
  reader.on_body("data: {\"choices\":[{\"text\":\"\",\"finish_reason\":\"length\"}]}\n\n", 0.65);
  reader.on_body("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n", 0.7);
  reader.on_done("", 0.75);
  EXPECT_TRUE(r.ok) << r.error;
  EXPECT_DOUBLE_EQ(r.ttft, 0.5);
  ASSERT_EQ(r.itl.size(), 1u);
  EXPECT_NEAR(r.itl[0], 0.1, 1e-12);
  EXPECT_EQ(r.prompt_tokens, 7);
  EXPECT_EQ(r.output_tokens, 3);
  EXPECT_DOUBLE_EQ(r.e2e, 0.75);

  RequestRecord c;
  OpenAiStreamReader chat(&c);
  chat.on_status(200);
  chat.on_body("data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n", 0.01);
  chat.on_body("data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n", 0.2);
  chat.on_done("", 0.3);
  EXPECT_TRUE(c.ok);
  EXPECT_DOUBLE_EQ(c.ttft, 0.2);  // the role-only chunk is not a token
  EXPECT_FALSE(c.usage_reported);
  EXPECT_EQ(c.output_tokens, 1);
}

TEST(OpenAiStreamReader, Errors) {
  RequestRecord a;
  OpenAiStreamReader http(&a);
  http.on_status(400);
  http.on_body("{\"error\":{\"message\":\"prompt too long\"}}", 0.1);
  http.on_done("", 0.1);
  EXPECT_FALSE(a.ok);
  EXPECT_EQ(a.error, "HTTP 400: prompt too long");

  RequestRecord b;
  OpenAiStreamReader cut(&b);
  cut.on_status(200);
  cut.on_body("data: {\"choices\":[{\"text\":\"x\"}]}\n\n", 0.1);
  cut.on_done("", 0.2);
  EXPECT_FALSE(b.ok);
  EXPECT_NE(b.error.find("[DONE]"), std::string::npos);

  RequestRecord c;
  OpenAiStreamReader event(&c);
  event.on_status(200);
  event.on_body("data: {\"error\":{\"message\":\"engine died\"}}\n\ndata: [DONE]\n\n", 0.1);
  event.on_done("", 0.2);
  EXPECT_FALSE(c.ok);
  EXPECT_EQ(c.error, "error event: engine died");

  RequestRecord d;
  OpenAiStreamReader transport(&d);
  transport.on_done("connect 127.0.0.1:1: Connection refused", 0.01);
  EXPECT_FALSE(d.ok);
  EXPECT_NE(d.error.find("refused"), std::string::npos);
}

}  // namespace
}  // namespace kiln::bench
