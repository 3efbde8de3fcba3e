#include "kiln/tokenizer/sentencepiece_tokenizer.h"

#ifdef KILN_WITH_SENTENCEPIECE
#include <sentencepiece_processor.h>
#endif

namespace kiln {

#ifdef KILN_WITH_SENTENCEPIECE

namespace {

constexpr std::string_view kMetaspace = "\xE2\x96\x81";

Vocab vocab_of(const sentencepiece::SentencePieceProcessor& sp) {
  Vocab v;
  const int n = sp.GetPieceSize();
  v.tokens.resize(n);
  v.types.resize(n, TokenType::kNormal);
  v.scores.resize(n);
  for (int id = 0; id < n; ++id) {
    v.tokens[id] = sp.IdToPiece(id);
    v.scores[id] = sp.GetScore(id);
    if (sp.IsControl(id)) v.types[id] = TokenType::kControl;
    else if (sp.IsUnknown(id)) v.types[id] = TokenType::kUnknown;
    else if (sp.IsByte(id)) v.types[id] = TokenType::kByte;
    else if (sp.IsUnused(id)) v.types[id] = TokenType::kUnused;
    if (v.types[id] == TokenType::kControl && !v.tokens[id].empty()) {
      v.added.push_back(AddedToken{id, v.tokens[id], /*special=*/true});
    }
  }
  v.index();
  v.bos_id = sp.bos_id();
  v.eos_id = sp.eos_id();
  v.unk_id = sp.unk_id();
  v.pad_id = sp.pad_id();
  v.add_bos = v.bos_id >= 0;  // Llama's default; tokenizer_config.json may say otherwise
  return v;
}

}  // namespace

SentencePieceTokenizer::SentencePieceTokenizer(Vocab vocab, std::unique_ptr<sentencepiece::SentencePieceProcessor> sp)
    : VocabTokenizer(std::move(vocab)), sp_(std::move(sp)) {
  token_bytes_.resize(vocab_.tokens.size());
  for (size_t id = 0; id < vocab_.tokens.size(); ++id)
    token_bytes_[id] = metaspace_piece_bytes(vocab_.tokens[id], vocab_.types[id] == TokenType::kByte);
  // The model's add_dummy_prefix is not in the public API: see whether "a" gains a '▁'.
  std::vector<std::string> pieces;
  strip_leading_space_ = sp_->Encode("a", &pieces).ok() && !pieces.empty() && pieces[0].starts_with(kMetaspace);
}

Result<std::unique_ptr<SentencePieceTokenizer>> SentencePieceTokenizer::load(const std::string& model_path,
                                                                             const HfTokenizerConfig& config) {
  auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto status = sp->Load(model_path);
  if (!status.ok()) return data_loss(model_path + ": " + status.ToString());
  Vocab vocab = vocab_of(*sp);
  apply_hf_config(config, vocab);
  return std::unique_ptr<SentencePieceTokenizer>(new SentencePieceTokenizer(std::move(vocab), std::move(sp)));
}

void SentencePieceTokenizer::encode_text(std::string_view text, TextSpan, std::vector<int32_t>& out) const {
  std::vector<int> ids;
  if (!sp_->Encode(text, &ids).ok()) return;  // only fails on an unloaded model
  out.insert(out.end(), ids.begin(), ids.end());
}

#else  // !KILN_WITH_SENTENCEPIECE

}  // namespace kiln
namespace sentencepiece {
class SentencePieceProcessor {};
}  // namespace sentencepiece
namespace kiln {

SentencePieceTokenizer::SentencePieceTokenizer(Vocab vocab, std::unique_ptr<sentencepiece::SentencePieceProcessor>)
    : VocabTokenizer(std::move(vocab)) {}

Result<std::unique_ptr<SentencePieceTokenizer>> SentencePieceTokenizer::load(const std::string& model_path,
                                                                             const HfTokenizerConfig&) {
  return unimplemented(model_path + ": kiln was built without libsentencepiece");
}

void SentencePieceTokenizer::encode_text(std::string_view, TextSpan, std::vector<int32_t>&) const {}

#endif

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

}  // namespace kiln
