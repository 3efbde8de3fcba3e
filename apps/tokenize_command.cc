// `kiln tokenize` and `kiln detokenize`: text on stdin -> ids on one line, and back. The text is
// taken byte for byte (no trailing newline is dropped); --no-special adds no BOS/EOS, which is
// how the vocabulary test vectors were made.
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>

#include "apps/commands.h"
#include "kiln/tokenizer/tokenizer.h"

namespace kiln::apps {
namespace {

struct TokenizeOptions {
  std::string model;
  bool no_special = false;
};

std::string default_model_path() {
  if (const char* env = std::getenv("KILN_MODEL"); env != nullptr && *env != '\0') return env;
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : "") + "/.cache/kiln/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

std::string read_stdin() {
  std::ostringstream ss;
  ss << std::cin.rdbuf();
  return ss.str();
}

int fail(const char* command, const std::string& message) {
  std::cerr << "kiln " << command << ": " << message << "\n";
  return 1;
}

int run_tokenize(const TokenizeOptions& o) {
  const std::string path = o.model.empty() ? default_model_path() : o.model;
  auto tok = load_tokenizer(path);
  if (!tok.ok()) return fail("tokenize", tok.status().to_string());
  auto ids = (*tok)->encode(read_stdin(), /*add_special=*/!o.no_special);
  if (!ids.ok()) return fail("tokenize", ids.status().to_string());
  std::string line;
  for (size_t i = 0; i < ids->size(); ++i) line += (i ? " " : "") + std::to_string((*ids)[i]);
  std::cout << line << "\n";
  return 0;
}

int run_detokenize(const TokenizeOptions& o) {
  const std::string path = o.model.empty() ? default_model_path() : o.model;
  auto tok = load_tokenizer(path);
  if (!tok.ok()) return fail("detokenize", tok.status().to_string());
  std::istringstream in(read_stdin());
  std::vector<int32_t> ids;
  std::string word;
  while (in >> word) {
    char* end = nullptr;
    const long long v = std::strtoll(word.c_str(), &end, 10);
    if (end == word.c_str() || *end != '\0' || v < 0 || v >= (*tok)->vocab_size()) {
      return fail("detokenize", "'" + word + "' is not a token id of this vocabulary (size " +
                                    std::to_string((*tok)->vocab_size()) + ")");
    }
    ids.push_back(static_cast<int32_t>(v));
  }
  std::cout << (*tok)->decode(ids, /*skip_special=*/false);
  std::cout.flush();
  return 0;
}

}  // namespace

void register_tokenize_commands(CLI::App& app, int* exit_code) {
  auto options = std::make_shared<TokenizeOptions>();
  const std::string model_help =
      "a .gguf file or a Hugging Face directory (default: $KILN_MODEL, else "
      "~/.cache/kiln/models/SmolLM2-135M-Instruct.Q4_1.gguf)";

  CLI::App* tokenize = app.add_subcommand("tokenize", "print the token ids of the text on stdin");
  tokenize->add_option("--model", options->model, model_help);
  tokenize->add_flag("--no-special", options->no_special, "add no BOS/EOS tokens");
  tokenize->callback([options, exit_code] { *exit_code = run_tokenize(*options); });

  CLI::App* detokenize = app.add_subcommand("detokenize", "print the text of the token ids on stdin");
  detokenize->add_option("--model", options->model, model_help);
  detokenize->callback([options, exit_code] { *exit_code = run_detokenize(*options); });
}

}  // namespace kiln::apps
