"""Kernel times from an Nsight Compute CSV log (ncu --metrics gpu__time_duration.sum --csv):
[(kernel name, microseconds)] in launch order. Used by device_profile.sh and device_step_profile.sh."""
import csv


def kernel_times(path):
    rows = [r for r in csv.reader(open(path, errors="replace")) if len(r) > 5]
    if not rows:
        return []
    head = rows[0]
    ki, vi, ui = head.index("Kernel Name"), head.index("Metric Value"), head.index("Metric Unit")
    times = []
    for r in rows[1:]:
        if r == head:
            continue
        v = float(r[vi].replace(",", ""))
        v = v / 1000 if r[ui] in ("ns", "nsecond") else v * 1000 if r[ui] in ("ms", "msecond") else v  # -> us
        times.append((r[ki], v))
    return times
