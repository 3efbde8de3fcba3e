#!/usr/bin/env python3
"""Generate kiln's golden reference data with Hugging Face transformers (CPU, float32).

Part A: tiny random-weight checkpoints (llama3, llama_tied_sharded, qwen2, mixtral, mistral),
        each a real HF model directory with bf16 safetensors weights, plus golden.safetensors
        holding input_ids / logits / greedy computed in float32 from the bf16-rounded weights.
Part B: SmolLM2-135M-Instruct from the local Q4_1 GGUF (dequantized by transformers), logits at
        a few positions, per-position argmax and greedy continuations for two prompts.

Usage:  python3 scripts/make_golden.py [--out tests/golden] [--gguf PATH] [--skip-smollm2]
                                      [--only llama3 qwen2 ... smollm2]
Needs: torch, transformers (5.x), safetensors, numpy; part B also gguf and accelerate
(transformers refuses to load a GGUF without accelerate). No network: HF_HUB_OFFLINE=1.

Everything is seeded and deterministic; rerunning rewrites the same files (up to float32
reduction-order noise of the local torch build in the reference logits).
"""
import argparse
import json
import os
import shutil
import sys
import time
import zlib

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import safetensors  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

transformers.logging.set_verbosity_error()
try:  # quiet the "Writing model shards" / "Loading weights" progress bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
except Exception:  # pragma: no cover
    pass

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_GGUF = "/root/.cache/kiln/models/SmolLM2-135M-Instruct.Q4_1.gguf"

SEQ_LEN = 24
GREEDY_PROMPT = 8
GREEDY_NEW = 16
WEIGHT_STD = 0.12
TIE_TOL = 1e-3


def log(msg):
    print(msg, flush=True)


def seed_for(name):
    return 1234 + zlib.crc32(name.encode()) % 100000


# ----------------------------------------------------------------------------------------------
# Part A: tiny random checkpoints
# ----------------------------------------------------------------------------------------------

COMMON = dict(
    vocab_size=320,
    hidden_size=64,
    intermediate_size=160,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    initializer_range=WEIGHT_STD,
    hidden_act="silu",
    bos_token_id=1,
    eos_token_id=2,
)

# original_max_position_embeddings=64 (not 32): with head_dim 16 and theta 5e5 the RoPE wavelengths
# are 6.3, 32.3, 167, 866, ... so low_wavelen=64/1 and high_wavelen=64/4=16 put one frequency in
# each llama3 regime (kept / smoothly interpolated / divided by factor). With 32 the smooth band
# (8..32) would be empty and that code path untested.
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}

