#!/usr/bin/env python3
"""Per-kernel SASS op counts of compiled Hopper prefill objects (cuobjdump -sass): MUFU.EX2, FFMA,
FADD, FMNMX, F2FP, LEA/SHF/IADD3/IMAD, wgmma (HGMMA / QGMMA) and all instructions, one line per kernel whose
mangled name matches the filter. Static counts (the code as written, not executed counts).
  scripts/hopper_sass_counts.py OBJ_OR_BINARY [NAME_SUBSTRING]"""
import collections
import os
import re
import subprocess
import sys

OPS = ["MUFU.EX2", "FFMA", "FADD", "FMUL", "FMNMX", "F2FP", "LEA", "SHF", "IADD3", "IMAD", "GMMA"]


def main():
    path, want = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "hopper_prefill_kernel"
    sass = subprocess.run([os.environ.get("CUOBJDUMP", "cuobjdump"), "-sass", path], capture_output=True, text=True, check=True).stdout
    name, counts = None, collections.OrderedDict()
    for line in sass.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            name = m.group(1)
            counts[name] = collections.Counter()
            continue
        m = re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9_.]+)", line)
        if name and m:
            op = m.group(1)
            c = counts[name]
            c["all"] += 1
            for k in OPS:
                if op == k or op.startswith(k + ".") or (k == "GMMA" and "GMMA" in op):
                    c[k] += 1
    print("kernel | " + " | ".join(OPS) + " | all")
    for n, c in counts.items():
        if want in n:
            tune = re.search(r"HopperTuneI(.*?)EEEv", n)
            print((tune.group(1) if tune else n) + " | " + " | ".join(str(c[k]) for k in OPS) + f" | {c['all']}")


if __name__ == "__main__":
    main()
