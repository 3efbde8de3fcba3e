// tokenizer.json -> BpeTokenizer. Supported: model BPE (byte-level or characters with byte
// fallback); normalizers Sequence, Prepend('▁'), Replace(' ' -> '▁'), NFC/NFKC (skipped with a
// warning); pre-tokenizers Sequence, Split, ByteLevel, Digits, Punctuation, Metaspace; decoders
// ByteLevel, Metaspace, Sequence/Replace/ByteFallback/Fuse/Strip; post-processor TemplateProcessing.
#include <algorithm>

#include "kiln/core/log.h"
#include "kiln/tokenizer/bpe_tokenizer.h"
#include "kiln/tokenizer/hf_tokenizer_files.h"

namespace kiln {
namespace {

using nlohmann::json;

constexpr std::string_view kMetaspace = "\xE2\x96\x81";
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Token ids index a dense table. An id may run past the number of tokens the file lists (model.vocab
// entries + added_tokens; a hole becomes an empty piece) by at most kMaxIdSlack, and stays below
// kMaxTokenId (2^24, 64 times the largest vocabularies in use): a stray 1e9 is an error naming the
// field, not gigabytes of empty strings.
constexpr int64_t kMaxTokenId = int64_t{1} << 24;
constexpr int64_t kMaxIdSlack = 65536;

// j[key], or null when j is not an object or has no such key (const operator[] would be undefined).
const json& member(const json& j, const char* key) {
  static const json kNull;
  if (!j.is_object()) return kNull;
  auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

std::string str_or(const json& j, const char* key, const std::string& fallback = "") {
  const json& v = member(j, key);
  return v.is_string() ? v.get<std::string>() : fallback;
}

// An optional boolean field; what names it in the error ("model.byte_fallback").
Result<bool> flag_or(const json& j, const char* key, bool fallback, const std::string& file, const std::string& what) {
  const json& v = member(j, key);
  if (v.is_null()) return fallback;
  if (!v.is_boolean()) return data_loss(file + ": " + what + " must be true or false, not " + v.dump());
  return v.get<bool>();
}

// A token id in [0, limit); what names the field in the error.
Result<int32_t> token_id(const json& v, int64_t limit, const std::string& file, const std::string& what) {
  const std::string range = "[0, " + std::to_string(limit) + ")";
  if (!v.is_number_integer()) return data_loss(file + ": " + what + " must be an integer id in " + range + ", not " + v.dump());
  const bool in_range = v.is_number_unsigned() ? v.get<uint64_t>() < static_cast<uint64_t>(limit)
                                               : v.get<int64_t>() >= 0 && v.get<int64_t>() < limit;
  if (!in_range) {
    return data_loss(file + ": " + what + " is " + v.dump() + ", outside " + range + " (ids run at most " +
                     std::to_string(kMaxIdSlack) + " past the number of tokens listed, and below 2^24)");
  }
  return static_cast<int32_t>(v.get<int64_t>());
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
    for (const json& item : member(n, "normalizers")) KILN_RETURN_IF_ERROR(parse_normalizer(item, o));
    return ok_status();
  }
  if (type == "Prepend" && str_or(n, "prepend") == kMetaspace) {
    o.prepend = PrependScheme::kAlways;
    return ok_status();
  }
  if (type == "Replace" && str_or(member(n, "pattern"), "String") == " " && str_or(n, "content") == kMetaspace) {
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
  const json& pattern = member(p, "pattern");
  const json& re = member(pattern, "Regex");
  const json& literal = member(pattern, "String");
  if (!re.is_string() && !literal.is_string())
    return data_loss("tokenizer.json: a Split pre-tokenizer's pattern must be {\"Regex\": string} or {\"String\": string}, not " +
                     pattern.dump());
  std::string regex = re.is_string() ? re.get<std::string>() : quote_literal(literal.get<std::string>());
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
    for (const json& item : member(p, "pretokenizers")) KILN_RETURN_IF_ERROR(parse_pre_tokenizer(item, s, o));
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
    for (const json& item : member(d, "decoders")) parse_decoder(item, o);
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
    for (const json& item : member(p, "processors")) parse_post_processor(item, v);
    return;
  }
  if (str_or(p, "type") != "TemplateProcessing") return;
  bool seen_sequence = false;
  for (const json& piece : member(p, "single")) {
    if (!member(piece, "Sequence").is_null()) {
      seen_sequence = true;
      continue;
    }
    if (member(piece, "SpecialToken").is_null()) continue;
    const int32_t id = v.find(str_or(member(piece, "SpecialToken"), "id"));
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

Result<AddedToken> added_token(const json& a, int64_t limit, const std::string& file, const std::string& what) {
  if (!a.is_object()) return data_loss(file + ": " + what + " must be an object, not " + a.dump());
  AddedToken t;
  KILN_ASSIGN_OR_RETURN(t.id, token_id(member(a, "id"), limit, file, what + ".id"));
  const json& content = member(a, "content");
  if (!content.is_string() || content.get<std::string>().empty()) {
    return data_loss(file + ": " + what + ".content must be a non-empty string");
  }
  t.content = content.get<std::string>();
  KILN_ASSIGN_OR_RETURN(t.special, flag_or(a, "special", false, file, what + ".special"));
  KILN_ASSIGN_OR_RETURN(t.lstrip, flag_or(a, "lstrip", false, file, what + ".lstrip"));
  KILN_ASSIGN_OR_RETURN(t.rstrip, flag_or(a, "rstrip", false, file, what + ".rstrip"));
  KILN_ASSIGN_OR_RETURN(t.single_word, flag_or(a, "single_word", false, file, what + ".single_word"));
  return t;
}

Result<Vocab> vocab_from_json(const json& model, const json& added_tokens, const std::string& file) {
  const json& vocab = member(model, "vocab");
  if (!vocab.is_object()) return data_loss(file + ": model.vocab must be an object of piece: id, not " + vocab.type_name());
  if (!added_tokens.is_null() && !added_tokens.is_array()) {
    return data_loss(file + ": added_tokens must be an array, not " + std::string(added_tokens.type_name()));
  }
  const int64_t listed = static_cast<int64_t>(vocab.size() + added_tokens.size());
  const int64_t limit = std::min(kMaxTokenId, listed + kMaxIdSlack);
  std::vector<std::pair<int32_t, std::string>> pieces;
  pieces.reserve(vocab.size());
  int64_t size = 0;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    KILN_ASSIGN_OR_RETURN(int32_t id, token_id(it.value(), limit, file, "model.vocab[" + json(it.key()).dump() + "]"));
    pieces.emplace_back(id, it.key());
    size = std::max<int64_t>(size, id + 1);
  }
  std::vector<AddedToken> added;
  for (size_t i = 0; i < added_tokens.size(); ++i) {
    KILN_ASSIGN_OR_RETURN(AddedToken t, added_token(added_tokens[i], limit, file, "added_tokens[" + std::to_string(i) + "]"));
    size = std::max<int64_t>(size, t.id + 1);
    added.push_back(std::move(t));
  }
  Vocab v;
  v.tokens.resize(static_cast<size_t>(size));
  v.types.assign(static_cast<size_t>(size), TokenType::kNormal);
  for (auto& [id, piece] : pieces) v.tokens[id] = std::move(piece);
  for (AddedToken& t : added) {
    v.tokens[t.id] = t.content;
    v.types[t.id] = t.special ? TokenType::kControl : TokenType::kUserDefined;
    v.added.push_back(std::move(t));
  }
  v.index();
  const std::string unk = str_or(model, "unk_token");
  if (!unk.empty()) v.unk_id = v.find(unk);
  return v;
}

Result<MergeList> merges_from_json(const json& model, const std::string& file) {
  MergeList merges;
  const json& list = member(model, "merges");
  if (list.is_null()) return merges;
  if (!list.is_array()) return data_loss(file + ": model.merges must be an array, not " + std::string(list.type_name()));
  for (size_t i = 0; i < list.size(); ++i) {
    const json& m = list[i];
    if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      continue;
    }
    if (!m.is_string()) {
      return data_loss(file + ": model.merges[" + std::to_string(i) + "] must be \"a b\" or [\"a\", \"b\"], not " + m.dump());
    }
    const std::string line = m.get<std::string>();
    const size_t space = line.find(' ', 1);
    if (space == std::string::npos) return data_loss(file + ": merge without a space: '" + line + "'");
    merges.emplace_back(line.substr(0, space), line.substr(space + 1));
  }
  return merges;
}

}  // namespace

namespace {

Result<std::unique_ptr<Tokenizer>> tokenizer_from_object(const json& j, const HfTokenizerConfig& config,
                                                         const std::string& dir, const std::string& file) {
  const json& model = member(j, "model");
  if (!model.is_object()) return data_loss(file + ": \"model\" must be an object, not " + std::string(model.type_name()));
  const std::string type = str_or(model, "type", "BPE");
  if (type != "BPE") return unimplemented(dir + ": tokenizer.json model '" + type + "' is not supported (BPE only)");
  if (!str_or(model, "continuing_subword_prefix").empty() || !str_or(model, "end_of_word_suffix").empty()) {
    return unimplemented(dir + ": BPE subword prefixes/suffixes are not supported");
  }
  KILN_ASSIGN_OR_RETURN(Vocab vocab, vocab_from_json(model, member(j, "added_tokens"), file));
  KILN_ASSIGN_OR_RETURN(MergeList merges, merges_from_json(model, file));
  BpeOptions o;
  PreTokenizerState state;
  KILN_RETURN_IF_ERROR(parse_normalizer(member(j, "normalizer"), o).with_context(dir));
  KILN_RETURN_IF_ERROR(parse_pre_tokenizer(member(j, "pre_tokenizer"), state, o).with_context(dir));
  parse_decoder(member(j, "decoder"), o);
  o.byte_level = state.byte_level || str_or(member(j, "decoder"), "type") == "ByteLevel";
  KILN_ASSIGN_OR_RETURN(o.byte_fallback, flag_or(model, "byte_fallback", false, file, "model.byte_fallback"));
  KILN_ASSIGN_OR_RETURN(o.ignore_merges, flag_or(model, "ignore_merges", false, file, "model.ignore_merges"));
  KILN_ASSIGN_OR_RETURN(o.fuse_unk, flag_or(model, "fuse_unk", false, file, "model.fuse_unk"));
  o.use_unk = vocab.unk_id >= 0;
  parse_post_processor(member(j, "post_processor"), vocab);
  apply_hf_config(config, vocab);
  KILN_ASSIGN_OR_RETURN(auto t, BpeTokenizer::create(std::move(vocab), merges, std::move(state.pre), o));
  return std::unique_ptr<Tokenizer>(std::move(t));
}

}  // namespace

Result<std::unique_ptr<Tokenizer>> tokenizer_from_json(const json& j, const HfTokenizerConfig& config,
                                                       const std::string& dir) {
  const std::string file = dir + "/tokenizer.json";
  if (!j.is_object()) {
    return data_loss(file + ": must be a JSON object with a \"model\", not " + std::string(j.type_name()));
  }
  try {
    return tokenizer_from_object(j, config, dir, file);
  } catch (const json::exception& e) {  // a field of the wrong JSON type that the checks above do not name
    return data_loss(file + ": a field has the wrong JSON type (" + e.what() + ")");
  }
}

}  // namespace kiln
