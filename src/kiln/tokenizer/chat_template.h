// Chat templates: the Jinja2 chat_template of tokenizer_config.json / GGUF tokenizer.chat_template,
// rendered the way transformers' apply_chat_template does (trim_blocks, lstrip_blocks, messages,
// add_generation_prompt, bos_token, eos_token). A template that uses something kiln's Jinja
// subset lacks, or that calls raise_exception, is an error, never a wrong prompt.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "kiln/core/status.h"
#include "kiln/tokenizer/jinja_ast.h"

namespace kiln {

struct ChatMessage {
  std::string role, content;
};

class ChatTemplate {
 public:
  // Parses once; render() may then run many times (and from several threads).
  static Result<ChatTemplate> parse(const std::string& source);

  Result<std::string> render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                             const std::string& bos_token, const std::string& eos_token) const;
  // messages as JSON (each an object with role, content and maybe tool_calls, ...); extra holds
  // further template variables (tools, documents, ...) as a JSON object. ordered_json keeps the
  // key order of the request, which tojson reproduces (as Python dicts do).
  Result<std::string> render_json(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                  const std::string& bos_token, const std::string& eos_token,
                                  const nlohmann::ordered_json& extra = nlohmann::ordered_json::object()) const;

 private:
  std::shared_ptr<const jinja::Template> tmpl_;
};

Result<std::string> render_chat(const std::string& tmpl, const std::vector<ChatMessage>& msgs,
                                bool add_generation_prompt, const std::string& bos_token,
                                const std::string& eos_token);

namespace jinja {
// JSON -> template value (objects keep the key order of the json object).
Value value_from_json(const nlohmann::ordered_json& j);
}  // namespace jinja

}  // namespace kiln
