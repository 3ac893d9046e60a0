"""A stand-in OpenAI-compatible server over real HTTP: streams SSE, records, misbehaves."""

from __future__ import annotations

import asyncio
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

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "stand-in"}]})

    async def _tokenize(self, request: web.Request) -> web.Response:
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
        if behaviour.status is not None:
            return web.Response(
                status=behaviour.status, text=behaviour.error_body, content_type="application/json"
            )
        users = [m["content"] for m in body["messages"] if m["role"] == "user"]
        text = behaviour.text or f"Réponse à « {users[-1] if users else ''} »"
        text = text.replace("{n}", str(len(self.requests)))  # distinct regenerations
        tokens = [word + " " for word in text.split(" ")]
        tokens[-1] = tokens[-1].rstrip()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await asyncio.sleep(behaviour.first_delay)
        for index, token in enumerate(tokens):
            if behaviour.broken_after is not None and index == behaviour.broken_after:
                await response.write(b"data: {not json\n\n")
                return response
            if behaviour.hang_after is not None and index == behaviour.hang_after:
                await asyncio.sleep(3600)
            chunk = {"choices": [{"index": 0, "delta": {"content": token}, "finish_reason": None}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if behaviour.token_delay:
                await asyncio.sleep(behaviour.token_delay)
        final = {"choices": [{"index": 0, "delta": {}, "finish_reason": behaviour.finish_reason}]}
        usage = {"choices": [], "usage": {"completion_tokens": len(tokens)}}
        await response.write(f"data: {json.dumps(final)}\n\ndata: {json.dumps(usage)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response
