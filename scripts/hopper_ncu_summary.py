#!/usr/bin/env python3
"""Short text summary of one Nsight Compute report of the Hopper prefill kernel (run THERE, where ncu is).

  hopper_ncu_summary.py REPORT.ncu-rep [TOP_LINES]

Prints the headline metrics (time, clock, pipe utilisations, issue activity, shared-memory bank
conflicts, L2), the warp stall reasons per issued instruction (largest first), and, from the source
page, the SASS lines with the most stall samples, the samples per opcode and per warp role
(producer: the code after USETMAXREG.DEALLOC; consumers: the rest).
"""
import csv
import io
import re
import subprocess
import sys
from collections import defaultdict

NCU = "ncu"


def ncu_csv(report, *args):
    r = subprocess.run([NCU, "-i", report, "--csv", *args], capture_output=True, text=True)
    if r.returncode != 0:
        return None, r.stderr.strip()[-400:]
    rows = list(csv.reader(io.StringIO(r.stdout)))
    rows = [row for row in rows if row and not row[0].startswith("==")]
    return rows, ""


def to_float(s):
    try:
        return float(str(s).replace(",", ""))
    except ValueError:
        return None


def raw_metrics(report):
    rows, err = ncu_csv(report, "--page", "raw")
    if not rows or len(rows) < 3:
        print("raw page failed:", err)
        return {}
    names, values = rows[0], rows[2]
    return {n: v for n, v in zip(names, values)}


HEADLINE = re.compile(
    r"gpu__time_duration\.sum$|sm__cycles_elapsed\.avg\.per_second$|sm__throughput\.avg\.pct_of_peak_sustained_elapsed$|"
    r"smsp__issue_active\.avg\.pct_of_peak_sustained_active$|sm__pipe_.*cycles_active\.avg\.pct_of_peak_sustained_active$|"
    r"sm__inst_executed_pipe_.*\.avg\.pct_of_peak_sustained_active$|l1tex__data_bank_conflicts_pipe_lsu_mem_shared.*\.sum$|"
    r"l1tex__data_pipe_lsu_wavefronts_mem_shared.*\.sum$|lts__throughput\.avg\.pct_of_peak_sustained_elapsed$|"
    r"lts__t_bytes\.sum\.per_second$|dram__throughput\.avg\.pct_of_peak_sustained_elapsed$|"
    r"smsp__warps_eligible\.avg\.per_cycle_active$|smsp__warps_active\.avg\.per_cycle_active$|"
    r"smsp__inst_executed\.sum$|smsp__cycles_active\.avg$|l1tex__throughput\.avg\.pct_of_peak_sustained_active$")


def summarize_raw(m):
    print("-- headline metrics")
    for name in sorted(m):
        if HEADLINE.search(name):
            v = to_float(m[name])
            if v is not None and v != 0:
                print(f"  {name} = {m[name]}")
    stalls = []
    for name, val in m.items():
        mm = re.match(r"smsp__average_warps?_(?:latency_)?issue_stalled_(\w+?)_per_issue_active\.ratio$", name)
        if mm:
            v = to_float(val)
            if v:
                stalls.append((v, mm.group(1)))
    if stalls:
        print("-- stall reasons (warp cycles per issued instruction), largest first")
        for v, n in sorted(stalls, reverse=True)[:14]:
            print(f"  {n:28s} {v:8.3f}")


def summarize_source(report, top):
    rows, err = None, ""
    for args in (("--page", "source", "--print-source", "sass"), ("--page", "source")):
        rows, err = ncu_csv(report, *args)
        if rows and len(rows) > 2:
            break
    if not rows or len(rows) < 3:
        print("source page failed:", err)
        return
    hdr = None
    for i, row in enumerate(rows[:10]):
        if any("Source" == c or "Address" in c for c in row):
            hdr = i
            break
    if hdr is None:
        print("source page: no header in", rows[0][:8])
        return
    names = rows[hdr]
    body = [r for r in rows[hdr + 1:] if len(r) == len(names)]
    col = {n: i for i, n in enumerate(names)}
    src_i = next((i for i, n in enumerate(names) if n == "Source"), None)
    addr_i = next((i for i, n in enumerate(names) if "Address" in n), None)
    all_i = next((i for i, n in enumerate(names) if "Sampling (All" in n), None)
    ni_i = next((i for i, n in enumerate(names) if "Not-issued" in n or "Not Issued" in n), None)
    ex_i = next((i for i, n in enumerate(names) if n.startswith("Instructions Executed")), None)
    reason_cols = [i for i, n in enumerate(names) if n.startswith("stall_") or (n.startswith("Warp Stall Sampling") is False
                                                                                and "stall" in n.lower()
                                                                                and "Sampling" not in n)]
    if src_i is None or all_i is None:
        print("source page columns:", names[:40])
        return
    total = sum(to_float(r[all_i]) or 0 for r in body) or 1
    print(f"-- source: {len(body)} SASS lines, {total:.0f} samples; columns with reasons: {len(reason_cols)}")
    role = "consumer"
    per_role = defaultdict(float)
    per_op = defaultdict(float)
    lines = []
    for r in body:
        sass = r[src_i].strip()
        if "USETMAXREG.DEALLOC" in sass:
            role = "producer"
        s = to_float(r[all_i]) or 0
        op = re.sub(r"^@!?U?P\w+\s+", "", sass).split(" ")[0]
        per_role[role] += s
        per_op[op] += s
        lines.append((s, r, role))
    print("  samples per role: " + ", ".join(f"{k} {v / total:.1%}" for k, v in per_role.items()))
    print("  samples per opcode: " + ", ".join(f"{k} {v / total:.1%}" for k, v in
                                                  sorted(per_op.items(), key=lambda kv: -kv[1])[:16]))
    print(f"-- top {top} SASS lines by stall samples (share, not-issued share, role, address, sass, top reasons)")
    for s, r, rl in sorted(lines, key=lambda x: -x[0])[:top]:
        reasons = []
        for i in reason_cols:
            v = to_float(r[i])
            if v:
                reasons.append((v, names[i]))
        reasons = ", ".join(f"{n.replace('stall_', '')} {v:.0f}" for v, n in sorted(reasons, reverse=True)[:3])
        ni = to_float(r[ni_i]) if ni_i is not None else 0
        addr = r[addr_i] if addr_i is not None else "?"
        print(f"  {s / total:6.2%} {(ni or 0) / total:6.2%} {rl[:4]} {addr} {r[src_i].strip()[:70]} | {reasons}")


def main():
    report = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    print(f"==== {report}")
    summarize_raw(raw_metrics(report))
    summarize_source(report, top)


if __name__ == "__main__":
    main()
