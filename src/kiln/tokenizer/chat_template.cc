#include "kiln/tokenizer/chat_template.h"

#include "kiln/tokenizer/jinja_interpreter.h"
#include "kiln/tokenizer/jinja_parser.h"

namespace kiln {

namespace jinja {
Value value_from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return Value::none();
    case nlohmann::ordered_json::value_t::boolean: return Value(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
    case nlohmann::ordered_json::value_t::number_unsigned: return Value(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_float: return Value(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List items;
      for (const auto& item : j) items.push_back(value_from_json(item));
      return Value(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      auto d = make_dict();
      for (auto it = j.begin(); it != j.end(); ++it) d->set(it.key(), value_from_json(it.value()));
      return Value(d);
    }
    default: return Value();
  }
}
}  // namespace jinja

Result<ChatTemplate> ChatTemplate::parse(const std::string& source) {
  Result<jinja::Template> parsed = jinja::parse(source);
  if (!parsed.ok()) return parsed.status().with_context("chat template");
  jinja::Template t = std::move(parsed).value();
  ChatTemplate c;
  c.tmpl_ = std::make_shared<const jinja::Template>(std::move(t));
  return c;
}

Result<std::string> ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                         const std::string& bos_token, const std::string& eos_token) const {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const ChatMessage& m : messages) list.push_back({{"role", m.role}, {"content", m.content}});
  return render_json(list, add_generation_prompt, bos_token, eos_token);
}

Result<std::string> ChatTemplate::render_json(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                              const std::string& bos_token, const std::string& eos_token,
                                              const nlohmann::ordered_json& extra) const {
  if (!messages.is_array()) return invalid_argument("chat messages must be a JSON array");
  std::vector<std::pair<std::string, jinja::Value>> globals = {
      {"messages", jinja::value_from_json(messages)},
      {"add_generation_prompt", jinja::Value(add_generation_prompt)},
      {"bos_token", jinja::Value(bos_token)},
      {"eos_token", jinja::Value(eos_token)},
      // transformers always passes these two, as None when the caller has none.
      {"tools", jinja::Value::none()},
      {"documents", jinja::Value::none()},
  };
  if (extra.is_object()) {
    for (auto it = extra.begin(); it != extra.end(); ++it) globals.emplace_back(it.key(), jinja::value_from_json(it.value()));
  }
  jinja::Interpreter interp(*tmpl_, globals);
  auto out = interp.render();
  if (!out.ok()) return out.status().with_context("chat template");
  return out;
}

Result<std::string> render_chat(const std::string& tmpl, const std::vector<ChatMessage>& msgs,
                                bool add_generation_prompt, const std::string& bos_token,
                                const std::string& eos_token) {
  KILN_ASSIGN_OR_RETURN(ChatTemplate t, ChatTemplate::parse(tmpl));
  return t.render(msgs, add_generation_prompt, bos_token, eos_token);
}

}  // namespace kiln
