"""`kiln bench` against a real `kiln serve` on the CPU (SmolLM2, bf16): the token counts the bench
reports (from the server's usage) match what the server counted in /metrics, prompts are exactly
the asked length and random (no prefix-cache hits) unless a shared prefix is asked for; and
`kiln bench latency` runs the model in-process."""
import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_util import KilnServer, bench_serve, run_kiln  # noqa: E402


# Keep-alive on (the default), so reused connections are exercised: kiln serve once took a spurious
# wake-up on a reused connection for a disconnect (Session::on_watch now peeks before deciding).
NO_REUSE = []


def delta(after, before, key):
    return after[key] - before.get(key, 0)


class Live(unittest.TestCase):
    def test_token_counts_match_server_metrics(self):
        n, warm, n_in, n_out = 6, 1, 24, 6
        with KilnServer("--max-num-seqs", "8") as server:
            before = server.metrics()
            rc, r, log = bench_serve("--base-url", server.base_url, "--max-concurrency", 3, "--num-prompts", n,
                                     "--num-warmups", warm, "--random-input-len", n_in, "--random-output-len", n_out, *NO_REUSE)
            after = server.metrics()
            self.assertEqual(rc, 0, log)
            self.assertEqual(r["completed"], n)
            self.assertTrue(r["usage_from_server"])
            self.assertEqual(r["total_input_tokens"], n * n_in)
            self.assertEqual(r["total_output_tokens"], n * n_out)
            # The server counted the warm-up request too.
            self.assertEqual(delta(after, before, "kiln_prompt_tokens_total"), r["total_input_tokens"] + warm * n_in)
            self.assertEqual(delta(after, before, "kiln_generation_tokens_total"), r["total_output_tokens"] + warm * n_out)
            self.assertEqual(delta(after, before, "kiln_prefix_cache_hit_tokens_total"), 0)
            self.assertGreater(r["mean_ttft_ms"], 0)
            self.assertGreater(r["mean_tpot_ms"], 0)

            before = after
            rc, r, log = bench_serve("--base-url", server.base_url, "--max-concurrency", 1, "--num-prompts", 3,
                                     "--random-input-len", 40, "--shared-prefix-len", 32, "--random-output-len", 2, "--seed", 5,
                                     *NO_REUSE)
            after = server.metrics()
            self.assertEqual(rc, 0, log)
            self.assertEqual(delta(after, before, "kiln_prompt_tokens_total"), 3 * 40)
            self.assertGreater(delta(after, before, "kiln_prefix_cache_hit_tokens_total"), 0)

    def test_latency_in_process(self):
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "latency.json")
            rc, stdout, err = run_kiln("bench", "latency", "--dtype", "bf16", "--batch-size", 2, "--input-len", 16,
                                       "--output-len", 4, "--num-iters", 2, "--num-iters-warmup", 1, "--output-json", out)
            self.assertEqual(rc, 0, err)
            with open(out) as f:
                j = json.load(f)
            self.assertEqual(j["decode_steps"], 2 * 3)
            self.assertEqual(len(j["latencies_s"]), 2)
            self.assertGreater(j["prefill_ms"], 0)
            self.assertGreater(j["decode_tokens_per_s"], 0)
            self.assertIn("decode step", stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
