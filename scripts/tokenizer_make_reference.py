#!/usr/bin/env python3
"""Writes the reference data the C++ tokenizer tests compare against (tests/data/tokenizer/).

The references come from Hugging Face's own libraries, never from kiln:
  - random_strings.json: a seeded set of random Unicode strings (emoji, CJK, combining marks,
    control characters, long white space runs, digits, contractions, special-token text).
  - ids/<vocab>.random.txt: for each random string, one line: the ids `tokenizers` gives it, or
    (to keep the data small, for all but SmolLM2) "#<count> <fnv1a64>" of those ids;
    `--show VOCAB INDEX` prints the full reference ids of one string when a test reports it.
  - ids/<vocab>.shakespeare.u16 (uint16 little endian, the whole of tinyshakespeare.txt) or
    ids/<vocab>.shakespeare.fnv ("count fnv1a64" of the uint32 ids) where the file would be large.
  - hf_tiny_bytelevel/, hf_tiny_metaspace/, hf_tiny_metaspace_first/: small tokenizer.json files
    trained here with `tokenizers` (Llama 3 layout; Llama 2 legacy layout; Metaspace layout)
    so from_hf_dir is tested on real files; spm_tiny/tokenizer.model trained with sentencepiece.
  - chat_templates.json: cases rendered by transformers' render_jinja_template (trim_blocks,
    lstrip_blocks, its tojson and raise_exception) from templates/*.jinja; jinja_cases.json:
    small templates, one or two Jinja features each, rendered by the same environment.

Vocabularies come from the GGUF files (transformers' GGUF loader supplies vocab, merges and added
tokens); the pre-tokenizer and normalizer are then set to what each model's original
tokenizer.json has, since the GGUF conversion keeps only the vocabulary. Each reference tokenizer
is first checked against llama.cpp's test vectors (.inp/.out, made from the original tokenizers).

Usage: python3 scripts/tokenizer_make_reference.py [--out tests/data/tokenizer] [--only PART]
  PART: random | vocab | tiny | chat (default: all)
"""
import argparse
import json
import os
import random
import struct
import sys
import unicodedata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
VOCAB_DIR = os.path.join(SHARED, "testdata", "vocab")
SHAKESPEARE = os.path.join(SHARED, "testdata", "text", "tinyshakespeare.txt")
SMOLLM2 = os.path.expanduser("~/.cache/kiln/models/SmolLM2-135M-Instruct.Q4_1.gguf")

NUM_RANDOM = 2500
SEED = 20240607
# Shakespeare ids are stored in full for these (the default model and the SentencePiece path);
# the others get a count and an FNV-1a hash to keep the checked-in data small (< 3 MB in all).
FULL_SHAKESPEARE = {"smollm2", "llama-spm"}
FULL_RANDOM = {"smollm2"}

# ---------------------------------------------------------------------------------------------
# Random strings


def _ranges_char(rng, ranges):
    lo, hi = rng.choice(ranges)
    return chr(rng.randint(lo, hi))


