"""Starts a real `kiln serve` process for the server tests and talks to it.

The kiln binary comes from $KILN_BIN (CTest passes it), else build/kiln. Servers run on the CPU
with SmolLM2-135M (bf16 weights) on a free port, which kiln prints when started with --port 0.
"""
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def kiln_bin():
    return os.environ.get("KILN_BIN") or os.path.join(ROOT, "build", "kiln")


def default_model():
    if os.environ.get("KILN_MODEL"):
        return os.environ["KILN_MODEL"]
    d = os.environ.get("KILN_MODEL_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "kiln", "models")
    return os.path.join(d, "SmolLM2-135M-Instruct.Q4_1.gguf")


class KilnServer:
    def __init__(self, *args, api_key=None):
        self.args = ["serve", "--port", "0", "--dtype", "bf16", "--kv-cache-gib", "0.25", *args]
        self.api_key = api_key
        if api_key:
            self.args += ["--api-key", api_key]
        self.proc = None
        self.port = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def start(self, timeout=120):
        env = dict(os.environ)
        env.setdefault("KILN_LOG_LEVEL", "warn")
        self.proc = subprocess.Popen([kiln_bin(), *self.args], stdout=subprocess.PIPE, stderr=sys.stderr,
                                     text=True, env=env)
        deadline = time.time() + timeout
        line = self.proc.stdout.readline()
        m = re.search(r"listening on http://([\d.]+):(\d+)", line or "")
        if not m:
            self.proc.kill()
            raise RuntimeError(f"kiln serve did not start: {line!r} (exit {self.proc.wait()})")
        self.port = int(m.group(2))
        while time.time() < deadline:
            try:
                if self.get("/health")[0] == 200:
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("kiln serve never became healthy")

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Stops the server; returns its exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}/v1"

    def client(self, **kw):
        import openai
        return openai.OpenAI(base_url=self.base_url, api_key=self.api_key or "none", max_retries=0, **kw)

    def async_client(self, **kw):
        import openai
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key or "none", max_retries=0, **kw)

    def get(self, path, headers=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics(self):
        """The /metrics samples as {name: value} (labels dropped; the last sample of a name wins)."""
        status, text = self.get("/metrics")
        assert status == 200, status
        out = {}
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            name_labels, value = line.rsplit(" ", 1)
            name = name_labels.split("{", 1)[0]
            labels = name_labels[len(name):]
            key = name if 'finished_reason' not in labels and 'le=' not in labels else name + labels
            out[key] = float(value)
        return out

    def model_name(self):
        return self.client().models.list().data[0].id

    def wait_for(self, predicate, timeout=60, what="condition"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = self.metrics()
            if predicate(m):
                return m
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; metrics: {self.metrics()}")


def kiln_generate(prompt, max_tokens, dtype="bf16"):
    """`kiln generate`'s stdout: the prompt and its greedy continuation (the trailing newline removed)."""
    env = dict(os.environ)
    env.setdefault("KILN_LOG_LEVEL", "warn")
    out = subprocess.run([kiln_bin(), "generate", "--dtype", dtype, "-p", prompt, "-n", str(max_tokens)],
                         capture_output=True, text=True, check=True, env=env).stdout
    assert out.endswith("\n")
    return out[:-1]