MODELS = [
    dict(
        name="llama3",
        cls=LlamaForCausalLM,
        config=lambda: LlamaConfig(
            **COMMON,
            tie_word_embeddings=False,
            rope_parameters=dict(rope_theta=500000.0, **LLAMA3_ROPE),
        ),
        rope_theta=500000.0,
        rope_scaling=LLAMA3_ROPE,
        shard=None,
    ),
    dict(
        name="llama_tied_sharded",
        cls=LlamaForCausalLM,
        config=lambda: LlamaConfig(
            **{**COMMON, "num_hidden_layers": 3},
            tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        ),
        rope_theta=10000.0,
        rope_scaling=None,
        shard="100KB",
    ),
    dict(
        name="qwen2",
        cls=Qwen2ForCausalLM,
        config=lambda: Qwen2Config(
            **{**COMMON, "rms_norm_eps": 1e-6},
            tie_word_embeddings=True,
            use_sliding_window=False,
            sliding_window=None,
            max_window_layers=2,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
        rope_theta=1000000.0,
        rope_scaling=None,
        shard=None,
    ),
    dict(
        name="mixtral",
        cls=MixtralForCausalLM,
        config=lambda: MixtralConfig(
            **{**COMMON, "intermediate_size": 96},
            tie_word_embeddings=False,
            num_local_experts=4,
            num_experts_per_tok=2,
            sliding_window=None,
            router_jitter_noise=0.0,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
        rope_theta=1000000.0,
        rope_scaling=None,
        shard=None,
    ),
    dict(
        name="mistral",
        cls=MistralForCausalLM,
        config=lambda: MistralConfig(
            **COMMON,
            tie_word_embeddings=False,
            sliding_window=None,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        ),
        rope_theta=10000.0,
        rope_scaling=None,
        shard=None,
    ),
]

ROUTER_STD = 0.6  # Mixtral router weights: router logits std ~ 4.8, so top-2 picks are clear


def reinit_(model, gen):
    """Re-initialize every parameter: matrices N(0, WEIGHT_STD), norm weights 1 + 0.1 N(0,1),
    biases 0.1 N(0,1), Mixtral routers N(0, ROUTER_STD). Params are visited in sorted-name order
    with one generator, so the result depends only on the seed."""
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            shape = tuple(p.shape)
            if "norm" in name:
                v = 1.0 + 0.1 * torch.randn(shape, generator=gen)
            elif name.endswith(".bias"):
                v = 0.1 * torch.randn(shape, generator=gen)
            elif ".mlp.gate.weight" in name or "block_sparse_moe.gate" in name:
                v = ROUTER_STD * torch.randn(shape, generator=gen)
            else:
                v = WEIGHT_STD * torch.randn(shape, generator=gen)
            p.copy_(v)


def classic_config_fixups(path, spec, cfg):
    """Add the classic (transformers 4.x) config fields next to transformers 5's rope_parameters,
    so parsers that know only rope_theta / rope_scaling read the same thing; replace a null
    head_dim with the number; record bf16 as the checkpoint dtype."""
    p = os.path.join(path, "config.json")
    with open(p) as f:
        c = json.load(f)
    c["rope_theta"] = spec["rope_theta"]
    c["rope_scaling"] = dict(spec["rope_scaling"]) if spec["rope_scaling"] else None
    c["head_dim"] = cfg.hidden_size // cfg.num_attention_heads
    c["torch_dtype"] = "bfloat16"
    c["dtype"] = "bfloat16"
    with open(p, "w") as f:
        json.dump(c, f, indent=2, sort_keys=True)
        f.write("\n")
    return c


def list_saved_tensors(path):
    out = {}
    for fn in sorted(os.listdir(path)):
        if fn.endswith(".safetensors") and fn != "golden.safetensors":
            with safe_open(os.path.join(path, fn), "pt") as f:
                out[fn] = {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}
    return out


def expected_names(cfg, arch):
    names = {"model.embed_tokens.weight", "model.norm.weight"}
    if not cfg.tie_word_embeddings:
        names.add("lm_head.weight")
    for i in range(cfg.num_hidden_layers):
        pre = f"model.layers.{i}."
        names |= {pre + "input_layernorm.weight", pre + "post_attention_layernorm.weight"}
        for proj in "qkvo":
            names.add(pre + f"self_attn.{proj}_proj.weight")
        if arch == "qwen2":
            for proj in "qkv":
                names.add(pre + f"self_attn.{proj}_proj.bias")
        if arch == "mixtral":
            names.add(pre + "block_sparse_moe.gate.weight")
            for e in range(cfg.num_local_experts):
                for w in ("w1", "w2", "w3"):
                    names.add(pre + f"block_sparse_moe.experts.{e}.{w}.weight")
        else:
            for proj in ("gate", "up", "down"):
                names.add(pre + f"mlp.{proj}_proj.weight")
    return names


@torch.no_grad()
def greedy_no_cache(model, prompt_ids, n_new):
    """Greedy decode by re-running the whole sequence each step (no KV cache). Returns the new
    ids and the top1-top2 logit gap at each step."""
    ids = prompt_ids.clone()
    out, gaps = [], []
    for _ in range(n_new):
        logits = model(input_ids=ids[None], use_cache=False).logits[0, -1].float()
        top = torch.topk(logits, 2)
        nxt = int(top.indices[0])
        gaps.append(float(top.values[0] - top.values[1]))
        out.append(nxt)
        ids = torch.cat([ids, torch.tensor([nxt], dtype=ids.dtype)])
    return out, gaps


def load_classic_checkpoint(path):
    """All weight tensors of an HF directory (single file or shards) as float64 numpy arrays,
    read with safetensors alone (no transformers), plus config.json."""
    with open(os.path.join(path, "config.json")) as f:
        c = json.load(f)
    w = {}
    for fn in sorted(os.listdir(path)):
        if fn.endswith(".safetensors") and fn != "golden.safetensors":
            with safe_open(os.path.join(path, fn), "pt") as f:
                for k in f.keys():
                    w[k] = f.get_tensor(k).double().numpy()
    return c, w


def numpy_reference(path, ids):
    """An independent float64 forward pass that reads only the classic config.json fields
    (rope_theta, rope_scaling, ...) and the classic tensor names, the way kiln does. Used to check
    that the files mean what transformers computed: Llama/Mistral/Qwen2/Mixtral, rotate-half RoPE
    with llama3 scaling, GQA, q/k/v biases, softmax -> top-k -> renormalized MoE routing."""
    c, w = load_classic_checkpoint(path)
    H, nq, nkv = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]
    hd = c.get("head_dim") or H // nq
    eps = c["rms_norm_eps"]
    T = len(ids)

    inv = 1.0 / (c["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    rs = c.get("rope_scaling")
    if rs and rs.get("rope_type", rs.get("type")) == "llama3":
        lo_wl = rs["original_max_position_embeddings"] / rs["low_freq_factor"]
        hi_wl = rs["original_max_position_embeddings"] / rs["high_freq_factor"]
        wl = 2 * np.pi / inv
        smooth = (rs["original_max_position_embeddings"] / wl - rs["low_freq_factor"]) / (
            rs["high_freq_factor"] - rs["low_freq_factor"])
        inv = np.where(wl > lo_wl, inv / rs["factor"],
                       np.where(wl < hi_wl, inv, (1 - smooth) * inv / rs["factor"] + smooth * inv))
    ang = np.arange(T)[:, None] * inv[None, :]
    cos = np.concatenate([np.cos(ang)] * 2, -1)[:, None, :]
    sin = np.concatenate([np.sin(ang)] * 2, -1)[:, None, :]

    def rope(x):  # [T, heads, hd], rotate-half
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return x * cos + np.concatenate([-x2, x1], -1) * sin

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    def silu(x):
        return x / (1 + np.exp(-x))

    def lin(x, name):
        y = x @ w[name + ".weight"].T
        return y + w[name + ".bias"] if name + ".bias" in w else y

    x = w["model.embed_tokens.weight"][np.asarray(ids)]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = rope(lin(h, p + "self_attn.q_proj").reshape(T, nq, hd))
        k = rope(lin(h, p + "self_attn.k_proj").reshape(T, nkv, hd))
        v = lin(h, p + "self_attn.v_proj").reshape(T, nkv, hd)
        rep = nq // nkv
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        sc = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd) + mask
        sc = np.exp(sc - sc.max(-1, keepdims=True))
        sc /= sc.sum(-1, keepdims=True)
        att = np.einsum("hqk,khd->qhd", sc, v).reshape(T, nq * hd)
        x = x + lin(att, p + "self_attn.o_proj")
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        if c.get("num_local_experts"):
            m = p + "block_sparse_moe."
            r = h @ w[m + "gate.weight"].T
            r = np.exp(r - r.max(-1, keepdims=True))
            r /= r.sum(-1, keepdims=True)
            k_top = c["num_experts_per_tok"]
            out = np.zeros_like(h)
            for t in range(T):
                top = np.argsort(-r[t])[:k_top]
                wts = r[t, top] / r[t, top].sum()
                for e, a in zip(top, wts):
                    ex = f"{m}experts.{e}."
                    g = silu(h[t] @ w[ex + "w1.weight"].T) * (h[t] @ w[ex + "w3.weight"].T)
                    out[t] += a * (g @ w[ex + "w2.weight"].T)
            x = x + out
        else:
            g = silu(lin(h, p + "mlp.gate_proj")) * lin(h, p + "mlp.up_proj")
            x = x + lin(g, p + "mlp.down_proj")
    x = rms(x, w["model.norm.weight"])
    head = w["lm_head.weight"] if "lm_head.weight" in w else w["model.embed_tokens.weight"]
    assert ("lm_head.weight" not in w) == bool(c.get("tie_word_embeddings")), "tie flag vs lm_head presence"
    return x @ head.T


def save_golden(tensors, path, metadata):
    """safetensors writer with a byte-stable header (safetensors.torch.save_file orders the
    metadata from a hash map, so reruns would differ byte-wise). Tensors sorted by name,
    header padded with spaces to 8 bytes, as the format allows. Checked by reading back."""
    dt = {torch.float32: "F32", torch.int32: "I32"}
    header = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, off = [], 0
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        b = t.numpy().tobytes()
        header[k] = {"dtype": dt[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)
    back = load_file(path)
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], tensors[k]) for k in tensors)


