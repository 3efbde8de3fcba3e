// HttpClient's URL handling: base URLs as vLLM and the OpenAI client write them.
#include "kiln/bench/http_client.h"

#include <gtest/gtest.h>

namespace kiln::bench {
namespace {

TEST(HttpClient, BaseUrlsAndEndpointPaths) {
  auto a = parse_base_url("http://127.0.0.1:8000");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, "8000");
  EXPECT_EQ(a->path_prefix, "");
  EXPECT_EQ(endpoint_path(*a, "/v1/completions"), "/v1/completions");
  auto b = parse_base_url("http://localhost/v1/");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->port, "80");
  EXPECT_EQ(b->path_prefix, "/v1");
  EXPECT_EQ(endpoint_path(*b, "/v1/chat/completions"), "/chat/completions");
  EXPECT_EQ(parse_base_url("https://x").status().code(), StatusCode::kUnimplemented);
  EXPECT_FALSE(parse_base_url("127.0.0.1:8000").ok());
  EXPECT_FALSE(parse_base_url("http://:80").ok());
  EXPECT_FALSE(parse_base_url("http://h:port").ok());
}

}  // namespace
}  // namespace kiln::bench
