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
    "\\s?[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}"
    "\\x{1C4}-\\x{293}\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}"
    "\\x{37F}\\x{386}\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}"
    "\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}"
    "\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}"
    "\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}"
    "\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}"
    "\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}"
    "\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}"
    "\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}"
    "\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}"
    "\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}"
    "\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}"
    "\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}"
    "\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}"
    "\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}"
    "\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}"
    "\\x{118A0}-\\x{118DF}\\x{1E900}-\\x{1E943}]+";
constexpr std::string_view kDeepseekPunct =
    "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+";
constexpr std::string_view kCjkHangul = "[\\x{4E00}-\\x{9FA5}\\x{800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+";

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
        {"[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+"},
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
