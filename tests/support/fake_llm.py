"""A stand-in OpenAI-compatible server over real HTTP: streams SSE, records, misbehaves."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.synapse import free_port


@dataclass
class Behaviour:
    first_delay: float = 0.0  # seconds before the first token
    token_delay: float = 0.0  # seconds between tokens
    status: int | None = None  # answer with this HTTP error instead
    error_body: str = '{"error": {"message": "stand-in failure"}}'
    broken_after: int | None = None  # send a non-JSON chunk after this many tokens
    hang_after: int | None = None  # stop sending (connection open) after this many tokens
    text: str | None = None  # the answer; default echoes the last user message
    finish_reason: str = "stop"  # "length" as when max_tokens cuts the answer
    hang_before_headers: bool = False  # take the request, then never answer at all
    stall_after_headers: bool = False  # send the headers (status or 200), then no body ever
    content_type: str | None = None  # with stall_after_headers: instead of the usual one
    keep_alive_only: bool = False  # events with no text, forever: a server that never answers
    flood: bool = False  # text as fast as it can, without end
    once: bool = False  # applies to one request only, across every server sharing it
    used: bool = False


@dataclass
class FakeLLM:
    port: int = field(default_factory=free_port)
    requests: list[dict[str, Any]] = field(default_factory=list)
    tokenize_requests: int = 0
    default: Behaviour = field(default_factory=Behaviour)
    rules: list[tuple[str, Behaviour]] = field(default_factory=list)
    tokenize: bool = True
    probes_trickle: bool = False  # /tokenize and /models answer a byte a second, without end
    disconnects: int = 0  # completions the client walked away from before they ended
    open_streams: int = 0  # completions whose handler is still running
    waiting: int | None = None  # requests /metrics says wait in the queue (None: no /metrics)
    metrics_requests: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self) -> None:
        self.requests.clear()
        self.tokenize_requests = 0
        self.default = Behaviour()
        self.rules.clear()
        self.tokenize = True
        self.probes_trickle = False
        self.disconnects = 0
        self.waiting = None
        self.metrics_requests = 0

    def when(self, substring: str, behaviour: Behaviour) -> None:
        """Questions whose last user message contains substring get this behaviour."""
        self.rules.append((substring, behaviour))

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def start(self) -> None:
        self._call(self._start())

    def stop(self) -> None:
        """The server goes away: connections are refused until start() again."""
        self._call(self._stop())

    def close(self) -> None:
        self.stop()
        self._call(self._cancel_handlers())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_post("/tokenize", self._tokenize)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _cancel_handlers(self) -> None:
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        """vLLM's shape: gauges per model, amid histograms the bot has no use for."""
        self.metrics_requests += 1
        if self.waiting is None:
            return web.Response(status=404)
        lines = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f'vllm:num_requests_running{{engine="0",model_name="stand-in"}} {self.open_streams}.0',
            "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
            "# TYPE vllm:num_requests_waiting gauge",
            f'vllm:num_requests_waiting{{engine="0",model_name="stand-in"}} {self.waiting}.0',
            "# TYPE vllm:e2e_request_latency_seconds histogram",
            'vllm:e2e_request_latency_seconds_bucket{le="1.0",model_name="stand-in"} 3.0',
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def _models(self, request: web.Request) -> web.StreamResponse:
        if self.probes_trickle:
            return await self._trickle(request)
        return web.json_response({"data": [{"id": "stand-in"}]})

    async def _trickle(self, request: web.Request) -> web.StreamResponse:
        """Always a little more, never the end: each read is quick, the whole never comes."""
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b"{")
        for _ in range(3600):
            await asyncio.sleep(0.5)
            if _gone(request):
                break
            with contextlib.suppress(ConnectionError):
                await response.write(b" ")
        return response

    async def _tokenize(self, request: web.Request) -> web.StreamResponse:
        if self.probes_trickle:
            return await self._trickle(request)
        if not self.tokenize:
            return web.Response(status=404)
        self.tokenize_requests += 1
        body = await request.json()
        return web.json_response({"count": len(body["prompt"].split()), "max_model_len": 4096})

    def _behaviour(self, body: dict[str, Any]) -> Behaviour:
        users = [m["content"] for m in body.get("messages", []) if m.get("role") == "user"]
        # the newest paragraph: earlier unanswered questions are merged into the same turn
        last = users[-1].split("\n\n")[-1] if users else ""
        for substring, behaviour in self.rules:
            if substring in last and not (behaviour.once and behaviour.used):
                behaviour.used = True
                return behaviour
        return self.default

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.requests.append(
            {
                "body": body,
                "headers": dict(request.headers),
                "received_at": time.time(),
                "peer": peer,  # one per TCP connection: shows whether clients keep them alive
            }
        )
        behaviour = self._behaviour(body)
        self.open_streams += 1
        try:
            return await self._answer(request, body, behaviour)
        finally:
            self.open_streams -= 1

    async def _answer(
        self, request: web.Request, body: dict[str, Any], behaviour: Behaviour
    ) -> web.StreamResponse:
        if behaviour.hang_before_headers:
            await self._until_gone(request)
            return web.Response()  # never reaches anyone: aiohttp drops it quietly
        if behaviour.stall_after_headers:
            status = behaviour.status or 200
            default_type = "text/event-stream" if status < 400 else "application/json"
            content_type = behaviour.content_type or default_type
            stalled = web.StreamResponse(status=status, headers={"Content-Type": content_type})
            await stalled.prepare(request)
            await self._until_gone(request)
            return stalled
        if behaviour.status is not None:
            return web.Response(
                status=behaviour.status, text=behaviour.error_body, content_type="application/json"
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if behaviour.keep_alive_only or behaviour.flood:
            await self._endless(request, response, behaviour)
            return response
        users = [m["content"] for m in body["messages"] if m["role"] == "user"]
        text = behaviour.text or f"Réponse à « {users[-1] if users else ''} »"
        text = text.replace("{n}", str(len(self.requests)))  # distinct regenerations
        tokens = [word + " " for word in text.split(" ")]
        tokens[-1] = tokens[-1].rstrip()
        await asyncio.sleep(behaviour.first_delay)
        for index, token in enumerate(tokens):
            if behaviour.broken_after is not None and index == behaviour.broken_after:
                await response.write(b"data: {not json\n\n")
                return response
            if behaviour.hang_after is not None and index == behaviour.hang_after:
                await self._until_gone(request)
                return response
            chunk = {"choices": [{"index": 0, "delta": {"content": token}, "finish_reason": None}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if behaviour.token_delay:
                await asyncio.sleep(behaviour.token_delay)
        final = {"choices": [{"index": 0, "delta": {}, "finish_reason": behaviour.finish_reason}]}
        usage = {"choices": [], "usage": {"completion_tokens": len(tokens)}}
        await response.write(f"data: {json.dumps(final)}\n\ndata: {json.dumps(usage)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    async def _endless(
        self, request: web.Request, response: web.StreamResponse, behaviour: Behaviour
    ) -> None:
        """Until the client goes away: empty events now and then, or text as fast as it goes."""
        if behaviour.flood:
            words = [f"mot{i} " for i in range(50)]
            content = {"choices": [{"index": 0, "delta": {"content": "".join(words)}}]}
            chunk = f"data: {json.dumps(content)}\n\n".encode()
            pause = 0.001
        else:
            chunk = f"data: {json.dumps({'choices': []})}\n\n".encode()
            pause = 0.3
        while not _gone(request):
            try:
                await response.write(chunk)
            except ConnectionError:
                break
            await asyncio.sleep(pause)
        self.disconnects += 1

    async def _until_gone(self, request: web.Request, limit_s: float = 3600) -> None:
        for _ in range(int(limit_s / 0.1)):
            if _gone(request):
                self.disconnects += 1
                return
            await asyncio.sleep(0.1)


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()