# Code point pools. Only characters assigned long ago (Unicode <= 13) so that every regex engine
# involved (PCRE2 10.42, Oniguruma, Rust's char tables) classifies them the same way.
POOLS = {
    "latin1": [(0xC0, 0xFF)],
    "latin_ext": [(0x100, 0x17F), (0x180, 0x24F)],
    "greek_cyrillic": [(0x391, 0x3C9), (0x410, 0x44F)],
    "cjk": [(0x4E00, 0x9FA5)],
    "hangul": [(0xAC00, 0xD7A3)],
    "kana": [(0x3041, 0x3096), (0x30A1, 0x30FA)],
    "arabic_hebrew": [(0x621, 0x64A), (0x5D0, 0x5EA)],
    "indic_thai_khmer": [(0x905, 0x939), (0xE01, 0xE30), (0x1780, 0x17B3)],
    "emoji": [(0x1F300, 0x1F5FF), (0x1F600, 0x1F64F), (0x1F680, 0x1F6C5), (0x2600, 0x26FF)],
    "combining": [(0x300, 0x36F)],
    "controls": [(0x0, 0x8), (0xB, 0x1F), (0x7F, 0x9F)],
    "space_like": [(0xA0, 0xA0), (0x2000, 0x200B), (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F),
                   (0x3000, 0x3000), (0x180E, 0x180E), (0x85, 0x85), (0xFEFF, 0xFEFF), (0x1680, 0x1680)],
    "digits_other": [(0x660, 0x669), (0xFF10, 0xFF19), (0xB2, 0xB3), (0xB9, 0xB9), (0xBC, 0xBE), (0x2460, 0x2473)],
    "math_letters": [(0x1D400, 0x1D433), (0x1D7CE, 0x1D7FF)],
    "punct": [(0x2010, 0x2027), (0x3001, 0x3011), (0xFF01, 0xFF0F), (0xA1, 0xBF)],
}
ASCII_WORDS = ["the", "The", "Hello", "world", "kiln", "tokenizer", "don't", "I'm", "we'll", "they've",
               "HE'S", "it'd", "you're", "a", "of", "and", "cat", "dog", "über", "naïve", "café",
               "x", "ID", "foo_bar", "camelCase", "snake_case", "http://example.com/a?b=c", "e.g.",
               "3.14159", "1,000,000", "2024-06-07", "$100", "50%", "C++", "<b>", "#include", "a->b"]
SPECIAL_TEXT = ["<s>", "</s>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>", ">>TITLE<<",
                "<｜begin▁of▁sentence｜>", "<|end|>"]


