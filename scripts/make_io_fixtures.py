#!/usr/bin/env python3
"""Writes the golden files of tests/io (kept small, checked in):

  tests/data/io/quant_fixture.gguf                 gguf.GGUFWriter, random data in F32, F16, BF16,
                                                   Q8_0, Q4_0, Q4_1 (+ a few metadata keys)
  tests/data/io/quant_fixture_expected.safetensors gguf.quants.dequantize of each tensor, f32
  tests/data/io/smollm2_qk_rows.safetensors        rows of layer 0 q_proj/k_proj as transformers
                                                   loads them from the SmolLM2 GGUF (dequantized,
                                                   RoPE permutation undone)

Usage: python3 scripts/make_io_fixtures.py [--model-dir DIR] [--skip-smollm2]
DIR defaults to $KILN_MODEL_DIR or ~/.cache/kiln/models.
"""
import argparse
import os
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "io"
SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Rows to compare: both halves of the first heads and head boundaries.
Q_ROWS = [0, 1, 2, 31, 32, 33, 63, 64, 95, 96, 511, 575]
K_ROWS = [0, 1, 31, 32, 63, 64, 127, 128, 191]


def fixture_data(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    x[0, :32] = 0.0                      # an all-zero block (d = 0)
    x[1, :32] *= 1000.0                  # a large-scale block
    x[1, 32:64] = np.linspace(-1, 1, 32)  # an evenly spread block
    return x


def write_quant_fixture() -> None:
    rng = np.random.default_rng(1234)
    path = OUT / "quant_fixture.gguf"
    w = gguf.GGUFWriter(str(path), arch="kiln_fixture")
    w.add_uint32("fixture.uint32", 7)
    w.add_float32("fixture.float32", 0.5)
    w.add_string("fixture.string", "kiln")
    w.add_array("fixture.int_array", [1, -2, 3])
    expected = {}
    for name, qtype, shape in [
        ("t_f32", Q.F32, (3, 64)),
        ("t_f16", Q.F16, (3, 64)),
        ("t_bf16", Q.BF16, (3, 64)),
        ("t_q8_0", Q.Q8_0, (4, 96)),
        ("t_q4_0", Q.Q4_0, (4, 96)),
        ("t_q4_1", Q.Q4_1, (4, 96)),
        ("t_q4_1_3d", Q.Q4_1, (2, 3, 64)),
    ]:
        x = fixture_data(rng, int(np.prod(shape[:-1])), shape[-1]).reshape(shape)
        if qtype == Q.F32:
            w.add_tensor(name, x)
            expected[name] = x
        elif qtype == Q.F16:
            h = x.astype(np.float16)
            w.add_tensor(name, h)
            expected[name] = gguf.quants.dequantize(h, qtype)
        else:
            q = gguf.quants.quantize(x, qtype)
            w.add_tensor(name, q, raw_dtype=qtype)
            expected[name] = gguf.quants.dequantize(q, qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in expected.items()},
              str(OUT / "quant_fixture_expected.safetensors"))


def write_smollm2_rows(model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), gguf_file=SMOLLM2, dtype=torch.float32)
    attn = model.model.layers[0].self_attn
    q = attn.q_proj.weight.detach().numpy()
    k = attn.k_proj.weight.detach().numpy()
    save_file({
        "q_proj_rows": np.ascontiguousarray(q[Q_ROWS]),
        "q_proj_row_ids": np.array(Q_ROWS, dtype=np.int32),
        "k_proj_rows": np.ascontiguousarray(k[K_ROWS]),
        "k_proj_row_ids": np.array(K_ROWS, dtype=np.int32),
    }, str(OUT / "smollm2_qk_rows.safetensors"))


def main() -> None:
    ap = argparse.ArgumentParser()
    default_dir = os.environ.get("KILN_MODEL_DIR", str(Path.home() / ".cache" / "kiln" / "models"))
    ap.add_argument("--model-dir", default=default_dir)
    ap.add_argument("--skip-smollm2", action="store_true")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    write_quant_fixture()
    if not args.skip_smollm2:
        write_smollm2_rows(Path(args.model_dir))
    for p in sorted(OUT.iterdir()):
        print(f"{p.relative_to(ROOT)}: {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
