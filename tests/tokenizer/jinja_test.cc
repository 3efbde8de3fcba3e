// The Jinja interpreter, feature by feature: each template of tests/data/tokenizer/jinja_cases.json
// must render exactly as transformers' Jinja2 environment rendered it (operators, Python number
// formatting, loops and loop variables, scoping, namespace, filters, tests, methods, slicing,
// macros, whitespace control with trim_blocks/lstrip_blocks).
#include <gtest/gtest.h>

#include "kiln/tokenizer/chat_template.h"
#include "kiln/tokenizer/jinja_interpreter.h"
#include "tests/tokenizer/tokenizer_test_util.h"

namespace kiln {
namespace {

TEST(JinjaTest, MatchesJinja2FeatureByFeature) {
  std::string text;
  ASSERT_TRUE(testing::read_file(testing::tokenizer_data_dir() + "/jinja_cases.json", &text));
  const nlohmann::ordered_json cases = nlohmann::ordered_json::parse(text);
  ASSERT_GE(cases.size(), 20u);
  for (const auto& c : cases) {
    std::vector<std::pair<std::string, jinja::Value>> vars;
    for (auto it = c["vars"].begin(); it != c["vars"].end(); ++it) vars.emplace_back(it.key(), jinja::value_from_json(it.value()));
    auto out = jinja::render_template(c["template"], vars);
    ASSERT_TRUE(out.ok()) << c["template"] << ": " << out.status().to_string();
    EXPECT_EQ(*out, c["expected"].get<std::string>()) << c["template"];
  }
}

TEST(JinjaTest, ErrorsNameTheLine) {
  auto out = jinja::render_template("line1\n{{ 1 + 'a' }}", {});
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("line 2"), std::string::npos) << out.status().to_string();
  out = jinja::render_template("{{ undefined_thing.attr }}", {});
  EXPECT_FALSE(out.ok());
  out = jinja::render_template("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", {});
  EXPECT_FALSE(out.ok());  // unbounded recursion is stopped, not a crash
  out = jinja::render_template("{{ 'unterminated }}", {});
  EXPECT_FALSE(out.ok());
}

}  // namespace
}  // namespace kiln
