"""Load on a real `kiln serve`: 200 streaming clients at once all complete with the greedy output a
lone request gets; and a server with a tiny KV pool, where requests must preempt each other, still
gives every request the output it gets alone (preemption recomputes, it never changes results)."""
import asyncio
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kiln_server import KilnServer  # noqa: E402

import openai  # noqa: E402

PROMPTS = ["The capital of France is", "Once upon a time", "The best way to learn is", "Water boils at",
           "My favourite colour is", "In 1969, the first", "def fibonacci(n):", "The three primary colours are"]


def alone(server, model, prompt, max_tokens):
    """The greedy completion of prompt by itself on an idle server."""
    return server.client().completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0,
                                              extra_body={"ignore_eos": True}).choices[0].text


async def stream_one(client, model, prompt, max_tokens):
    stream = await client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0,
                                             stream=True, extra_body={"ignore_eos": True})
    text, finish = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].text
            finish = chunk.choices[0].finish_reason or finish
    return text, finish


async def stream_all(server, model, prompts, max_tokens):
    client = server.async_client(timeout=600)
    try:
        return await asyncio.gather(*(stream_one(client, model, p, max_tokens) for p in prompts))
    finally:
        await client.close()


class ManyClients(unittest.TestCase):
    def test_200_concurrent_streams(self):
        with KilnServer("--max-num-seqs", "64") as server:
            model = server.model_name()
            want = {p: alone(server, model, p, 6) for p in PROMPTS}
            prompts = [PROMPTS[i % len(PROMPTS)] for i in range(200)]
            start = time.time()
            results = asyncio.run(stream_all(server, model, prompts, 6))
            print(f"200 concurrent streams in {time.time() - start:.1f}s", file=sys.stderr)
            for p, (text, finish) in zip(prompts, results):
                self.assertEqual(finish, "length")
                self.assertEqual(text, want[p], p)
            m = server.metrics()
            self.assertEqual(m["kiln_kv_cache_free_blocks"], m["kiln_kv_cache_total_blocks"])
            self.assertEqual(server.stop(), 0)


class TinyKvPool(unittest.TestCase):
    def test_preemption_leaves_outputs_unchanged(self):
        # 12 blocks of 16 tokens: one request needs up to 3 (prompt + 32 tokens), 8 at once need 24.
        with KilnServer("--num-kv-blocks", "12", "--max-num-seqs", "8", "--max-num-batched-tokens", "64") as server:
            model = server.model_name()
            want = {p: alone(server, model, p, 32) for p in PROMPTS}
            results = asyncio.run(stream_all(server, model, PROMPTS, 32))
            for p, (text, finish) in zip(PROMPTS, results):
                self.assertEqual(text, want[p], p)
            m = server.metrics()
            self.assertGreater(m["kiln_num_preemptions_total"], 0)
            self.assertEqual(m["kiln_kv_cache_free_blocks"], 12)
            # A request that needs more blocks than the pool has is refused at once.
            with self.assertRaises(openai.BadRequestError) as cm:
                server.client().completions.create(model=model, prompt="hi", max_tokens=300)
            self.assertIn("never", cm.exception.message)
            self.assertEqual(server.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
