#!/usr/bin/env python3
"""scripts/kernel_trace_chain.py on a synthetic kernel trace with known overlaps: each kernel's
share of a step (in end order, how far it moves the step's latest end; the shares add up to the
span), the grid size splitting a kernel name into groups, and --timeline's starts and ends against
the previous kernel's end (in start order)."""
import os
import subprocess
import sys
import tempfile
import unittest

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "kernel_trace_chain.py")

# One step, ns from its start: (start, end, grid, name). `gemm` runs twice on two grids.
STEP = [(0, 1000, 1, "void kiln::embedding_kernel(int)"),
        (500, 3000, 2, "void kiln::gemm<1>(Params)"),
        (2500, 2800, 3, "void kiln::norm(Params)"),  # ends inside the first gemm: that gemm's share is small
        (2900, 6000, 4, "void kiln::gemm<1>(Params)")]
STEPS, PERIOD = 5, 10000


def run(*args):
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as f:
        for s in range(STEPS):
            for start, end, grid, name in STEP:
                f.write(f"{s * PERIOD + start}\t{s * PERIOD + end}\t7\t{grid}\t128\t{name}\n")
        path = f.name
    try:
        out = subprocess.run([sys.executable, SCRIPT, path, *args], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(path)
    return out.splitlines()


class KernelTraceChainTest(unittest.TestCase):
    def test_shares_add_up_to_the_span(self):
        lines = run("--steps", "10", "--width", "30")
        # The last embedding starts a step without an end: STEPS - 1 whole steps.
        self.assertTrue(lines[0].startswith("4 steps, span 6.0 us"), lines[0])
        rows = {}
        for line in lines[2:]:
            p = line.split()
            rows[(p[0], int(p[1]))] = float(p[4])  # share a step, us
        # End order: embedding (1000), norm (2800), gemm on 2 CTAs (3000), gemm on 4 (6000).
        self.assertAlmostEqual(rows[("embedding_kernel", 1)], 1.0)
        self.assertAlmostEqual(rows[("norm", 3)], 1.8)
        self.assertAlmostEqual(rows[("gemm<1>", 2)], 0.2)
        self.assertAlmostEqual(rows[("gemm<1>", 4)], 3.0)
        self.assertAlmostEqual(sum(rows.values()), 6.0)

    def test_timeline_against_the_previous_end(self):
        lines = run("--steps", "10", "--width", "30", "--timeline", "3")
        i = next(k for k, line in enumerate(lines) if line.startswith("timeline:"))
        self.assertIn("kernels 1..3 of 4, 4 steps", lines[i])
        rows = [line.split() for line in lines[i + 1:]]
        self.assertEqual([(r[0], r[1]) for r in rows], [("gemm<1>", "2"), ("norm", "3"), ("gemm<1>", "4")])
        got = [[float(v) for v in r[2:5]] for r in rows]
        # (start, end, duration) in us: gemm after the embedding's end, norm and the second gemm after
        # the kernel before each.
        want = [[-0.5, 2.0, 2.5], [-0.5, -0.2, 0.3], [0.1, 3.2, 3.1]]
        for g, w in zip(got, want):
            for a, b in zip(g, w):
                self.assertAlmostEqual(a, b)


if __name__ == "__main__":
    unittest.main()
