// The factories: which Tokenizer implementation a GGUF file or a Hugging Face directory gets.
#include "kiln/tokenizer/tokenizer.h"

#include <filesystem>

#include "kiln/tokenizer/bpe_tokenizer.h"
#include "kiln/tokenizer/hf_tokenizer_files.h"
#include "kiln/tokenizer/spm_tokenizer.h"

namespace kiln {
namespace {

// Pre-tokenizers whose tokenizer.json sets "ignore_merges": true.
bool gguf_pre_ignores_merges(std::string_view pre) {
  return pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3";
}

Result<MergeList> gguf_merges(const GgufFile& gguf) {
  KILN_ASSIGN_OR_RETURN(std::vector<std::string> lines, gguf.get_string_array("tokenizer.ggml.merges"));
  MergeList merges;
  merges.reserve(lines.size());
  for (const std::string& line : lines) {
    // Pieces never hold a space (the byte alphabet writes it 'Ġ'); search from 1 all the same,
    // as llama.cpp does, so a piece that is a bare space still parses.
    const size_t space = line.find(' ', 1);
    if (space == std::string::npos) return data_loss(gguf.path() + ": merge without a space: '" + line + "'");
    merges.emplace_back(line.substr(0, space), line.substr(space + 1));
  }
  return merges;
}

Result<std::unique_ptr<Tokenizer>> gguf_byte_level(const GgufFile& gguf, Vocab vocab) {
  KILN_ASSIGN_OR_RETURN(MergeList merges, gguf_merges(gguf));
  std::string pre_name = "default";
  if (gguf.find("tokenizer.ggml.pre") != nullptr) {
    KILN_ASSIGN_OR_RETURN(pre_name, gguf.get_string("tokenizer.ggml.pre"));
  }
  KILN_ASSIGN_OR_RETURN(PreTokenizer pre, PreTokenizer::for_gguf(pre_name));
  BpeOptions options;
  options.byte_level = true;
  options.ignore_merges = gguf_pre_ignores_merges(pre_name);
  KILN_ASSIGN_OR_RETURN(auto t, BpeTokenizer::create(std::move(vocab), merges, std::move(pre), options));
  return std::unique_ptr<Tokenizer>(std::move(t));
}

}  // namespace

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_gguf(const GgufFile& gguf) {
  KILN_ASSIGN_OR_RETURN(std::string model, gguf.get_string("tokenizer.ggml.model"));
  KILN_ASSIGN_OR_RETURN(Vocab vocab, vocab_from_gguf(gguf));
  if (model == "gpt2") return gguf_byte_level(gguf, std::move(vocab));
  if (model == "llama") {
    const GgufValue* prefix = gguf.find("tokenizer.ggml.add_space_prefix");
    KILN_ASSIGN_OR_RETURN(auto t, SpmTokenizer::create(std::move(vocab), prefix == nullptr || prefix->i != 0));
    return std::unique_ptr<Tokenizer>(std::move(t));
  }
  return unimplemented(gguf.path() + ": tokenizer.ggml.model '" + model +
                       "' is not supported (supported: gpt2, llama)");
}

Result<std::unique_ptr<Tokenizer>> Tokenizer::from_hf_dir(const std::string& dir) {
  return tokenizer_from_hf_dir(dir);
}

Result<std::unique_ptr<Tokenizer>> load_tokenizer(const LoadedModel& model) {
  if (model.gguf != nullptr) return Tokenizer::from_gguf(*model.gguf);
  if (!model.hf_dir.empty()) return Tokenizer::from_hf_dir(model.hf_dir);
  return not_found(model.path + ": the model carries no tokenizer (no GGUF metadata, no directory)");
}

Result<std::unique_ptr<Tokenizer>> load_tokenizer(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    // `kiln quantize` of a GGUF model leaves its vocabulary as a metadata-only tokenizer.gguf.
    if (!std::filesystem::exists(path + "/tokenizer.json", ec) && std::filesystem::exists(path + "/tokenizer.gguf", ec))
      return load_tokenizer(path + "/tokenizer.gguf");
    return Tokenizer::from_hf_dir(path);
  }
  KILN_ASSIGN_OR_RETURN(GgufFile gguf, GgufFile::open(path));
  return Tokenizer::from_gguf(gguf);
}

}  // namespace kiln
