// The presets are the pre_tokenizer sections of each family's tokenizer.json, written as splits.
#include "kiln/tokenizer/pre_tokenizer.h"

#include <algorithm>
#include <initializer_list>

namespace kiln {
namespace {

// ByteLevel(use_regex=true): GPT-2's pattern (its trailing "|\s+" is part of the Hugging Face one).
constexpr std::string_view kGpt2 =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Hugging Face Punctuation: Unicode P* plus every ASCII punctuation character.
constexpr std::string_view kPunctuation = R"([\p{P}!-/:-@\[-`{-~]+)";
// Hugging Face Digits on byte-level text: bytes whose mapped character is numeric ('0'-'9' and
// the self-mapped Latin-1 bytes for ² ³ ¹ ¼ ½ ¾).
constexpr std::string_view kByteLevelDigits = R"([0-9\xB2\xB3\xB9\xBC-\xBE]+)";
constexpr std::string_view kDeepseekLlmLetters =
    "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+";
constexpr std::string_view kDeepseekPunct = "\\s?[!-/:-~！-／：-～‘-‟　-。]+";
constexpr std::string_view kCjkHangul = "[一-龥ࠀ-一가-퟿]+";

struct Split {
  std::string_view pattern;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  Regex::Mode mode = Regex::Mode::kUtf;
};

struct Preset {
  std::initializer_list<std::string_view> names;
  std::initializer_list<Split> splits;
};

const std::initializer_list<Preset>& presets() {
  static const std::initializer_list<Preset> kPresets = {
      {{"gpt-2", "gpt2", "default", "mpt", "olmo", "jais"}, {{kGpt2}}},
      {{"llama-bpe", "llama3", "llama-v3", "dbrx", "smaug-bpe", "chatglm-bpe"}, {{kLlama3}}},
      {{"qwen2", "stablelm2", "deepseek-r1-qwen"}, {{kQwen2}}},
      // Sequence[Digits(individual_digits=true), ByteLevel(use_regex=true)]
      {{"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"},
       {{R"(\p{N})"}, {kGpt2}}},
      // Sequence[Punctuation(Contiguous), ByteLevel, Digits(Contiguous), Split([0-9]{3}, Isolated)]
      {{"falcon"},
       {{kPunctuation},
        {kGpt2},
        {kByteLevelDigits, SplitBehavior::kIsolated, Regex::Mode::kBytes},
        {"[0-9][0-9][0-9]", SplitBehavior::kIsolated, Regex::Mode::kBytes}}},
      {{"deepseek-llm"},
       {{"[\\r\\n]"}, {kDeepseekLlmLetters}, {kDeepseekPunct}, {"\\s+$"}, {kCjkHangul},
        {"\\p{N}+"}}},
      {{"deepseek-coder"},
       {{"[\\r\\n]"}, {"\\s?\\p{L}+"}, {"\\s?\\p{P}+"}, {kCjkHangul}, {"\\p{N}"}}},
      {{"deepseek-v3"},
       {{"\\p{N}{1,3}"},
        {"[一-龥぀-ゟ゠-ヿ]+"},
        {R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)"}}},
  };
  return kPresets;
}

}  // namespace

std::string PreTokenizer::supported_gguf_names() {
  std::string out;
  for (const Preset& p : presets()) {
    for (std::string_view n : p.names) out += (out.empty() ? "" : ", ") + std::string(n);
  }
  return out;
}

Result<PreTokenizer> PreTokenizer::for_gguf(std::string_view pre_name) {
  for (const Preset& p : presets()) {
    if (std::find(p.names.begin(), p.names.end(), pre_name) == p.names.end()) continue;
    PreTokenizer pre;
    for (const Split& s : p.splits) KILN_RETURN_IF_ERROR(pre.add_split(s.pattern, s.behavior, s.mode));
    return pre;
  }
  return unimplemented("tokenizer.ggml.pre '" + std::string(pre_name) +
                       "' is not supported; supported: " + supported_gguf_names());
}

Status PreTokenizer::add_split(std::string_view pattern, SplitBehavior behavior, Regex::Mode mode) {
  const std::string translated =
      mode == Regex::Mode::kUtf ? translate_oniguruma(pattern) : std::string(pattern);
  KILN_ASSIGN_OR_RETURN(Regex regex, Regex::compile(translated, mode));
  steps_.push_back(Step{std::move(regex), behavior});
  return ok_status();
}

}  // namespace kiln
