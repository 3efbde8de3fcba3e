#!/usr/bin/env python3
"""Each kernel's share of a step from a kernel timeline (bench/trace/kernel_trace.cc's TSV): steps
begin at each kernel matching --step (default: the embedding lookup, the first kernel of a decode
step); the last --steps of them are kept (the steady state). Within a step, kernels in end order; a
kernel's share is how far it moves the step's latest end (end - the latest end before it, or 0):
the shares add up to the step's span from its first start. Grouped by kernel name and grid size
(qkv and o_proj run one kernel on different grids). Prints, per group: calls a step, share a call
and a step, time from start to end a call (overlaps its neighbours under programmatic dependent
launch), and the step's share in percent.
--timeline N also prints N kernels from the middle of the step in start order, each kernel's start
and end against the previous kernel's end, averaged over the steps of the usual length.
Usage: kernel_trace_chain.py TRACE.tsv [--step REGEX] [--steps N] [--top N] [--width N] [--timeline N]"""
import argparse
import collections
import re
import statistics


def strip_params(name):
    """The name without its trailing parameter list (which may hold parentheses itself)."""
    if not name.endswith(")"):
        return name
    depth = 0
    for i in range(len(name) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(name[i], 0)
        if depth == 0:
            return name[:i]
    return name


def short(name, width):
    name = strip_params(name)
    name = name.replace("(anonymous namespace)::", "").replace("kiln::", "")
    name = re.sub(r"^void ", "", name)
    return name if len(name) <= width else name[: width - 3] + "..."


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--step", default=r"embedding_kernel")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--top", type=int, default=24)
    ap.add_argument("--width", type=int, default=70)
    ap.add_argument("--timeline", type=int, default=0,
                    help="also print N kernels from the middle of the step, in start order, averaged over steps")
    a = ap.parse_args()
    if a.timeline < 0:
        raise SystemExit("--timeline wants N >= 0")
    rows = []
    with open(a.trace) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) < 6:
                continue
            rows.append((int(p[0]), int(p[1]), int(p[2]), int(p[3]), int(p[4]), p[5]))
    rows.sort()
    step_re = re.compile(a.step)
    starts = [i for i, r in enumerate(rows) if step_re.search(r[5])]
    if len(starts) < 2:
        raise SystemExit(f"fewer than 2 steps match --step {a.step!r} in {len(rows)} kernels")
    bounds = list(zip(starts, starts[1:]))[-a.steps:]
    share = collections.defaultdict(float)
    dur = collections.defaultdict(float)
    calls = collections.defaultdict(int)
    spans = []
    for b, e in bounds:
        ks = sorted(rows[b:e], key=lambda r: r[1])
        t0 = min(r[0] for r in ks)
        latest = t0
        for r in ks:
            key = (short(r[5], a.width), r[3])
            share[key] += max(0, r[1] - latest) / 1e3
            dur[key] += (r[1] - r[0]) / 1e3
            calls[key] += 1
            latest = max(latest, r[1])
        spans.append((latest - t0) / 1e3)
    n = len(bounds)
    step = statistics.mean(spans)
    print(f"{n} steps, span {step:.1f} us (median {statistics.median(spans):.1f}), {sum(calls.values()) / n:.0f} kernels a step")
    print(f"{'kernel':<{a.width}} {'grid':>6} {'calls':>6} {'share/call':>10} {'share/step':>10} {'%':>5} {'dur/call':>9}")
    for key in sorted(share, key=lambda k: -share[k])[: a.top]:
        c = calls[key] / n
        print(f"{key[0]:<{a.width}} {key[1]:>6} {c:>6.1f} {share[key] / calls[key]:>10.2f} {share[key] / n:>10.1f} "
              f"{100 * share[key] / n / step:>5.1f} {dur[key] / calls[key]:>9.2f}")
    if a.timeline:
        print_timeline(rows, bounds, a)


def print_timeline(rows, bounds, a):
    """Kernels at the same positions of every step (steps of equal length only), in start order: start
    and end against the previous kernel's end (negative start: launched before it ended), averaged."""
    steps = [sorted(rows[b:e], key=lambda r: r[0]) for b, e in bounds]
    length = collections.Counter(len(s) for s in steps).most_common(1)[0][0]
    steps = [s for s in steps if len(s) == length]
    first = max(1, length // 2 - a.timeline // 2)
    last = min(length, first + a.timeline) - 1
    print(f"timeline: kernels {first}..{last} of {length}, {len(steps)} steps; us against the "
          f"previous kernel's end: start, end; dur")
    for i in range(first, last + 1):
        if any(s[i][5] != steps[0][i][5] for s in steps):
            print(f"(position {i}: the kernel differs between steps; the averages mix them)")
        st = statistics.mean((s[i][0] - s[i - 1][1]) / 1e3 for s in steps)
        en = statistics.mean((s[i][1] - s[i - 1][1]) / 1e3 for s in steps)
        du = statistics.mean((s[i][1] - s[i][0]) / 1e3 for s in steps)
        print(f"{short(steps[0][i][5], a.width):<{a.width}} {steps[0][i][3]:>6} {st:>8.2f} {en:>8.2f} {du:>8.2f}")


if __name__ == "__main__":
    main()
