"""The OpenAI API of a real `kiln serve` (SmolLM2-135M on the CPU), driven by the official `openai`
client: completions and chat, streamed and not, n > 1, stop strings, logprobs, seeds, echo, usage,
the API key, /v1/models, /health and /metrics; and greedy output equal to `kiln generate`'s."""
import json
import math
import os
import sys
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kiln_server import KilnServer, kiln_generate  # noqa: E402

import openai  # noqa: E402

KEY = "test-key-123"
PROMPT = "The capital of France is"
server = None
MODEL = None


def setUpModule():
    global server, MODEL
    server = KilnServer("--max-num-seqs", "16", "--max-model-len", "1024", api_key=KEY).start()
    MODEL = server.model_name()


def tearDownModule():
    code = server.stop()
    assert code == 0, f"kiln serve exited with {code}"


def greedy(**kw):
    return server.client().completions.create(model=MODEL, prompt=kw.pop("prompt", PROMPT), temperature=0, **kw)


class Models(unittest.TestCase):
    def test_models_and_health(self):
        models = server.client().models.list().data
        self.assertEqual(len(models), 1)
        self.assertEqual(models[0].id, "SmolLM2-135M-Instruct.Q4_1")
        self.assertEqual(models[0].owned_by, "kiln")
        self.assertEqual(server.get("/health")[0], 200)
        head = urllib.request.Request(f"http://127.0.0.1:{server.port}/health", method="HEAD")
        with urllib.request.urlopen(head, timeout=60) as r:  # HEAD on a GET route: its status, no body
            self.assertEqual((r.status, r.read()), (200, b""))

    def test_structured_output_and_tools_are_refused(self):
        msgs = [{"role": "user", "content": "hi"}]
        for kw, param in [({"response_format": {"type": "json_object"}}, "response_format"),
                          ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
                            "tool_choice": "required"}, "tools")]:
            with self.assertRaises(openai.BadRequestError) as cm:
                server.client().chat.completions.create(model=MODEL, messages=msgs, max_tokens=2, **kw)
            self.assertEqual(cm.exception.body["param"], param)

    def test_api_key_is_required(self):
        bad = openai.OpenAI(base_url=server.base_url, api_key="wrong", max_retries=0)
        with self.assertRaises(openai.AuthenticationError) as cm:
            bad.completions.create(model=MODEL, prompt="hi", max_tokens=1)
        self.assertEqual(cm.exception.status_code, 401)
        self.assertEqual(server.get("/v1/models")[0], 401)
        self.assertEqual(server.get("/v1/models", {"Authorization": f"Bearer {KEY}"})[0], 200)

    def test_metrics_format(self):
        status, text = server.get("/metrics")
        self.assertEqual(status, 200)
        for family, kind in [("kiln_num_requests_running", "gauge"), ("kiln_num_requests_waiting", "gauge"),
                             ("kiln_kv_cache_usage_perc", "gauge"), ("kiln_kv_cache_free_blocks", "gauge"),
                             ("kiln_prompt_tokens_total", "counter"), ("kiln_generation_tokens_total", "counter"),
                             ("kiln_time_to_first_token_seconds", "histogram"),
                             ("kiln_inter_token_latency_seconds", "histogram")]:
            self.assertIn(f"# TYPE {family} {kind}\n", text)
        greedy(max_tokens=3)
        m = server.metrics()
        self.assertGreater(m["kiln_generation_tokens_total"], 0)
        self.assertGreater(m["kiln_time_to_first_token_seconds_count"], 0)
        self.assertEqual(m["kiln_time_to_first_token_seconds_count"],
                         m['kiln_time_to_first_token_seconds_bucket{model_name="%s",le="+Inf"}' % MODEL])


