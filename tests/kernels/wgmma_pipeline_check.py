#!/usr/bin/env python3
"""Build check: no kernel that issues wgmma has its wgmma serialized by ptxas.

ptxas inserts a wait after every wgmma.mma_async of a function when it sees a non-wgmma
instruction read an accumulator register while a wgmma writing it may be in flight, and says so
only as an info line (C7514, "wgmma.mma_async instructions are serialized ..."), which the normal
build does not show. The decode GEMMs' streaming core did this for sessions: every wgmma of the
loop waited, and the batch-1 MoE down GEMM ran at ~81% of copy instead of ~84% (docs/perf.md,
2026-11-23 thirteenth). This test recompiles every CUDA source that issues wgmma with the
project's own command (compile_commands.json) and fails on any such line (C7514, and the other
codes of the same message: C7511 too few registers for the wgmma pipeline, C7513 non-wgmma code
defining a wgmma input register inside the pipeline stage, ...), naming the kernels.

usage: wgmma_pipeline_check.py BUILD_DIR SOURCE_DIR   (KILN_WGMMA_CHECK_ONLY=regex: those sources only)
"""
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile


def wgmma_sources(source_dir):
    """CUDA sources under src/ that issue wgmma, themselves or through their (transitive) includes."""
    root = os.path.join(source_dir, "src")
    includes, issues = {}, set()
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith((".cu", ".cuh", ".h")):
                p = os.path.join(d, f)
                rel = os.path.relpath(p, root)
                text = open(p, encoding="utf-8").read()
                includes[rel] = re.findall(r'#include "(kiln/[^"]+)"', text)
                if "wgmma.mma_async" in text:
                    issues.add(rel)
    memo = {}

    def reaches(rel, seen=()):
        if rel in memo:
            return memo[rel]
        if rel in seen:
            return False
        hit = rel in issues or any(reaches(i, seen + (rel,)) for i in includes.get(rel, []))
        memo[rel] = hit
        return hit

    return sorted(os.path.realpath(os.path.join(root, r)) for r in includes if r.endswith(".cu") and reaches(r))


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    build_dir, source_dir = sys.argv[1], sys.argv[2]
    db_path = os.path.join(build_dir, "compile_commands.json")
    try:
        db = json.load(open(db_path, encoding="utf-8"))
    except (OSError, ValueError) as e:
        print(f"cannot read {db_path}: {e}")
        return 1
    commands = {os.path.realpath(e["file"]): e for e in db}
    sources = wgmma_sources(source_dir)
    for must in ("kernels/cuda/gemm/skinny_gemm.cu", "kernels/cuda/moe/moe_decode_gemm.cu",
                 "kernels/cuda/attention/hopper_prefill_fp8_d128.cu"):
        if not any(s.endswith(must) for s in sources):
            print(f"expected {must} among the wgmma sources, got {sources}")
            return 1
    only = os.environ.get("KILN_WGMMA_CHECK_ONLY")
    if only:
        sources = [s for s in sources if re.search(only, s)]
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for src in sources:
            entry = commands.get(src)
            if entry is None:
                print(f"{src}: not in {db_path} (not built?)")
                bad += 1
                continue
            args = entry["arguments"] if "arguments" in entry else shlex.split(entry["command"])
            # the same command, its object into the temporary folder, no dependency file
            fixed, skip = [], False
            for a in args:
                if skip:
                    skip = False
                    continue
                if a in ("-o", "-MF", "-MT"):
                    skip = True
                    if a == "-o":
                        fixed += ["-o", os.path.join(tmp, "x.o")]
                    continue
                if a == "-MD":
                    continue
                fixed.append(a)
            r = subprocess.run(fixed, cwd=entry["directory"], capture_output=True, text=True)
            text = r.stdout + r.stderr
            if r.returncode != 0:
                print(f"{src}: compile failed ({r.returncode})\n{text[-2000:]}")
                bad += 1
                continue
            hits = [l for l in text.splitlines() if "wgmma.mma_async instructions are serialized" in l]
            names = sorted({m.group(1) for l in hits for m in [re.search(r"function '([^']+)'", l)] if m})
            status = f"{len(hits)} serialized" if hits else "ok"
            print(f"{os.path.relpath(src, source_dir)}: {status}")
            for n in names:
                print(f"  {n}")
            bad += bool(hits)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
