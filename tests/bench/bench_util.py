"""Runs `kiln bench ...` for the bench tests and reads what it wrote."""
import glob
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "server"))
from kiln_server import KilnServer, default_model, kiln_bin  # noqa: E402,F401


def run_kiln(*args, timeout=240):
    """(exit code, stdout, stderr) of `kiln *args`."""
    env = dict(os.environ)
    env.setdefault("KILN_LOG_LEVEL", "warn")
    p = subprocess.run([kiln_bin(), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-3000:])
    return p.returncode, p.stdout, p.stderr


def bench_serve(*args, timeout=240):
    """Runs `kiln bench serve` with a fresh --result-dir: (exit code, result JSON or None, stderr)."""
    with tempfile.TemporaryDirectory() as d:
        rc, out, err = run_kiln("bench", "serve", "--result-dir", d, "--no-progress", *args, timeout=timeout)
        files = glob.glob(os.path.join(d, "*.json"))
        result = None
        if files:
            with open(files[0]) as f:
                result = json.load(f)
        return rc, result, out + err


def within(actual, expected, rel):
    return abs(actual - expected) <= rel * expected


def within_late(actual, expected, rel, late):
    """within, plus up to `late` more above: scheduling on a loaded 2-core machine only adds delay
    (a time measured below the scripted one is still a client bug)."""
    return expected * (1 - rel) <= actual <= expected * (1 + rel) + late