def random_piece(rng):
    kind = rng.random()
    if kind < 0.30:
        return rng.choice(ASCII_WORDS)
    if kind < 0.40:
        return rng.choice([" ", "  ", "\t", "\n", "\n\n", "\r\n", " \n ", "   \t  "]) * rng.randint(1, 3)
    if kind < 0.44:
        return " " * rng.randint(4, 40) + rng.choice(["", "\n", "x"])
    if kind < 0.50:
        return "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 14)))
    if kind < 0.53:
        return rng.choice(["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "’s", "'"])
    if kind < 0.55:
        return rng.choice(SPECIAL_TEXT)
    if kind < 0.60:
        return "".join(chr(rng.randint(0x21, 0x7E)) for _ in range(rng.randint(1, 6)))
    pool = rng.choice(list(POOLS))
    n = rng.randint(1, 8)
    if pool == "combining":
        return "".join(rng.choice("aeiouAEIOU") + _ranges_char(rng, POOLS[pool]) for _ in range(n))
    if pool == "emoji" and rng.random() < 0.3:  # ZWJ sequences, skin tones, flags, variation selectors
        return rng.choice(["👨‍👩‍👧‍👦", "👍🏽", "🇺🇸🇯🇵", "❤️", "🏳️‍🌈", "✋🏿", "🧑‍💻"])
    return "".join(_ranges_char(rng, POOLS[pool]) for _ in range(n))


def long_piece(rng):
    """A long run, so words of hundreds of symbols take the heap path of the merge loop."""
    n = rng.randint(49, 400)
    unit = rng.choice(["a", "ab", "the", "x", "1", "!", " ", "\n", "é", "日本", "🦙", "-=", "ſ", "\t "])
    return (unit * n)[: n * len(unit)]


def random_strings():
    rng = random.Random(SEED)
    out = []
    for i in range(NUM_RANDOM):
        if i % 50 == 25:
            out.append(rng.choice(["", " ", "word "]) + long_piece(rng) + rng.choice(["", " end", "\n"]))
            continue
        parts = [random_piece(rng) for _ in range(rng.randint(0 if i % 97 == 0 else 1, 10))]
        sep = rng.choice(["", " ", " ", "\n"])
        out.append(sep.join(parts))
    return out


# ---------------------------------------------------------------------------------------------
# Reference tokenizers

# DeepSeek LLM's letter class, as code point ranges (written as text it is easy to corrupt: several
# of its Greek characters are canonically equivalent to others and get normalized away).
DEEPSEEK_LETTER_RANGES = [
    (0xB5, 0xB5), (0xC0, 0xD6), (0xD8, 0xF6), (0xF8, 0x1BA), (0x1BC, 0x1BF), (0x1C4, 0x293),
    (0x295, 0x2AF), (0x370, 0x373), (0x376, 0x376), (0x377, 0x377), (0x37B, 0x37D), (0x37F, 0x37F),
    (0x386, 0x386), (0x388, 0x38A), (0x38C, 0x38C), (0x38E, 0x3A1), (0x3A3, 0x3F5), (0x3F7, 0x481),
    (0x48A, 0x52F), (0x531, 0x556), (0x10A0, 0x10C5), (0x13A0, 0x13F5), (0x13F8, 0x13FD),
    (0x1C90, 0x1CBA), (0x1CBD, 0x1CBF), (0x1D00, 0x1D2B), (0x1D6B, 0x1D77), (0x1D79, 0x1D9A),
    (0x1E00, 0x1F15), (0x1F18, 0x1F1D), (0x1F20, 0x1F45), (0x1F48, 0x1F4D), (0x1F50, 0x1F57),
    (0x1F59, 0x1F59), (0x1F5B, 0x1F5B), (0x1F5D, 0x1F5D), (0x1F5F, 0x1F7D), (0x1F80, 0x1FB4),
    (0x1FB6, 0x1FBC), (0x1FBE, 0x1FBE), (0x1FC2, 0x1FC4), (0x1FC6, 0x1FCC), (0x1FD0, 0x1FD3),
    (0x1FD6, 0x1FDB), (0x1FE0, 0x1FEC), (0x1FF2, 0x1FF4), (0x1FF6, 0x1FFC), (0x2102, 0x2102),
    (0x2107, 0x2107), (0x210A, 0x2113), (0x2115, 0x2115), (0x2119, 0x211D), (0x2124, 0x2124),
    (0x2126, 0x2126), (0x2128, 0x2128), (0x212A, 0x212D), (0x212F, 0x2134), (0x2139, 0x2139),
    (0x213C, 0x213F), (0x2145, 0x2149), (0x214E, 0x214E), (0x2183, 0x2183), (0x2184, 0x2184),
    (0x2C00, 0x2C7B), (0x2C7E, 0x2CE4), (0x2CEB, 0x2CEE), (0x2CF2, 0x2CF2), (0x2CF3, 0x2CF3),
    (0xA640, 0xA66D), (0xA680, 0xA69B), (0xA722, 0xA76F), (0xA771, 0xA787), (0xA78B, 0xA78E),
    (0xAB70, 0xABBF), (0xFB00, 0xFB06), (0xFB13, 0xFB17), (0xFF21, 0xFF3A), (0xFF41, 0xFF5A),
    (0x10400, 0x1044F), (0x104B0, 0x104D3), (0x104D8, 0x104FB), (0x10C80, 0x10CB2),
    (0x10CC0, 0x10CF2), (0x118A0, 0x118DF), (0x1E900, 0x1E943),
]


def _gguf_backend(path):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    return tok.backend_tokenizer


def _with_gguf_added_tokens(bt, path):
    """Replaces the vocabulary and added tokens of the GGUF conversion with the file's own:
    transformers adds tokens of its own (DeepSeek gains a second <｜begin▁of▁sentence｜> past the
    vocabulary) and drops the file's control tokens. Control and unknown pieces are special, user-defined ones are not;
    Phi-3 strips the white space after its chat tokens (its tokenizer.json says rstrip)."""
    import gguf
    from tokenizers import Tokenizer
    reader = gguf.GGUFReader(path)
    tokens, types = reader.fields["tokenizer.ggml.tokens"], reader.fields["tokenizer.ggml.token_type"]
    name = reader.fields["general.name"].contents().lower() if "general.name" in reader.fields else ""
    phi3 = "phi-3" in name or "phi3" in name
    added = []
    for i in range(len(tokens.data)):
        t = types.contents(i)
        if t not in (2, 3, 4):
            continue
        content = tokens.contents(i)
        special = t != 4
        rstrip = phi3 and (special or content == "</s>") and content not in ("<unk>", "<s>", "<|endoftext|>")
        added.append({"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": rstrip,
                      "normalized": False, "special": special})
    j = json.loads(bt.to_str())
    j["added_tokens"] = added
    vocab = {}
    for i in range(len(tokens.data)):
        vocab.setdefault(tokens.contents(i), i)
    j["model"]["vocab"] = vocab
    return Tokenizer.from_str(json.dumps(j))


def reference_tokenizer(name):
    """The `tokenizers` object equivalent to the original tokenizer.json of each vocabulary."""
    from tokenizers import Regex, normalizers, pre_tokenizers
    path = SMOLLM2 if name == "smollm2" else os.path.join(VOCAB_DIR, f"ggml-vocab-{name}.gguf")
    if not os.path.exists(path):
        return None
    bt = _with_gguf_added_tokens(_gguf_backend(path), path)
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if name in ("smollm2", "starcoder"):
        bt.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif name == "gpt-2":
        bt.pre_tokenizer = byte_level
    elif name == "falcon":
        bt.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Punctuation("contiguous"), byte_level,
            pre_tokenizers.Digits(individual_digits=False),
            pre_tokenizers.Split(Regex("[0-9][0-9][0-9]"), "isolated")])
    elif name == "deepseek-llm":
        regexes = [
            "[\r\n]",
            "\\s?[A-Za-z" + "".join(f"{chr(lo)}-{chr(hi)}" if hi > lo else chr(lo)
                                      for lo, hi in DEEPSEEK_LETTER_RANGES) + "]+",
            "\\s?[!-/:-~！-／：-～‘-‟　-。]+",
            "\\s+$",
            "[一-龥ࠀ-一가-퟿]+",
            "\\p{N}+",
        ]
        bt.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r), "isolated") for r in regexes]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    elif name in ("llama-spm", "phi-3"):
        # Llama 2's legacy tokenizer.json: the prefix space is prepended to every stretch of text
        # (also after special tokens), as sentencepiece and llama.cpp do.
        bt.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        bt.pre_tokenizer = None
    return bt