def top_gaps(logits):
    top = torch.topk(logits.float(), 2, dim=-1).values
    return (top[..., 0] - top[..., 1])


# Margins a golden set must have so that an f32 engine (errors ~1e-5) cannot flip a decision;
# seeds are tried in a fixed order until one passes, so the output stays deterministic.
MIN_LOGIT_GAP = 1e-3     # top1 - top2 at every position of the 24-token forward
MIN_GREEDY_GAP = 1e-2    # top1 - top2 at every greedy step
MIN_ROUTER_GAP = 5e-2    # Mixtral: 2nd - 3rd router logit, every token and layer


def make_tiny(spec, out_dir, max_attempts=20):
    for attempt in range(max_attempts):
        r = make_tiny_attempt(spec, out_dir, seed_for(spec["name"]) + 1000 * attempt)
        if r["ok"]:
            return r
        log(f"[{spec['name']}]   margins too small, trying the next seed")
    raise SystemExit(f"[{spec['name']}] no seed with clear margins in {max_attempts} attempts")


def make_tiny_attempt(spec, out_dir, seed):
    name = spec["name"]
    t0 = time.time()
    log(f"[{name}] seed {seed}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg = spec["config"]()
    arch = cfg.model_type
    model = spec["cls"](cfg).eval()
    reinit_(model, gen)
    if cfg.tie_word_embeddings:
        model.tie_weights()
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    inv_freq0 = model.model.rotary_emb.inv_freq.detach().float().clone()
    # bf16 rounding: this is the checkpoint kiln reads.
    model = model.to(torch.bfloat16)
    bf16_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    path = os.path.join(out_dir, name)
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path)
    save_kwargs = {"safe_serialization": True}
    if spec["shard"]:
        save_kwargs["max_shard_size"] = spec["shard"]
    model.save_pretrained(path, **save_kwargs)
    classic_config_fixups(path, spec, cfg)

    # --- check the files: names, dtype, shards ---
    saved = list_saved_tensors(path)
    all_names = {}
    for fn, tensors in saved.items():
        log(f"[{name}]   {fn}: {len(tensors)} tensors")
        for k, (dt, shape) in sorted(tensors.items()):
            log(f"[{name}]     {k:60s} {dt:5s} {list(shape)}")
            assert dt == "BF16", f"{k} saved as {dt}"
            all_names[k] = shape
    exp = expected_names(cfg, arch)
    if set(all_names) != exp:
        raise SystemExit(f"[{name}] saved tensor names differ from the classic HF layout:\n"
                         f"  missing {sorted(exp - set(all_names))}\n  extra {sorted(set(all_names) - exp)}")
    if spec["shard"]:
        shards = [fn for fn in saved if fn.startswith("model-")]
        assert len(shards) >= 2 and os.path.exists(os.path.join(path, "model.safetensors.index.json")), shards
        log(f"[{name}]   sharded into {len(shards)} files + model.safetensors.index.json")

    # --- reload in float32 from the bf16 files: the reference model ---
    ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    assert type(ref) is spec["cls"], type(ref)
    ref_state = ref.state_dict()
    for k, v in bf16_state.items():
        r = ref_state[k]
        assert r.dtype == torch.float32, (k, r.dtype)
        assert torch.equal(r, v.float()), f"{k}: reloaded weights != bf16-rounded weights"
        # the bf16 roundtrip is a no-op on the reference weights
        assert torch.equal(r.to(torch.bfloat16).float(), r), k
    # rope: the reloaded config must give the same frequencies as the one we built
    rot1 = ref.model.rotary_emb
    assert torch.allclose(inv_freq0, rot1.inv_freq.float(), rtol=1e-6, atol=0), "rope inv_freq changed on reload"
    assert ref.config.rope_parameters == cfg.rope_parameters, (ref.config.rope_parameters, cfg.rope_parameters)
    log(f"[{name}]   reloaded f32 == bf16 weights; rope inv_freq {[f'{x:.4g}' for x in rot1.inv_freq.tolist()]}")

    # --- reference forward ---
    g = torch.Generator().manual_seed(seed + 1)
    input_ids = torch.randint(0, cfg.vocab_size, (SEQ_LEN,), generator=g, dtype=torch.int64)
    router_info = ""
    router_gap = float("inf")
    router_logits = []
    hooks = []
    if arch == "mixtral":
        for layer in ref.model.layers:
            hooks.append(layer.mlp.gate.register_forward_hook(
                lambda m, i, o: router_logits.append((i[0].reshape(-1, i[0].shape[-1]).float() @ m.weight.float().T))))
    with torch.no_grad():
        logits = ref(input_ids=input_ids[None], use_cache=False).logits[0].float().contiguous()
    for h in hooks:
        h.remove()
    if router_logits:
        gaps = []
        for rl in router_logits:
            s = torch.sort(rl, dim=-1, descending=True).values
            gaps.append(s[:, 1] - s[:, 2])  # 2nd vs 3rd expert: the top-2 cut
        gaps = torch.cat(gaps)
        router_gap = float(gaps.min())
        router_info = f"; router top2/3 gap min {router_gap:.3f} median {gaps.median():.3f}"
    assert logits.shape == (SEQ_LEN, cfg.vocab_size)

    gaps = top_gaps(logits)
    n_close = int((gaps < TIE_TOL).sum())
    greedy, ggaps = greedy_no_cache(ref, input_ids[:GREEDY_PROMPT], GREEDY_NEW)
    # cross-check with generate() (KV cache path)
    with torch.no_grad():
        gen_out = ref.generate(input_ids[None, :GREEDY_PROMPT], do_sample=False, max_new_tokens=GREEDY_NEW,
                               min_new_tokens=GREEDY_NEW, repetition_penalty=1.0, pad_token_id=0,
                               eos_token_id=None)
    gen_new = gen_out[0, GREEDY_PROMPT:].tolist()
    assert gen_new == greedy, f"generate() {gen_new} != no-cache loop {greedy}"

    # independent check of the files' meaning (classic names + classic config fields)
    np_logits = numpy_reference(path, input_ids.tolist())
    np_err = float(np.abs(np_logits - logits.double().numpy()).max())
    assert np_err < 1e-3, f"numpy reference differs from transformers by {np_err}"
    log(f"[{name}]   numpy float64 reference from the saved files: max |diff| {np_err:.2e}")

    ok = float(gaps.min()) >= MIN_LOGIT_GAP and min(ggaps) >= MIN_GREEDY_GAP and router_gap >= MIN_ROUTER_GAP
    log(f"[{name}]   margins: logits {gaps.min():.4f}, greedy {min(ggaps):.4f}, router {router_gap:.4f}")
    if not ok:
        return dict(ok=False)

    save_golden(
        {
            "input_ids": input_ids.to(torch.int32).contiguous(),
            "logits": logits,
            "greedy": torch.tensor(greedy, dtype=torch.int32),
            "greedy_gap": torch.tensor(ggaps, dtype=torch.float32),
        },
        os.path.join(path, "golden.safetensors"),
        metadata={"seq_len": str(SEQ_LEN), "greedy_prompt_len": str(GREEDY_PROMPT),
                  "greedy_new": str(GREEDY_NEW), "seed": str(seed),
                  "transformers": transformers.__version__, "torch": torch.__version__},
    )
    log(f"[{name}]   logits std {logits.std():.3f}; top1-top2 gap min {gaps.min():.4f} "
        f"(positions < {TIE_TOL}: {n_close}/{SEQ_LEN}); greedy step gap min {min(ggaps):.4f}{router_info}")
    log(f"[{name}]   input_ids {input_ids.tolist()}")
    log(f"[{name}]   greedy    {greedy}")
    log(f"[{name}]   done in {time.time() - t0:.1f}s")
    return dict(ok=True, name=name, seed=seed, min_gap=float(gaps.min()), n_close=n_close,
                greedy_min_gap=min(ggaps), router_gap=router_gap, np_err=np_err)


