"""A scripted OpenAI-style streaming server for the bench tests: plain asyncio streams, HTTP/1.1
with keep-alive and chunked SSE, and known timing. Each completion's first token leaves `ttft`
seconds after the request arrived and token i at ttft + i * itl (absolute deadlines, so sleeps do
not drift); `itl_per_active` adds that much to itl per other request in flight (a server that
slows down under load); every `fail_every`-th request is answered with HTTP 500. It records
arrival times and the most requests in flight (GET /stats).
"""
import asyncio
import json
import threading
import time


class TimingServer:
    def __init__(self, ttft=0.2, itl=0.04, itl_per_active=0.0, fail_every=0, role_chunk=True):
        self.ttft, self.itl, self.itl_per_active = ttft, itl, itl_per_active
        self.fail_every, self.role_chunk = fail_every, role_chunk
        self.arrivals, self.active, self.max_active, self.count = [], 0, 0, 0
        self.port = None
        self._loop = None
        self._thread = None

    # --- lifecycle: the server runs on its own event loop thread ---
    def __enter__(self):
        ready = threading.Event()

        def run():
            self._loop = asyncio.new_event_loop()
            server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()
            server.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}"

    # --- HTTP ---
    async def _serve(self, reader, writer):
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                method, path, _ = line.decode().split(" ", 2)
                headers = {}
                while True:
                    h = (await reader.readline()).decode().strip()
                    if not h:
                        break
                    k, v = h.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                await self._route(method, path, body, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _route(self, method, path, body, writer):
        if method == "GET" and path == "/v1/models":
            return self._reply(writer, 200, {"object": "list", "data": [{"id": "timing-model", "object": "model"}]})
        if method == "GET" and path == "/stats":
            return self._reply(writer, 200, {"arrivals": self.arrivals, "max_active": self.max_active})
        if method == "POST" and path in ("/v1/completions", "/v1/chat/completions"):
            return await self._complete(json.loads(body), path.endswith("chat/completions"), writer)
        self._reply(writer, 404, {"error": {"message": f"no route {method} {path}"}})

    def _reply(self, writer, status, obj):
        data = json.dumps(obj).encode()
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode() + data)

    async def _complete(self, req, chat, writer):
        loop = asyncio.get_running_loop()
        start = loop.time()
        self.arrivals.append(time.monotonic())
        self.count += 1
        if self.fail_every and self.count % self.fail_every == 0:
            return self._reply(writer, 500, {"error": {"message": "scripted failure"}})
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            n = req.get("max_completion_tokens") if chat else req.get("max_tokens")
            prompt = req["messages"][-1]["content"] if chat else req["prompt"]
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")

            async def event(obj):
                data = ("data: " + (obj if isinstance(obj, str) else json.dumps(obj)) + "\n\n").encode()
                writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                await writer.drain()

            if chat and self.role_chunk:
                await event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
            due = start + self.ttft
            for i in range(n):
                await asyncio.sleep(max(0.0, due - loop.time()))
                text = f" t{i}"
                choice = {"index": 0, "delta": {"content": text}} if chat else {"index": 0, "text": text}
                choice["finish_reason"] = "length" if i == n - 1 else None
                await event({"choices": [choice]})
                due += self.itl + self.itl_per_active * (self.active - 1)
            usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": n, "total_tokens": len(prompt.split()) + n}
            await event({"choices": [], "usage": usage})
            await event("[DONE]")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        finally:
            self.active -= 1