def read_vectors(name):
    base = os.path.join(VOCAB_DIR, f"ggml-vocab-{name}.gguf")
    with open(base + ".inp", encoding="utf-8", newline="") as f:
        inputs = f.read().split("\n__ggml_vocab_test__\n")[:-1]
    with open(base + ".out", encoding="utf-8") as f:
        outputs = f.read().split("\n")[:-1]
    return inputs, [[int(x) for x in line.split()] for line in outputs]


def fnv1a64(ids):
    h = 0xCBF29CE484222325
    for b in struct.pack(f"<{len(ids)}I", *ids):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def write_vocab_references(out_dir, strings):
    os.makedirs(os.path.join(out_dir, "ids"), exist_ok=True)
    with open(SHAKESPEARE, encoding="utf-8") as f:
        shakespeare = f.read()
    for name in ["smollm2", "llama-spm", "phi-3", "gpt-2", "starcoder", "falcon", "deepseek-llm"]:
        bt = reference_tokenizer(name)
        if bt is None:
            print(f"{name}: vocabulary not found, skipped", file=sys.stderr)
            continue
        if name != "smollm2":  # the reference must reproduce the original tokenizer's test vectors
            inputs, expected = read_vectors(name)
            bad = [i for i, (s, e) in enumerate(zip(inputs, expected)) if bt.encode(s, add_special_tokens=False).ids != e]
            if bad:
                sys.exit(f"{name}: the reference tokenizer disagrees with the .out vectors on cases {bad}")
        write_ids([e.ids for e in bt.encode_batch(strings, add_special_tokens=False)],
                  os.path.join(out_dir, "ids", f"{name}.random.txt"), full=name in FULL_RANDOM)
        ids = bt.encode(shakespeare, add_special_tokens=False).ids
        if name in FULL_SHAKESPEARE:
            assert max(ids) < 65536
            with open(os.path.join(out_dir, "ids", f"{name}.shakespeare.u16"), "wb") as f:
                f.write(struct.pack(f"<{len(ids)}H", *ids))
        else:
            with open(os.path.join(out_dir, "ids", f"{name}.shakespeare.fnv"), "w") as f:
                f.write(f"{len(ids)} {fnv1a64(ids):016x}\n")
        print(f"{name}: {len(ids)} shakespeare tokens, {len(strings)} random strings")