# ----------------------------------------------------------------------------------------------
# Part B: SmolLM2-135M-Instruct (GGUF Q4_1)
# ----------------------------------------------------------------------------------------------

SMOL_PROMPTS = [
    "The capital of France is Paris. The capital of Germany is",
    "Once upon a time, there was a little",
]
SMOL_GREEDY_NEW = 32


def make_smollm2(gguf_path, out_dir):
    if not os.path.isfile(gguf_path):
        log(f"[smollm2] {gguf_path} not found: skipping part B")
        return None
    t0 = time.time()
    d, fn = os.path.split(gguf_path)
    log(f"[smollm2] loading {gguf_path} (dequantizing to float32)")
    tok = AutoTokenizer.from_pretrained(d, gguf_file=fn)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=fn, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    cfg = model.config
    log(f"[smollm2]   {type(model).__name__} vocab {cfg.vocab_size} hidden {cfg.hidden_size} layers "
        f"{cfg.num_hidden_layers} heads {cfg.num_attention_heads}/{cfg.num_key_value_heads} "
        f"tie {cfg.tie_word_embeddings} rope {getattr(cfg, 'rope_parameters', None)} "
        f"bos {tok.bos_token!r}={tok.bos_token_id} eos {tok.eos_token!r}={tok.eos_token_id}")
    if cfg.tie_word_embeddings:
        assert torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)

    path = os.path.join(out_dir, "smollm2")
    os.makedirs(path, exist_ok=True)
    tensors = {}
    texts = []
    info = []
    for p, prompt in enumerate(SMOL_PROMPTS):
        ids_default = tok(prompt)["input_ids"]
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        if ids_default != ids:
            log(f"[smollm2]   NOTE: tokenizer default adds special tokens: {ids_default}; using no-BOS {ids}")
        assert tok.bos_token_id is None or ids[0] != tok.bos_token_id
        T = len(ids)
        x = torch.tensor(ids, dtype=torch.int64)
        with torch.no_grad():
            logits = model(input_ids=x[None], use_cache=False).logits[0].float()
        argmax = logits.argmax(-1)
        gaps = top_gaps(logits)
        positions = [0, T // 2, T - 1]
        greedy, ggaps = greedy_no_cache(model, x, SMOL_GREEDY_NEW)
        with torch.no_grad():
            gen_out = model.generate(x[None], do_sample=False, max_new_tokens=SMOL_GREEDY_NEW,
                                     min_new_tokens=SMOL_GREEDY_NEW, repetition_penalty=1.0,
                                     pad_token_id=tok.eos_token_id if tok.pad_token_id is None else tok.pad_token_id)
        gen_new = gen_out[0, T:].tolist()
        if gen_new != greedy:
            log(f"[smollm2]   WARNING: generate() {gen_new} != no-cache loop {greedy} (keeping the loop)")
        tensors[f"input_ids_{p}"] = x.to(torch.int32)
        tensors[f"argmax_{p}"] = argmax.to(torch.int32).contiguous()
        tensors[f"positions_{p}"] = torch.tensor(positions, dtype=torch.int32)
        tensors[f"logits_{p}"] = logits[positions].contiguous()
        tensors[f"greedy_{p}"] = torch.tensor(greedy, dtype=torch.int32)
        tensors[f"greedy_gap_{p}"] = torch.tensor(ggaps, dtype=torch.float32)
        cont = tok.decode(greedy)
        full = tok.decode(ids + greedy)
        texts.append((prompt, ids, greedy, cont, full, ggaps))
        n_close = int((gaps < TIE_TOL).sum())
        info.append(dict(prompt=prompt, ids=ids, greedy=greedy, continuation=cont,
                         min_gap=float(gaps.min()), n_close=n_close, T=T, greedy_min_gap=min(ggaps)))
        log(f"[smollm2]   prompt {p}: {prompt!r}")
        log(f"[smollm2]     input_ids ({T}) {ids}")
        log(f"[smollm2]     tokens {[tok.convert_ids_to_tokens(i) for i in ids]}")
        log(f"[smollm2]     argmax {argmax.tolist()}")
        log(f"[smollm2]     top1-top2 gap min {gaps.min():.4f} (positions < {TIE_TOL}: {n_close}/{T}); "
            f"greedy step gap min {min(ggaps):.4f}")
        log(f"[smollm2]     greedy {greedy}")
        log(f"[smollm2]     text   {full!r}")

    save_golden(tensors, os.path.join(path, "golden.safetensors"),
              metadata={"gguf": os.path.basename(gguf_path), "greedy_new": str(SMOL_GREEDY_NEW),
                        "prompt_0": SMOL_PROMPTS[0], "prompt_1": SMOL_PROMPTS[1], "add_bos": "false",
                        "transformers": transformers.__version__, "torch": torch.__version__})
    with open(os.path.join(path, "greedy.txt"), "w") as f:
        f.write(f"# SmolLM2-135M-Instruct ({os.path.basename(gguf_path)}), dequantized to float32 by "
                f"transformers {transformers.__version__}; no BOS, greedy, {SMOL_GREEDY_NEW} new tokens, "
                f"no repetition penalty.\n")
        for p, (prompt, ids, greedy, cont, full, ggaps) in enumerate(texts):
            f.write(f"\n## prompt {p}\n")
            f.write(f"prompt:       {prompt!r}\n")
            f.write(f"input_ids:    {ids}\n")
            f.write(f"greedy_ids:   {greedy}\n")
            f.write(f"top1-top2 logit gap per greedy step: {[round(g, 4) for g in ggaps]}\n")
            f.write(f"continuation: {cont!r}\n")
            f.write(f"full text:\n{full}\n")
    log(f"[smollm2]   done in {time.time() - t0:.1f}s")
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO_ROOT, "tests", "golden"))
    ap.add_argument("--gguf", default=DEFAULT_GGUF)
    ap.add_argument("--only", nargs="*", help="subset of: " + " ".join([m["name"] for m in MODELS] + ["smollm2"]))
    ap.add_argument("--skip-smollm2", action="store_true")
    args = ap.parse_args()

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # fixed reduction order -> reproducible reference logits
    os.makedirs(args.out, exist_ok=True)
    log(f"make_golden: out={args.out} transformers {transformers.__version__} torch {torch.__version__} "
        f"safetensors {safetensors.__version__} numpy {np.__version__}")
    want = set(args.only) if args.only else None
    results = []
    for spec in MODELS:
        if want is None or spec["name"] in want:
            results.append(make_tiny(spec, args.out))
    smol = None
    if not args.skip_smollm2 and (want is None or "smollm2" in want):
        smol = make_smollm2(args.gguf, args.out)

    log("\nsummary:")
    for r in results:
        log(f"  {r['name']:20s} seed {r['seed']:6d} top1 gap min {r['min_gap']:.4f}, positions within {TIE_TOL}: "
            f"{r['n_close']}/{SEQ_LEN}, greedy gap min {r['greedy_min_gap']:.4f}, router gap {r['router_gap']:.3f}, "
            f"numpy-ref diff {r['np_err']:.1e}")
    for p, r in enumerate(smol or []):
        log(f"  smollm2 prompt {p}      top1 gap min {r['min_gap']:.4f}, positions within {TIE_TOL}: "
            f"{r['n_close']}/{r['T']}, greedy gap min {r['greedy_min_gap']:.4f}")
    total = 0
    for root, _, files in os.walk(args.out):
        for fn in sorted(files):
            fp = os.path.join(root, fn)
            os.chmod(fp, 0o644)  # safetensors writes 0600
            total += os.path.getsize(fp)
    log(f"  total size of {args.out}: {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
