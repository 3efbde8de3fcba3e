#!/usr/bin/env python3
"""Encode throughput of Hugging Face `tokenizers`, single-threaded, on tinyshakespeare.txt: the
baseline bench/tokenizer_bench.cc (kiln) is compared against. Same vocabularies, built the same
way as the test references (scripts/tokenizer_make_reference.py), same cold/warm definitions:
cold is the first encode on a freshly built tokenizer, warm the best of --repeat later ones.

Usage: python3 scripts/tokenizer_bench.py [--repeat 5] [VOCAB ...]
  VOCAB: smollm2 llama-spm gpt-2 starcoder falcon deepseek-llm (default: all found)
"""
import argparse
import os
import sys
import time

os.environ["RAYON_NUM_THREADS"] = "1"  # before tokenizers starts its thread pool
os.environ["TOKENIZERS_PARALLELISM"] = "false"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tokenizer_make_reference as ref  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("vocabs", nargs="*", default=["smollm2", "llama-spm", "gpt-2", "starcoder", "falcon", "deepseek-llm"])
    args = parser.parse_args()
    with open(ref.SHAKESPEARE, encoding="utf-8") as f:
        text = f.read()
    mb = len(text.encode("utf-8")) / 1e6
    import tokenizers
    print(f"tokenizers {tokenizers.__version__}, 1 thread, {ref.SHAKESPEARE} ({mb:.2f} MB)")
    print(f"{'vocabulary':28s} {'tokens':>9s} {'cold MB/s':>10s} {'warm MB/s':>10s} {'decode MB/s':>12s}")
    for name in args.vocabs:
        tok = ref.reference_tokenizer(name)
        if tok is None:
            continue
        t0 = time.perf_counter()
        ids = tok.encode(text, add_special_tokens=False).ids
        cold = time.perf_counter() - t0
        best = min(_timed(lambda: tok.encode(text, add_special_tokens=False)) for _ in range(args.repeat))
        decode = _timed(lambda: tok.decode(ids, skip_special_tokens=False))
        print(f"{name:28s} {len(ids):9d} {mb / cold:10.2f} {mb / best:10.2f} {mb / decode:12.1f}")


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
