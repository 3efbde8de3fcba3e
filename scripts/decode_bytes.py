#!/usr/bin/env python3
"""Bytes a batch-1 decode step must read, from a config.json: linear weights (bf16 = 2 B, fp8 = 1 B;
MoE: the top-k experts' only), the LM head (always bf16), and the KV cache at the given context
(bf16 or fp8). Usage: decode_bytes.py CONFIG WEIGHTS(bf16|fp8) KV(bf16|fp8) CONTEXT [TOP_K]"""
import json
import sys

cfg = json.load(open(sys.argv[1]))
wbytes = 1 if sys.argv[2] == "fp8" else 2
kvbytes = 1 if sys.argv[3] == "fp8" else 2
ctx = int(sys.argv[4])
h, layers = cfg["hidden_size"], cfg["num_hidden_layers"]
hq = cfg["num_attention_heads"]
hkv = cfg.get("num_key_value_heads", hq)
d = cfg.get("head_dim") or h // hq
inter = cfg["intermediate_size"]
experts = cfg.get("num_local_experts", 0)
top_k = int(sys.argv[5]) if len(sys.argv) > 5 and int(sys.argv[5]) > 0 else cfg.get("num_experts_per_tok", 0)
attn = h * (hq + 2 * hkv) * d + hq * d * h
mlp = 3 * h * inter * (top_k if experts else 1)
linear = layers * (attn + mlp) * wbytes
router = layers * h * experts * 2
lm_head = cfg["vocab_size"] * h * 2
kv = 2 * layers * hkv * d * ctx * kvbytes
print(linear + router + lm_head + kv)