# ---------------------------------------------------------------------------------------------
# Tiny Hugging Face tokenizer directories, trained here so from_hf_dir reads real files


def train_tiny(out_dir, strings):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    with open(SHAKESPEARE, encoding="utf-8") as f:
        corpus = f.read().split("\n\n")
    llama3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")

    # Byte-level BPE in the Llama 3 layout: Split + ByteLevel(use_regex=false), ignore_merges.
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(llama3), "isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1200, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|begin_of_text|>", "<|end_of_text|>"], show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    tok.add_special_tokens([AddedToken("<|eot_id|>", special=True, normalized=False),
                            AddedToken("<|lstrip|>", special=True, lstrip=True, normalized=False),
                            AddedToken("<|rstrip|>", special=True, rstrip=True, normalized=False)])
    tok.add_tokens([AddedToken("kilnword", normalized=False)])
    from tokenizers import processors
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])
    d = os.path.join(out_dir, "hf_tiny_bytelevel")
    os.makedirs(d, exist_ok=True)
    tok.save(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                   "chat_template": open(os.path.join(out_dir, "templates", "llama3.jinja")).read()}, f, indent=1)
    write_ids([e.ids for e in tok.encode_batch(strings, add_special_tokens=False)],
              os.path.join(d, "random.txt"), full=False)
    write_special_cases(lambda t, special: tok.encode(t, add_special_tokens=special).ids,
                        os.path.join(d, "special_cases.json"))

    # Llama 2 layout: characters with byte fallback, '▁' for spaces, a prefix '▁'.
    tok = Tokenizer(models.BPE(byte_fallback=True, fuse_unk=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    alphabet = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=900, special_tokens=["<unk>", "<s>", "</s>"] + alphabet,
                                  limit_alphabet=120, show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    # The trainer only takes the <0xNN> pieces as special tokens; in Llama's tokenizer.json they are
    # plain vocabulary entries (not matched in the text, not skipped when decoding).
    j = json.loads(tok.to_str())
    j["added_tokens"] = [a for a in j["added_tokens"] if not a["content"].startswith("<0x")]
    tok = Tokenizer.from_str(json.dumps(j))
    d = os.path.join(out_dir, "hf_tiny_metaspace")
    os.makedirs(d, exist_ok=True)
    tok.save(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True}, f, indent=1)
    write_ids([e.ids for e in tok.encode_batch(strings, add_special_tokens=False)],
              os.path.join(d, "random.txt"), full=False)
    write_special_cases(lambda t, special: tok.encode(t, add_special_tokens=special).ids,
                        os.path.join(d, "special_cases.json"))

    # The same model in the newer layout (Mistral v0.3, recent Llama 2 files): no normalizer, a
    # Metaspace pre-tokenizer that prefixes only the start of the input, a Metaspace decoder.
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False),
                                     decoders.ByteFallback(), decoders.Fuse()])
    d = os.path.join(out_dir, "hf_tiny_metaspace_first")
    os.makedirs(d, exist_ok=True)
    tok.save(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>"}, f, indent=1)
    write_ids([e.ids for e in tok.encode_batch(strings, add_special_tokens=False)],
              os.path.join(d, "random.txt"), full=False)
    write_special_cases(lambda t, special: tok.encode(t, add_special_tokens=special).ids,
                        os.path.join(d, "special_cases.json"))

    # sentencepiece BPE model (tokenizer.model only): the libsentencepiece path.
    import io
    import sentencepiece as spm
    d = os.path.join(out_dir, "spm_tiny")
    os.makedirs(d, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=model, vocab_size=600,
                                   model_type="bpe", byte_fallback=True, character_coverage=0.9995,
                                   split_digits=True, normalization_rule_name="identity",
                                   remove_extra_whitespaces=False, minloglevel=2)
    with open(os.path.join(d, "tokenizer.model"), "wb") as f:
        f.write(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    # What transformers' slow (legacy) Llama tokenizer does with this model: control pieces in the
    # text become their ids, sentencepiece encodes the text between them, BOS comes first.
    # (transformers 5 no longer loads a tokenizer.model-only directory, so the steps are spelled out.)
    import re
    controls = {sp.id_to_piece(i): i for i in range(sp.get_piece_size()) if sp.is_control(i)}
    pattern = re.compile("(" + "|".join(re.escape(c) for c in sorted(controls, key=len, reverse=True)) + ")")

    def sp_encode(text, special):
        ids = [sp.bos_id()] if special else []
        for part in pattern.split(text):
            ids += [controls[part]] if part in controls else (sp.encode(part) if part else [])
        return ids
    write_ids([sp_encode(s, False) for s in strings], os.path.join(d, "random.txt"), full=False)
    write_special_cases(sp_encode, os.path.join(d, "special_cases.json"))
    print("tiny tokenizers written")


# Added-token handling (lstrip, rstrip, special vs not) and BOS/EOS, checked on each tiny tokenizer.
SPECIAL_CASES = ["Hello world", " leading space", "a <|lstrip|> b", "a <|rstrip|>   b", "x kilnword y",
                 "<|eot_id|>\nnext", "<s> after bos", "one</s>two", "  <|lstrip|>", "<|rstrip|>\n\n", ""]


def write_special_cases(encode, path):
    cases = [{"text": t, "ids": encode(t, False), "ids_with_special": encode(t, True)} for t in SPECIAL_CASES]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=0)


def write_ids(id_lists, path, full):
    with open(path, "w") as f:
        for ids in id_lists:
            f.write((" ".join(map(str, ids)) if full else f"#{len(ids)} {fnv1a64(ids):016x}") + "\n")


# ---------------------------------------------------------------------------------------------
# Chat templates

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city"},
                                                    "unit": {"type": "string", "enum": ["c", "f"]}},
                   "required": ["city"]}}}]