class Completions(unittest.TestCase):
    def test_greedy_matches_kiln_generate(self):
        for prompt, n in [(PROMPT, 16), ("Once upon a time", 24)]:
            r = greedy(prompt=prompt, max_tokens=n)
            self.assertEqual(prompt + r.choices[0].text, kiln_generate(prompt, n))

    def test_usage_and_finish(self):
        r = greedy(max_tokens=7)
        self.assertEqual(r.object, "text_completion")
        self.assertTrue(r.id.startswith("cmpl-"))
        self.assertEqual(r.choices[0].finish_reason, "length")
        self.assertEqual(r.usage.prompt_tokens, 5)
        self.assertEqual(r.usage.completion_tokens, 7)
        self.assertEqual(r.usage.total_tokens, 12)

    def test_stream_equals_non_stream(self):
        full = greedy(max_tokens=12).choices[0].text
        chunks = list(greedy(max_tokens=12, stream=True, stream_options={"include_usage": True}))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        self.assertEqual(text, full)
        self.assertEqual([c.choices[0].finish_reason for c in chunks if c.choices][-1], "length")
        self.assertEqual(chunks[-1].choices, [])
        self.assertEqual(chunks[-1].usage.completion_tokens, 12)
        self.assertTrue(all(c.usage is None for c in chunks[:-1]))

    def test_stop_string_across_tokens(self):
        full = greedy(max_tokens=24).choices[0].text
        stop = full[8:13]  # a few characters that straddle token boundaries
        want = full[:full.index(stop)]
        r = greedy(max_tokens=24, stop=[stop, "zzzz-never"])
        self.assertEqual(r.choices[0].text, want)
        self.assertEqual(r.choices[0].finish_reason, "stop")
        streamed = "".join(c.choices[0].text for c in greedy(max_tokens=24, stop=stop, stream=True))
        self.assertEqual(streamed, want)
        # vLLM's include_stop_str_in_output: the same cut, after the stop string
        kept = greedy(max_tokens=24, stop=stop, extra_body={"include_stop_str_in_output": True})
        self.assertEqual(kept.choices[0].text, want + stop)

    def test_n_choices_and_seeds(self):
        kw = dict(model=MODEL, prompt="My favourite animal is", max_tokens=10, temperature=1.0, n=3,
                  extra_body={"ignore_eos": True})
        a = server.client().completions.create(seed=42, **kw)
        b = server.client().completions.create(seed=42, **kw)
        c = server.client().completions.create(seed=7, **kw)
        self.assertEqual(sorted(ch.index for ch in a.choices), [0, 1, 2])
        texts = lambda r: [ch.text for ch in sorted(r.choices, key=lambda ch: ch.index)]  # noqa: E731
        self.assertEqual(texts(a), texts(b))
        self.assertNotEqual(texts(a), texts(c))
        self.assertGreater(len(set(texts(a))), 1)  # each choice samples on its own
        self.assertEqual(a.usage.completion_tokens, 30)
        one = server.client().completions.create(model=MODEL, prompt="My favourite animal is", max_tokens=1)
        self.assertEqual(a.usage.prompt_tokens, one.usage.prompt_tokens)  # the prompt counts once

    def test_logprobs(self):
        r = greedy(max_tokens=6, logprobs=3)
        lp = r.choices[0].logprobs
        self.assertEqual(len(lp.tokens), 6)
        self.assertEqual("".join(lp.tokens), r.choices[0].text)
        for tok, val, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
            self.assertLessEqual(val, 0.0)
            self.assertIn(tok, top)
            self.assertAlmostEqual(max(top.values()), val, places=4)  # greedy: the best one
            self.assertEqual(list(top.values()), sorted(top.values(), reverse=True))  # most likely first
            self.assertLessEqual(len(top), 4)
            self.assertLessEqual(sum(math.exp(v) for v in top.values()), 1.0001)
        self.assertEqual(lp.text_offset[0], 0)

    def test_echo(self):
        r = greedy(max_tokens=4, echo=True, logprobs=1)
        self.assertTrue(r.choices[0].text.startswith(PROMPT))
        lp = r.choices[0].logprobs
        self.assertEqual(len(lp.tokens), 5 + 4)
        self.assertIsNone(lp.token_logprobs[0])
        self.assertTrue(all(v <= 0 for v in lp.token_logprobs[1:]))
        self.assertEqual(r.choices[0].text, PROMPT + greedy(max_tokens=4).choices[0].text)

    def test_token_id_and_batch_prompts(self):
        ids = [504, 3575, 282, 4649, 314]  # "The capital of France is"
        self.assertEqual(greedy(prompt=ids, max_tokens=5).choices[0].text, greedy(max_tokens=5).choices[0].text)
        r = greedy(prompt=[PROMPT, "Once upon a time"], max_tokens=3)
        self.assertEqual(sorted(c.index for c in r.choices), [0, 1])

    def test_penalties_and_extra_fields(self):
        plain = greedy(prompt="1, 2, 1, 2, 1, 2,", max_tokens=12).choices[0].text
        penalized = greedy(prompt="1, 2, 1, 2, 1, 2,", max_tokens=12, frequency_penalty=2.0, presence_penalty=1.0,
                           extra_body={"repetition_penalty": 1.5, "top_k": 20, "min_p": 0.05, "some_unknown": [1]})
        self.assertNotEqual(plain, penalized.choices[0].text)

    def test_ignore_eos_and_min_tokens(self):
        r = server.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Say hi."}], temperature=0, max_tokens=40,
            extra_body={"ignore_eos": True})
        self.assertEqual(r.usage.completion_tokens, 40)
        short = server.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Say hi."}], temperature=0, max_tokens=40)
        n = short.usage.completion_tokens
        self.assertLess(n, 40)  # it stops at <|im_end|> on its own
        r = server.client().chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Say hi."}], temperature=0, max_tokens=40,
            extra_body={"min_tokens": n + 3})
        self.assertGreaterEqual(r.usage.completion_tokens, n + 3)


