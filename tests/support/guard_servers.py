"""Stand-in moderation servers over real HTTP: a Llama Guard 3 behind /v1/chat/completions and
an OpenAI-style /v1/moderations. Each flags the texts holding one of its trigger words, records
every request, and misbehaves on demand.

Each runs its own event loop in a thread of the test process, like FakeLLM: it keeps answering
while a test blocks (a bot subprocess asking it while the test waits on a command), and async
and plain tests alike can use it. `async with StandInLlamaGuard() as guard:` or start()/close().
Modes (set_mode): normal; down (connections refused: the site is stopped); error (HTTP 503);
slow (delay_s before the normal answer); garbage (a well-formed answer saying "I cannot help");
not_json; huge (the normal answer padded to 200 KiB, sent without a length)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
from collections.abc import AsyncIterator, Coroutine
from typing import Any, Literal, Self

import pytest
from aiohttp import web

from tests.support.synapse import free_port

Mode = Literal["normal", "down", "error", "slow", "garbage", "not_json", "huge"]
HUGE_BYTES = 200 * 1024
GARBAGE = "I cannot help with that."
LLAMA_GUARD_TASK = "Task: Check if there is unsafe content"
OPENAI_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
    "illicit/violent", "self-harm", "self-harm/instructions", "self-harm/intent", "sexual",
    "sexual/minors", "violence", "violence/graphic",
)  # fmt: skip


class _StandIn:
    """One POST route on 127.0.0.1, served from its own thread."""

    route = ""

    def __init__(self, triggers: dict[str, str] | None = None, delay_s: float = 10.0) -> None:
        self.port = free_port()
        self.triggers = dict(triggers or {})  # word (any case) -> category it flags
        self.requests: list[dict[str, Any]] = []  # JSON bodies, in order
        self.headers: list[dict[str, str]] = []  # their headers, same order
        self.mode: Mode = "normal"
        self.delay_s = delay_s
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, daemon=True)
        self._thread.start()
        self._call(self._serve())

    def close(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._call(self._unserve())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = self._thread = None

    def set_mode(self, mode: Mode, delay_s: float | None = None) -> None:
        """Takes effect for the next request; down stops listening, any other mode listens."""
        if delay_s is not None:
            self.delay_s = delay_s
        self.mode = mode
        self._call(self._unserve() if mode == "down" else self._serve())

    def reset(self) -> None:
        self.requests.clear()
        self.headers.clear()
        self.set_mode("normal")

    def flagged(self, text: str) -> list[str]:
        """The categories whose trigger words the text holds, each once, in trigger order."""
        folded = text.casefold()
        found = [category for word, category in self.triggers.items() if word.casefold() in folded]
        return list(dict.fromkeys(found))

    async def __aenter__(self) -> Self:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.close)

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None, "start() first"
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _serve(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_post(self.route, self._handle)
        # handler_cancellation: a slow answer ends when its client walks away
        runner = web.AppRunner(app, shutdown_timeout=0.5, handler_cancellation=True)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True).start()
        self._runner = runner

    async def _unserve(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=400, text="not JSON")
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        mode = self.mode
        if mode == "slow":
            await asyncio.sleep(self.delay_s)
        if mode == "error":
            return web.json_response({"error": {"message": "stand-in overloaded"}}, status=503)
        if mode == "not_json":
            return web.Response(text='{"choices": [', content_type="application/json")
        if mode == "huge":
            return await _huge(request, self._answer(body))
        if mode == "garbage":
            return web.json_response(self._garbage(body))
        return web.json_response(self._answer(body))

    def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _garbage(self, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


async def _huge(request: web.Request, answer: dict[str, Any]) -> web.StreamResponse:
    """The normal answer padded with JSON whitespace far past any bound, chunked so no length
    warns the client beforehand: only its size is wrong with it."""
    text = json.dumps(answer).encode()
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):
        await response.write(text[:-1])
        for _ in range(HUGE_BYTES // 8192):
            await response.write(b" " * 8192)
        await response.write(text[-1:])
    return response


class StandInLlamaGuard(_StandIn):
    """Llama Guard 3's output format: "safe", or "unsafe" and a line of comma-joined codes.
    It judges the last message or, when that is a task prompt the bot wrote, the last turn of
    the conversation inside it. Triggers map words to S-codes: {"grenade": "S9"}."""

    route = "/v1/chat/completions"

    def judged_text(self, body: dict[str, Any]) -> str:
        messages = body.get("messages")
        last = messages[-1] if isinstance(messages, list) and messages else {}
        content = last.get("content") if isinstance(last, dict) else None
        if not isinstance(content, str):
            return ""
        return last_turn(content) if content.startswith(LLAMA_GUARD_TASK) else content

    def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
        codes = self.flagged(self.judged_text(body))
        return self._completion(body, "unsafe\n" + ",".join(codes) if codes else "safe")

    def _garbage(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._completion(body, GARBAGE)

    def _completion(self, body: dict[str, Any], content: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-standin-{next(self._ids)}",
            "object": "chat.completion",
            "model": body.get("model", "stand-in"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        }


def last_turn(prompt: str) -> str:
    """The turn a Llama Guard task prompt asks about: the last User or Agent one."""
    role = "Agent" if "in 'Agent' messages" in prompt else "User"
    start, end = prompt.find("<BEGIN CONVERSATION>"), prompt.rfind("<END CONVERSATION>")
    conversation = prompt[start:end] if 0 <= start < end else prompt
    return conversation.rsplit(f"\n\n{role}: ", 1)[-1]


class StandInModerations(_StandIn):
    """OpenAI's /v1/moderations answer shape, one result per input. Triggers map words to
    OpenAI's category names: {"grenade": "violence"}."""

    route = "/v1/moderations"

    def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
        given = body.get("input")
        inputs = given if isinstance(given, list) else [given]
        texts = [text if isinstance(text, str) else "" for text in inputs]
        return {
            "id": f"modr-standin-{next(self._ids)}",
            "model": body.get("model", "stand-in"),
            "results": [self._result(text) for text in texts],
        }

    def _result(self, text: str) -> dict[str, Any]:
        flagged = self.flagged(text)
        names = dict.fromkeys([*OPENAI_CATEGORIES, *self.triggers.values()])
        return {
            "flagged": bool(flagged),
            "categories": {name: name in flagged for name in names},
            "category_scores": {name: 0.98 if name in flagged else 0.001 for name in names},
        }

    def _garbage(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"id": f"modr-standin-{next(self._ids)}", "results": [{"flagged": GARBAGE}]}


@pytest.fixture
async def llama_guard_server() -> AsyncIterator[StandInLlamaGuard]:
    async with StandInLlamaGuard() as server:
        yield server


@pytest.fixture
async def moderations_server() -> AsyncIterator[StandInModerations]:
    async with StandInModerations() as server:
        yield server
