"""`kiln bench sweep` and `kiln bench plot` against the scripted timing server (which slows down
as requests pile up): sweep.json (every point, the best one under the cutoff), sweep.csv, and SVG
charts with labelled axes and one polyline per sweep file; the SVG is rendered to PNG when cairosvg
is installed (scripts/setup.sh installs it)."""
import csv
import json
import os
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import run_kiln  # noqa: E402
from timing_server import TimingServer  # noqa: E402

SVG = "{http://www.w3.org/2000/svg}"
SWEEP_ARGS = ["--random-input-len", "8", "--random-output-len", "4", "--num-prompts", "8", "--no-progress",
              "--slo-metric", "e2el", "--slo-percentile", "90"]


def load_json(path):
    with open(path) as f:
        return json.load(f)


def svg_parts(path):
    root = ET.parse(path).getroot()
    texts = {t.get("class"): "".join(t.itertext()) for t in root.iter(SVG + "text") if t.get("class")}
    polylines = [p for p in root.iter(SVG + "polyline")]
    legend = [t.text for g in root.iter(SVG + "g") if g.get("class") == "legend" for t in g.iter(SVG + "text")]
    return root, texts, polylines, legend


class Sweep(unittest.TestCase):
    def test_sweep_files_and_charts(self):
        with tempfile.TemporaryDirectory() as d, TimingServer(ttft=0.05, itl=0.01, itl_per_active=0.01) as server:
            a, b = os.path.join(d, "rates"), os.path.join(d, "conc")
            rc, out, err = run_kiln("bench", "sweep", "--base-url", server.base_url, "--request-rates", "4,8,16",
                                    "--slo-cutoff-ms", "150", "--result-dir", a, "--label", "open loop", *SWEEP_ARGS)
            self.assertEqual(rc, 0, err)
            sweep = load_json(os.path.join(a, "sweep.json"))
            self.assertEqual([p["request_rate"] for p in sweep["points"]], [4, 8, 16])
            for p in sweep["points"]:
                self.assertEqual(p["completed"], 8)
                self.assertEqual(p["meets_slo"], p["p90_e2el_ms"] <= 150)
            passing = [p["request_rate"] for p in sweep["points"] if p["meets_slo"]]
            self.assertEqual(sweep["best"] and sweep["best"]["request_rate"], max(passing) if passing else None)
            self.assertIn("best:", out)
            with open(os.path.join(a, "sweep.csv")) as f:
                rows = list(csv.DictReader(f))
            self.assertEqual([float(r["request_rate"]) for r in rows], [4, 8, 16])
            self.assertAlmostEqual(float(rows[2]["p90_e2el_ms"]), sweep["points"][2]["p90_e2el_ms"], delta=0.01)

            rc, out, err = run_kiln("bench", "sweep", "--base-url", server.base_url, "--concurrencies", "1,4",
                                    "--result-dir", b, *SWEEP_ARGS)
            self.assertEqual(rc, 0, err)
            conc = load_json(os.path.join(b, "sweep.json"))
            self.assertEqual([p["max_in_flight"] for p in conc["points"]], [1, 4])

            _, texts, lines, legend = svg_parts(os.path.join(a, "latency.svg"))
            self.assertEqual(texts["x-label"], "Achieved throughput (requests/s)")
            self.assertEqual(texts["y-label"], "P90 end-to-end latency (ms)")
            self.assertEqual(len(lines), 1)
            self.assertEqual(len(lines[0].get("points").split()), 3)
            self.assertEqual(legend, ["open loop"])

            plots = os.path.join(d, "plots")
            rc, out, err = run_kiln("bench", "plot", os.path.join(a, "sweep.json"), os.path.join(b, "sweep.json"),
                                    "--percentile", "90", "-o", plots)
            self.assertEqual(rc, 0, err)
            for name, y in [("latency.svg", "P90 end-to-end latency (ms)"), ("token_latency.svg", "P90 time per output token (ms)")]:
                root, texts, lines, legend = svg_parts(os.path.join(plots, name))
                self.assertEqual(texts["x-label"], "Achieved throughput (requests/s)")
                self.assertEqual(texts["y-label"], y)
                self.assertEqual(len(lines), 2, name)  # one curve per input file
                self.assertEqual([len(l.get("points").split()) for l in lines], [3, 2])
                self.assertEqual(legend, ["open loop", "conc"])
                ticks = [t for t in root.iter(SVG + "text") if t.get("class") in ("x-tick", "y-tick")]
                self.assertGreaterEqual(len(ticks), 6)
                for p in lines:  # every point inside the plot area
                    for xy in p.get("points").split():
                        x, y = map(float, xy.split(","))
                        self.assertTrue(80 <= x <= 760 - 24 and 48 <= y <= 460 - 64, (name, xy))
            try:
                import cairosvg
            except ImportError:
                print("cairosvg missing: PNG rendering not checked", file=sys.stderr)
                return
            png = os.environ.get("KILN_BENCH_PNG") or os.path.join(d, "latency.png")
            cairosvg.svg2png(url=os.path.join(plots, "latency.svg"), write_to=png)
            with open(png, "rb") as f:
                data = f.read()
            self.assertTrue(data.startswith(b"\x89PNG\r\n\x1a\n"))
            self.assertGreater(len(data), 5000)


if __name__ == "__main__":
    unittest.main(verbosity=2)
