#include "kiln/tokenizer/hf_tokenizer_files.h"

namespace kiln {

Result<std::unique_ptr<Tokenizer>> tokenizer_from_hf_dir(const std::string& dir) {
  return unimplemented(dir + ": Hugging Face tokenizer directories are not supported yet");
}

}  // namespace kiln
