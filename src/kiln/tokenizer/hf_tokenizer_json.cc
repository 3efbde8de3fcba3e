// tokenizer.json -> BpeTokenizer. Supported: model BPE (byte-level or characters with byte
// fallback); normalizers Sequence, Prepend('▁'), Replace(' ' -> '▁'), NFC/NFKC (skipped with a
// warning); pre-tokenizers Sequence, Split, ByteLevel, Digits, Punctuation, Metaspace; decoders
// ByteLevel, Metaspace, Sequence/Replace/ByteFallback/Fuse/Strip; post-processor TemplateProcessing.
#include "kiln/core/log.h"
#include "kiln/tokenizer/bpe_tokenizer.h"
#include "kiln/tokenizer/hf_tokenizer_files.h"

namespace kiln {
namespace {

using nlohmann::json;

constexpr std::string_view kMetaspace = "\xE2\x96\x81";
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::string str_or(const json& j, const char* key, const std::string& fallback = "") {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : fallback;
}

Result<SplitBehavior> behavior_of(const std::string& name) {
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  return unimplemented("split behavior '" + name + "' is not supported");
}

// Quotes a literal for PCRE2.
std::string quote_literal(const std::string& s) {
  std::string out;
  for (const char c : s) {
    if (std::string_view("\\^$.|?*+()[]{}-").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

Status parse_normalizer(const json& n, BpeOptions& o) {
  if (n.is_null()) return ok_status();
  const std::string type = str_or(n, "type");
  if (type == "Sequence") {
    for (const json& item : n["normalizers"]) KILN_RETURN_IF_ERROR(parse_normalizer(item, o));
    return ok_status();
  }
  if (type == "Prepend" && str_or(n, "prepend") == kMetaspace) {
    o.prepend = PrependScheme::kAlways;
    return ok_status();
  }
  if (type == "Replace" && n["pattern"].value("String", "") == " " && str_or(n, "content") == kMetaspace) {
    o.replace_space = true;
    return ok_status();
  }
  if (type == "NFC" || type == "NFKC") {
    // kiln has no Unicode normalization tables; text that is already NFC (nearly all) is unaffected.
    log_warn("tokenizer.json: the ", type, " normalizer is not applied (input is taken as already normalized)");
    return ok_status();
  }
  return unimplemented("tokenizer.json normalizer '" + type + "' is not supported");
}

struct PreTokenizerState {
  PreTokenizer pre;
  bool after_byte_level = false;  // later splits see byte-level text: one character per byte
  bool byte_level = false;
};

Status parse_split(const json& p, PreTokenizerState& s) {
  if (p.value("invert", false)) return unimplemented("inverted Split pre-tokenizers are not supported");
  KILN_ASSIGN_OR_RETURN(SplitBehavior behavior, behavior_of(str_or(p, "behavior", "Isolated")));
  const json& pattern = p["pattern"];
  std::string regex = pattern.contains("Regex") ? pattern["Regex"].get<std::string>()
                                                : quote_literal(pattern.value("String", ""));
  if (!s.after_byte_level) return s.pre.add_split(regex, behavior);
  for (const char c : regex) {
    if (static_cast<unsigned char>(c) >= 0x80) {
      return unimplemented("a non-ASCII Split after ByteLevel is not supported: " + regex);
    }
  }
  return s.pre.add_split(regex, behavior, Regex::Mode::kBytes);
}

Status parse_pre_tokenizer(const json& p, PreTokenizerState& s, BpeOptions& o) {
  if (p.is_null()) return ok_status();
  const std::string type = str_or(p, "type");
  if (type == "Sequence") {
    for (const json& item : p["pretokenizers"]) KILN_RETURN_IF_ERROR(parse_pre_tokenizer(item, s, o));
    return ok_status();
  }
  if (type == "Split") return parse_split(p, s);
  if (type == "ByteLevel") {
    if (p.value("add_prefix_space", false)) o.add_prefix_space = true;
    if (p.value("use_regex", true)) KILN_RETURN_IF_ERROR(s.pre.add_split(kGpt2Pattern, SplitBehavior::kIsolated));
    s.after_byte_level = s.byte_level = true;
    return ok_status();
  }
  if (type == "Digits") {
    const bool individual = p.value("individual_digits", false);
    if (s.after_byte_level) {
      return s.pre.add_split(individual ? "[0-9\\xB2\\xB3\\xB9\\xBC-\\xBE]" : "[0-9\\xB2\\xB3\\xB9\\xBC-\\xBE]+",
                             SplitBehavior::kIsolated, Regex::Mode::kBytes);
    }
    return s.pre.add_split(individual ? "\\p{N}" : "\\p{N}+", SplitBehavior::kIsolated);
  }
  if (type == "Punctuation") {
    if (s.after_byte_level) return unimplemented("Punctuation after ByteLevel is not supported");
    KILN_ASSIGN_OR_RETURN(SplitBehavior behavior, behavior_of(str_or(p, "behavior", "Isolated")));
    const std::string cls = R"([\p{P}!-/:-@\[-`{-~])";
    if (behavior == SplitBehavior::kContiguous) return s.pre.add_split(cls + "+", SplitBehavior::kIsolated);
    return s.pre.add_split(cls, behavior);
  }
  if (type == "Metaspace") {
    if (str_or(p, "replacement", std::string(kMetaspace)) != kMetaspace) {
      return unimplemented("Metaspace with a replacement other than U+2581");
    }
    o.replace_space = true;
    o.prepend_if_missing_only = true;
    const std::string scheme = str_or(p, "prepend_scheme", p.value("add_prefix_space", true) ? "always" : "never");
    o.prepend = scheme == "always" ? PrependScheme::kAlways
                                   : (scheme == "first" ? PrependScheme::kFirst : PrependScheme::kNever);
    if (p.value("split", true)) return s.pre.add_split(kMetaspace, SplitBehavior::kMergedWithNext);
    return ok_status();
  }
  return unimplemented("tokenizer.json pre-tokenizer '" + type + "' is not supported");
}

void parse_decoder(const json& d, BpeOptions& o) {
  if (d.is_null()) return;
  const std::string type = str_or(d, "type");
  if (type == "Sequence") {
    for (const json& item : d["decoders"]) parse_decoder(item, o);
  } else if (type == "Strip") {
    if (str_or(d, "content") == " " && d.value("start", 0) > 0) o.strip_leading_space = true;
  } else if (type == "Metaspace") {
    o.strip_leading_space = str_or(d, "prepend_scheme", d.value("add_prefix_space", true) ? "always" : "never") != "never";
  }
}

// TemplateProcessing "single": [SpecialToken bos?] Sequence A [SpecialToken eos?].
void parse_post_processor(const json& p, Vocab& v) {
  if (p.is_null()) return;
  if (str_or(p, "type") == "Sequence") {
    for (const json& item : p["processors"]) parse_post_processor(item, v);
    return;
  }
  if (str_or(p, "type") != "TemplateProcessing" || !p.contains("single")) return;
  bool seen_sequence = false;
  for (const json& piece : p["single"]) {
    if (piece.contains("Sequence")) {
      seen_sequence = true;
      continue;
    }
    if (!piece.contains("SpecialToken")) continue;
    const int32_t id = v.find(piece["SpecialToken"].value("id", ""));
    if (id < 0) continue;
    if (seen_sequence) {
      v.eos_id = id;
      v.add_eos = true;
    } else {
      v.bos_id = id;
      v.add_bos = true;
    }
  }
}

Result<Vocab> vocab_from_json(const json& model, const json& added_tokens) {
  Vocab v;
  int64_t size = 0;
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) size = std::max(size, it.value().get<int64_t>() + 1);
  for (const json& a : added_tokens) size = std::max(size, a.value("id", int64_t{-1}) + 1);
  v.tokens.resize(static_cast<size_t>(size));
  v.types.assign(static_cast<size_t>(size), TokenType::kNormal);
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) v.tokens[it.value().get<int64_t>()] = it.key();
  for (const json& a : added_tokens) {
    AddedToken t;
    t.id = a.value("id", -1);
    t.content = a.value("content", "");
    t.special = a.value("special", false);
    t.lstrip = a.value("lstrip", false);
    t.rstrip = a.value("rstrip", false);
    t.single_word = a.value("single_word", false);
    if (t.id < 0 || t.content.empty()) continue;
    v.tokens[t.id] = t.content;
    v.types[t.id] = t.special ? TokenType::kControl : TokenType::kUserDefined;
    v.added.push_back(std::move(t));
  }
  v.index();
  const std::string unk = str_or(model, "unk_token");
  if (!unk.empty()) v.unk_id = v.find(unk);
  return v;
}

Result<MergeList> merges_from_json(const json& model) {
  MergeList merges;
  if (!model.contains("merges")) return merges;
  for (const json& m : model["merges"]) {
    if (m.is_array() && m.size() == 2) {
      merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      continue;
    }
    const std::string line = m.get<std::string>();
    const size_t space = line.find(' ', 1);
    if (space == std::string::npos) return data_loss("tokenizer.json: merge without a space: '" + line + "'");
    merges.emplace_back(line.substr(0, space), line.substr(space + 1));
  }
  return merges;
}

}  // namespace

Result<std::unique_ptr<Tokenizer>> tokenizer_from_json(const json& j, const HfTokenizerConfig& config,
                                                       const std::string& dir) {
  const json& model = j["model"];
  const std::string type = str_or(model, "type", "BPE");
  if (type != "BPE") return unimplemented(dir + ": tokenizer.json model '" + type + "' is not supported (BPE only)");
  if (!str_or(model, "continuing_subword_prefix").empty() || !str_or(model, "end_of_word_suffix").empty()) {
    return unimplemented(dir + ": BPE subword prefixes/suffixes are not supported");
  }
  KILN_ASSIGN_OR_RETURN(Vocab vocab, vocab_from_json(model, j.value("added_tokens", json::array())));
  KILN_ASSIGN_OR_RETURN(MergeList merges, merges_from_json(model));
  BpeOptions o;
  PreTokenizerState state;
  KILN_RETURN_IF_ERROR(parse_normalizer(j.value("normalizer", json()), o).with_context(dir));
  KILN_RETURN_IF_ERROR(parse_pre_tokenizer(j.value("pre_tokenizer", json()), state, o).with_context(dir));
  parse_decoder(j.value("decoder", json()), o);
  o.byte_level = state.byte_level || str_or(j.value("decoder", json::object()), "type") == "ByteLevel";
  o.byte_fallback = model.value("byte_fallback", false);
  o.ignore_merges = model.value("ignore_merges", false);
  o.fuse_unk = model.value("fuse_unk", false);
  o.use_unk = vocab.unk_id >= 0;
  parse_post_processor(j.value("post_processor", json()), vocab);
  apply_hf_config(config, vocab);
  KILN_ASSIGN_OR_RETURN(auto t, BpeTokenizer::create(std::move(vocab), merges, std::move(state.pre), o));
  return std::unique_ptr<Tokenizer>(std::move(t));
}

}  // namespace kiln
