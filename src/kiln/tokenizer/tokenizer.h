// Tokenizer: text <-> token ids for every vocabulary kiln runs. Implementations:
//   BpeTokenizer            byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM, StarCoder, Falcon,
//                           DeepSeek) and merge-based SentencePiece-style BPE from tokenizer.json
//   SpmTokenizer            SentencePiece BPE by piece scores (GGUF "llama" vocabularies)
//   SentencePieceTokenizer  libsentencepiece on a tokenizer.model
// load_tokenizer() picks one for a loaded model; all share the added-token split and decoding.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/core/status.h"
#include "kiln/io/gguf.h"
#include "kiln/io/model_loader.h"
#include "kiln/tokenizer/vocab.h"

namespace kiln {

class Tokenizer {
 public:
  virtual ~Tokenizer();

  // From "tokenizer.ggml.*" metadata (tokenizer.ggml.model "gpt2" or "llama").
  static Result<std::unique_ptr<Tokenizer>> from_gguf(const GgufFile& gguf);
  // From a Hugging Face model directory: tokenizer.json (+ tokenizer_config.json), or
  // tokenizer.model when there is no tokenizer.json.
  static Result<std::unique_ptr<Tokenizer>> from_hf_dir(const std::string& dir);

  // Special tokens written in the text (<|im_start|>, ...) always become their ids, as Hugging
  // Face does. add_special: also add BOS/EOS where the vocabulary asks for them. Errors: text
  // that is not valid UTF-8.
  virtual Result<std::vector<int32_t>> encode(std::string_view text, bool add_special) const = 0;
  // Invalid UTF-8 in the result (a sequence cut between tokens) becomes U+FFFD. Out-of-range
  // ids are skipped.
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const = 0;

  // The bytes one token decodes to on its own (may be part of a UTF-8 character; a special
  // token gives its text). "" for an out-of-range id.
  virtual std::string token_piece(int32_t id) const;
  // The piece as the vocabulary writes it ("Ġhello", "▁hello", "<0x0A>").
  const std::string& token_string(int32_t id) const;
  // -1 when the token is not in the vocabulary.
  int32_t token_id(std::string_view piece) const { return vocab_.find(piece); }

  int32_t bos_id() const { return vocab_.bos_id; }
  // Every id that ends a generation (eos, end-of-turn tokens), eos first.
  std::vector<int32_t> eos_ids() const { return vocab_.eog_ids; }
  int64_t vocab_size() const { return vocab_.size(); }
  bool is_special(int32_t id) const { return vocab_.is_special(id); }
  bool adds_bos() const { return vocab_.add_bos; }
  // Decoding drops one leading space of the whole text (SentencePiece's dummy prefix).
  bool strips_leading_space() const { return strip_leading_space_; }
  // The Jinja chat template ("" when the model has none).
  const std::string& chat_template() const { return vocab_.chat_template; }
  const Vocab& vocab() const { return vocab_; }

 protected:
  explicit Tokenizer(Vocab vocab) : vocab_(std::move(vocab)) {}

  Vocab vocab_;
  bool strip_leading_space_ = false;
};

// The tokenizer of a loaded model: model.gguf's metadata, or model.hf_dir's files.
Result<std::unique_ptr<Tokenizer>> load_tokenizer(const LoadedModel& model);
// From a path: a .gguf file (read for metadata only, so vocab-only files work) or an HF directory.
Result<std::unique_ptr<Tokenizer>> load_tokenizer(const std::string& path);

}  // namespace kiln
