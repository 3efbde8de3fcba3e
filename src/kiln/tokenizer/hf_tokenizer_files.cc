#include "kiln/tokenizer/hf_tokenizer_files.h"

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "kiln/tokenizer/sentencepiece_tokenizer.h"

namespace kiln {
namespace {

Result<nlohmann::json> read_json(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return not_found(path + ": cannot open");
  std::ostringstream ss;
  ss << f.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return data_loss(path + ": not valid JSON");
  return j;
}

// tokenizer_config.json writes special tokens as a string or as an AddedToken object.
std::string token_text(const nlohmann::json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string()) return j["content"].get<std::string>();
  return "";
}

std::string chat_template_of(const nlohmann::json& cfg, const std::string& dir) {
  std::ifstream jinja(dir + "/chat_template.jinja", std::ios::binary);
  if (jinja) {
    std::ostringstream ss;
    ss << jinja.rdbuf();
    return ss.str();
  }
  if (!cfg.contains("chat_template")) return "";
  const nlohmann::json& t = cfg["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array()) {  // named templates: the "default" one
    for (const auto& item : t) {
      if (!item.is_object() || item.value("name", "") != "default") continue;
      if (auto it = item.find("template"); it != item.end() && it->is_string()) return it->get<std::string>();
    }
  }
  return "";
}

}  // namespace

Result<HfTokenizerConfig> read_hf_tokenizer_config(const std::string& dir) try {
  HfTokenizerConfig c;
  if (std::filesystem::exists(dir + "/tokenizer_config.json")) {
    KILN_ASSIGN_OR_RETURN(nlohmann::json cfg, read_json(dir + "/tokenizer_config.json"));
    if (cfg.contains("bos_token")) c.bos_token = token_text(cfg["bos_token"]);
    if (cfg.contains("eos_token")) c.eos_token = token_text(cfg["eos_token"]);
    if (cfg.contains("add_bos_token") && cfg["add_bos_token"].is_boolean()) c.add_bos = cfg["add_bos_token"].get<bool>();
    if (cfg.contains("add_eos_token") && cfg["add_eos_token"].is_boolean()) c.add_eos = cfg["add_eos_token"].get<bool>();
    c.chat_template = chat_template_of(cfg, dir);
  }
  if (std::filesystem::exists(dir + "/generation_config.json")) {
    KILN_ASSIGN_OR_RETURN(nlohmann::json gen, read_json(dir + "/generation_config.json"));
    const nlohmann::json eos = gen.is_object() ? gen.value("eos_token_id", nlohmann::json()) : nlohmann::json();
    // Ids beyond int32 are dropped: no vocabulary holds them.
    auto add = [&c](const nlohmann::json& id) {
      if (id.is_number_integer() && id.get<int64_t>() >= 0 && id.get<int64_t>() <= INT32_MAX) c.eos_ids.push_back(id.get<int64_t>());
    };
    add(eos);
    if (eos.is_array()) for (const auto& id : eos) add(id);
  }
  return c;
} catch (const nlohmann::json::exception& e) {  // a field of the wrong JSON type
  return data_loss(dir + ": tokenizer_config.json or generation_config.json: a field has the wrong JSON type (" +
                   e.what() + ")");
}

void apply_hf_config(const HfTokenizerConfig& config, Vocab& vocab) {
  if (!config.bos_token.empty() && vocab.find(config.bos_token) >= 0) vocab.bos_id = vocab.find(config.bos_token);
  if (!config.eos_token.empty() && vocab.find(config.eos_token) >= 0) vocab.eos_id = vocab.find(config.eos_token);
  if (config.add_bos) vocab.add_bos = *config.add_bos;
  if (config.add_eos) vocab.add_eos = *config.add_eos;
  if (vocab.bos_id < 0) vocab.add_bos = false;
  if (vocab.eos_id < 0) vocab.add_eos = false;
  std::vector<int32_t> extra(config.eos_ids.begin(), config.eos_ids.end());
  vocab.eog_ids.clear();
  vocab.collect_eog(extra);
  if (!config.chat_template.empty()) vocab.chat_template = config.chat_template;
}

Result<std::unique_ptr<Tokenizer>> tokenizer_from_hf_dir(const std::string& dir) {
  KILN_ASSIGN_OR_RETURN(HfTokenizerConfig config, read_hf_tokenizer_config(dir));
  const std::string json_path = dir + "/tokenizer.json";
  if (std::filesystem::exists(json_path)) {
    KILN_ASSIGN_OR_RETURN(nlohmann::json j, read_json(json_path));
    return tokenizer_from_json(j, config, dir);
  }
  const std::string model_path = dir + "/tokenizer.model";
  if (std::filesystem::exists(model_path)) {
    KILN_ASSIGN_OR_RETURN(auto t, SentencePieceTokenizer::load(model_path, config));
    return std::unique_ptr<Tokenizer>(std::move(t));
  }
  return not_found(dir + ": no tokenizer.json or tokenizer.model");
}

}  // namespace kiln
