#!/usr/bin/env python3
"""Minimax (relative error) polynomials of 2^f on [-0.5, 0.5] for exp2_poly in
src/kiln/kernels/cuda/attention/hopper_device.cuh (Lawson's iteratively reweighted least squares),
coefficients rounded to float32 as the kernel uses them.
  scripts/hopper_exp2_fit.py   ->  degree, coefficients (highest first), max relative error
Measured: degree 1 3.0e-2, degree 2 1.73e-3, degree 3 7.5e-5 (e4m3 rounds P by up to 2^-4)."""
import numpy as np

f = np.linspace(-0.5, 0.5, 20001)
y = 2.0 ** f
for deg in (1, 2, 3):
    w = np.ones_like(f)
    for _ in range(300):
        a = np.vander(f, deg + 1) / y[:, None]
        sw = np.sqrt(w)
        c, *_ = np.linalg.lstsq(a * sw[:, None], sw, rcond=None)
        e = np.abs(np.polyval(c, f) / y - 1)
        w = w * e
        w /= w.sum()
    c32 = c.astype(np.float32).astype(np.float64)
    err = np.abs(np.polyval(c32, f) / y - 1).max()
    print(deg, ", ".join(f"{x:.8g}f" for x in c32), f"max rel {err:.3g}")