CONVERSATIONS = {
    "user": [{"role": "user", "content": "Hello!"}],
    "system_user": [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hi there"}],
    "multi_turn": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "2+2 is 4."},
                   {"role": "user", "content": "And times 3?"}],
    "system_multi_turn": [{"role": "system", "content": "  Be brief.\n"},
                          {"role": "user", "content": " Ünïcödé 🦙 text \n"},
                          {"role": "assistant", "content": "Sure "}, {"role": "user", "content": "ok"}],
    "not_alternating": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
}
TOOL_CONVERSATION = [
    {"role": "system", "content": "Use tools when needed."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "call12345", "type": "function", "function": {
        "name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}}]},
    {"role": "tool", "tool_call_id": "call12345", "content": "{\"temp\": 21.5, \"sky\": \"clear\"}"},
    {"role": "assistant", "content": "It is 21.5 °C and clear."},
    {"role": "user", "content": "Thanks"},
]
FAMILIES = {  # template file -> (bos_token, eos_token)
    "llama2": ("<s>", "</s>"), "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama31": ("<|begin_of_text|>", "<|eot_id|>"), "mistral": ("<s>", "</s>"), "mixtral": ("<s>", "</s>"),
    "mistral_v3": ("<s>", "</s>"), "qwen2": ("", "<|im_end|>"), "qwen25": ("", "<|im_end|>"),
    "smollm2": ("<|im_start|>", "<|im_end|>"), "phi3": ("<s>", "<|endoftext|>"),
}
TOOL_FAMILIES = ["llama31", "qwen25", "mistral_v3"]


JINJA_CASES = [  # (template, variables): one Jinja feature or two per case
  ("{{ 1 + 2 * 3 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ 7 % 3 }}|{{ -7 % 3 }}|{{ 7 / 2 }}|{{ 2 ** 10 }}", {}),
  ("{{ 'a' ~ 1 ~ none ~ true }}|{{ [1, 'x', none, true, 1.5] }}|{{ {'k': 'v', 'n': 2} }}", {}),
  ("{{ 0.1 + 0.2 }}|{{ 1e20 }}|{{ 1.0 }}|{{ 3.0 * 2 }}|{{ 1/3 }}|{{ 1e-5 }}", {}),
  ("{% for x in items %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.first }}/{{ loop.last }}/{{ loop.length }} {% endfor %}", {"items": ["a", "b", "c"]}),
  ("{% for x in items if x != 'b' %}{{ loop.index }}{{ x }}{% else %}empty{% endfor %}|{% for x in [] %}x{% else %}none{% endfor %}", {"items": ["a", "b", "c"]}),
  ("{% set ns = namespace(n=0) %}{% for i in range(5) %}{% if i is odd %}{% set ns.n = ns.n + i %}{% endif %}{% endfor %}{{ ns.n }}", {}),
  ("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{{ x }}", {}),
  ("{{ '  hi  ' | trim }}|{{ 'Hello World' | lower }}|{{ 'hello world' | upper }}|{{ 'hello wORLD' | title }}|{{ 'hELLO' | capitalize }}", {}),
  ("{{ s.strip() }}|{{ s.lstrip() }}|{{ s.rstrip() }}|{{ s.startswith(' a') }}|{{ s.endswith('b ') }}|{{ s.split() }}|{{ 'a,b,,c'.split(',') }}", {"s": " a b "}),
  ("{{ s[1:] }}|{{ s[:-1] }}|{{ s[::-1] }}|{{ s[0] }}|{{ s[-1] }}|{{ l[1:3] }}|{{ l[-2:] }}|{{ l[::2] }}", {"s": "héllo", "l": [1, 2, 3, 4, 5]}),
  ("{{ 'b' in 'abc' }}|{{ 2 in [1, 2] }}|{{ 'k' in d }}|{{ 'z' not in d }}|{{ not true }}|{{ 1 < 2 and 2 > 3 or 'x' }}", {"d": {"k": 1}}),
  ("{{ x is defined }}|{{ y is defined }}|{{ y is undefined }}|{{ n is none }}|{{ x is string }}|{{ 3 is number }}|{{ d is mapping }}|{{ l is iterable }}|{{ 'a' is iterable }}|{{ 4 is divisibleby 2 }}|{{ 'a' is equalto 'a' }}", {"x": "s", "n": None, "d": {}, "l": []}),
  ("{{ l | length }}|{{ l | join(', ') }}|{{ l | first }}|{{ l | last }}|{{ l | reverse | list }}|{{ l | sort | list }}|{{ 'abc' | length }}|{{ y | default('dflt') }}|{{ '' | default('e', true) }}", {"l": [3, 1, 2]}),
  ("{{ m | selectattr('role', 'equalto', 'user') | map(attribute='content') | join('+') }}|{{ m | rejectattr('role', 'equalto', 'user') | list | length }}|{{ m | map(attribute='role') | unique | list }}", {"m": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]}),
  ("{{ d | tojson }}|{{ d | tojson(indent=2) }}|{{ 'é\"\\n' | tojson }}|{{ [1, 2.5, none, true] | tojson }}", {"d": {"b": [1, {"c": None}], "a": "x"}}),
  ("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}|{{ d.get('a') }}|{{ d.get('z', 'dz') }}|{{ d.keys() | list }}|{{ d['a'] }}|{{ d.a }}", {"d": {"a": 1, "b": 2}}),
  ("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Bob') }} {{ greet('Al', punct='?') }}", {}),
  ("a\n  {% if true %}\n  b\n  {% endif %}\nc {{- ' d ' -}} e\n{#- comment -#}\nf", {}),
  ("{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}", {}),
  ("{{ 'yes' if x else 'no' }}|{{ 'yes' if y else 'no' }}|{{ ('a' if false) ~ 'b' }}", {"x": 1, "y": 0}),
  ("{{ 'x' * 3 }}|{{ [1] + [2] }}|{{ 'a' + 'b' }}|{{ -(3) }}|{{ 10 - 2 - 3 }}|{{ 2 ** 3 ** 2 }}", {}),
  ("{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t %}block {{ a }}{% endset %}|{{ t }}|{{ t | length }}", {}),
  ("{{ 'Hello' | replace('l', 'L') }}|{{ 'a b c' | replace(' ', '') }}|{{ 'x' | indent(2, true) }}|{{ 'l1\nl2' | indent(4) }}|{{ 3.7 | int }}|{{ '42' | int + 1 }}|{{ 2 | float }}", {}),
  ("{{ messages[0]['content'] }}{{ messages[-1].role }}{{ messages | length }}", {"messages": [{"role": "user", "content": "c0"}, {"role": "assistant", "content": "c1"}]}),
  ("{{ \"double 'quoted'\" }}|{{ 'it\\'s' }}|{{ 'tab\\there' }}|{{ '\\u00e9' }}", {}),
  ("  {%- if true %}x{% endif -%}  \n  {% if true %}y{% endif %}\n{%+ if true %}z{% endif %}", {}),
]


def write_jinja_cases(out_dir):
    from transformers.utils.chat_template_utils import _compile_jinja_template
    out = []
    for template, variables in JINJA_CASES:
        out.append({"template": template, "vars": variables,
                    "expected": _compile_jinja_template(template).render(**variables)})
    with open(os.path.join(out_dir, "jinja_cases.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
    print(f"{len(out)} jinja feature cases")


def render(template, messages, add_generation_prompt, bos, eos, tools=None):
    from transformers.utils.chat_template_utils import render_jinja_template
    try:
        out, _ = render_jinja_template([messages], tools=tools, chat_template=template,
                                       add_generation_prompt=add_generation_prompt, bos_token=bos, eos_token=eos)
        return out[0], None
    except Exception as e:  # raise_exception and friends: kiln must fail too
        return None, f"{type(e).__name__}: {e}"


def write_chat_cases(out_dir):
    cases = []
    for family, (bos, eos) in FAMILIES.items():
        with open(os.path.join(out_dir, "templates", f"{family}.jinja"), encoding="utf-8") as f:
            template = f.read()
        convs = dict(CONVERSATIONS)
        for conv_name, messages in convs.items():
            for agp in (False, True):
                expected, error = render(template, messages, agp, bos, eos)
                cases.append({"template": family, "conversation": conv_name, "messages": messages,
                              "add_generation_prompt": agp, "bos_token": bos, "eos_token": eos,
                              "expected": expected, "error": error})
        if family in TOOL_FAMILIES:
            for agp in (False, True):
                expected, error = render(template, TOOL_CONVERSATION, agp, bos, eos, tools=TOOLS)
                cases.append({"template": family, "conversation": "tools", "messages": TOOL_CONVERSATION,
                              "tools": TOOLS, "add_generation_prompt": agp, "bos_token": bos, "eos_token": eos,
                              "expected": expected, "error": error})
    with open(os.path.join(out_dir, "chat_templates.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)
    print(f"{len(cases)} chat template cases, {sum(c['error'] is not None for c in cases)} of them errors")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "tokenizer"))
    parser.add_argument("--only", choices=["random", "vocab", "tiny", "chat"])
    parser.add_argument("--show", nargs=2, metavar=("VOCAB", "INDEX"),
                        help="print the reference ids of one random string and exit")
    args = parser.parse_args()
    if args.show:
        with open(os.path.join(args.out, "random_strings.json"), encoding="utf-8") as f:
            text = json.load(f)[int(args.show[1])]
        print(repr(text))
        print(" ".join(map(str, reference_tokenizer(args.show[0]).encode(text, add_special_tokens=False).ids)))
        return
    os.makedirs(args.out, exist_ok=True)
    strings_path = os.path.join(args.out, "random_strings.json")
    if args.only in (None, "random") or not os.path.exists(strings_path):
        with open(strings_path, "w", encoding="utf-8") as f:
            json.dump(random_strings(), f, ensure_ascii=False, indent=0)
    with open(strings_path, encoding="utf-8") as f:
        strings = json.load(f)
    if args.only in (None, "vocab"):
        write_vocab_references(args.out, strings)
    if args.only in (None, "tiny"):
        train_tiny(args.out, strings)
    if args.only in (None, "chat"):
        write_chat_cases(args.out)
        write_jinja_cases(args.out)


if __name__ == "__main__":
    main()