class Chat(unittest.TestCase):
    MESSAGES = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "What is the capital of France?"}]

    def chat(self, **kw):
        return server.client().chat.completions.create(model=MODEL, messages=self.MESSAGES, temperature=0, **kw)

    def test_chat_and_stream(self):
        r = self.chat(max_completion_tokens=20)
        self.assertEqual(r.object, "chat.completion")
        self.assertEqual(r.choices[0].message.role, "assistant")
        self.assertIn("Paris", r.choices[0].message.content)
        chunks = list(self.chat(max_tokens=20, stream=True, stream_options={"include_usage": True}))
        self.assertEqual(chunks[0].choices[0].delta.role, "assistant")
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        self.assertEqual(text, r.choices[0].message.content)
        self.assertEqual(chunks[-1].usage.completion_tokens, r.usage.completion_tokens)
        self.assertEqual(chunks[-1].usage.prompt_tokens, r.usage.prompt_tokens)

    def test_chat_logprobs_and_n(self):
        r = self.chat(max_tokens=5, logprobs=True, top_logprobs=2)
        content = r.choices[0].logprobs.content
        self.assertEqual(len(content), r.usage.completion_tokens)
        for e in content:
            self.assertEqual(len(e.top_logprobs), 2)
            self.assertEqual(e.top_logprobs[0].token, e.token)
            self.assertEqual(bytes(e.bytes).decode(errors="replace"), e.token)
        r = server.client().chat.completions.create(model=MODEL, messages=self.MESSAGES, n=2, max_tokens=8, seed=3)
        self.assertEqual(sorted(c.index for c in r.choices), [0, 1])

    def test_stream_raw_sse(self):
        body = json.dumps({"model": MODEL, "messages": self.MESSAGES, "max_tokens": 4, "stream": True}).encode()
        req = urllib.request.Request(server.base_url + "/chat/completions", data=body,
                                     headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            self.assertTrue(resp.headers["Content-Type"].startswith("text/event-stream"))
            events = [line for line in resp.read().decode().split("\n\n") if line]
        self.assertEqual(events[-1], "data: [DONE]")
        self.assertTrue(all(e.startswith("data: ") for e in events))


if __name__ == "__main__":
    unittest.main(verbosity=2)
