"""OpenAI-compatible chat client (vLLM, llama.cpp, TGI, Ollama): streaming, token counts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx

from bot.config import LLMSettings
from bot.errors import TransientError
from bot.llm.sse import EventTooLarge, data_events

log = logging.getLogger(__name__)

# Without a /tokenize endpoint: about 3 characters a token for French and English text with
# Llama-3-style tokenizers (it errs towards counting too many), plus the chat template's
# per-message header.
CHARS_PER_TOKEN = 3.0
TOKENS_PER_MESSAGE = 4
DRAIN_TIMEOUT_S = 1.0
SSE_HEADERS = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
ERROR_BODY_BYTES = 4096


class Failure(StrEnum):
    """How a model server failed: names the user notice (error.<kind>) and the metric label."""

    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    SERVER = "server"
    CONTEXT_TOO_LONG = "context_too_long"
    BAD_RESPONSE = "bad_response"
    REJECTED = "rejected"


class LLMError(TransientError):
    """The model server failed; kind says how, for the user notice and the stored record."""

    def __init__(self, kind: Failure, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_p: float
    max_tokens: int

    def as_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}


@dataclass
class StreamResult:
    """Filled in while a stream runs."""

    finish_reason: str | None = None
    tokens: int = 0
    prompt_tokens: int = 0  # as the server's usage chunk says (0 when it sends none)
    first_token_at: float | None = None


# failures another replica may not have: worth trying the next server
FAILOVER_KINDS = (Failure.UNREACHABLE, Failure.TIMEOUT, Failure.SERVER, Failure.BAD_RESPONSE)
RECHECK_S = 10.0
MAX_TOKENS_COUNTED = 10_000_000  # more than any answer and prompt: a server's count beyond is not


@dataclass
class Backend:
    """One model server (a replica); a failed one is skipped for RECHECK_S, then tried again."""

    base_url: str
    failed_at: float | None = None

    @property
    def usable(self) -> bool:
        return self.failed_at is None or time.monotonic() - self.failed_at > RECHECK_S


class ChatModel:
    def __init__(self, settings: LLMSettings, http: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self.backends = [Backend(url) for url in settings.base_urls or [settings.base_url]]
        self._turn = 0
        headers = {}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        # Read time-outs are enforced below, around the headers, the first token and each
        # chunk (asyncio time-outs: httpx's bound each read, not the whole response).
        # one kept-alive connection per model slot (plus token counting): httpx keeps 20 by
        # default, so with more slots each answer beyond them opened a new connection
        kept = settings.max_concurrent_requests + 4
        self.http = http or httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(None, connect=settings.connect_timeout_s),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=kept),
        )
        self._tokenize_available: bool | None = None if settings.tokenize == "auto" else False
        self._token_cache: OrderedDict[str, int] = OrderedDict()

    async def aclose(self) -> None:
        await self.http.aclose()

    @property
    def model(self) -> str:
        return self.settings.model

    def _candidates(self, rotate: bool = True) -> list[Backend]:
        """Usable servers in turn (spreading load), then failed ones as a last resort."""
        if rotate:
            self._turn = (self._turn + 1) % len(self.backends)
        ordered = self.backends[self._turn :] + self.backends[: self._turn]
        return [b for b in ordered if b.usable] + [b for b in ordered if not b.usable]

    def can_fail_over(self) -> bool:
        """Another server is worth one try for an answer that broke midway, even one that failed
        recently: each try is bounded by the time-outs, and the tries by the number of servers."""
        return len(self.backends) > 1

    async def stream(
        self, messages: list[dict[str, str]], sampling: Sampling, result: StreamResult
    ) -> AsyncGenerator[str, None]:
        """Yield text deltas; a server failing before its first token is replaced by the next.

        A failure after text was produced is raised (LLMError) for the caller to decide. Close
        the generator (contextlib.aclosing) to drop the request and its connection at once."""
        error: LLMError | None = None
        for backend in self._candidates():
            try:
                # closed with this generator, not whenever the garbage collector gets to it
                async with contextlib.aclosing(
                    self._stream_from(backend, messages, sampling, result)
                ) as parts:
                    async for text in parts:
                        yield text
                backend.failed_at = None
                return
            except LLMError as exc:
                if exc.kind in FAILOVER_KINDS:
                    backend.failed_at = time.monotonic()
                    log.warning("model server %s failed: %s", backend.base_url, exc.kind)
                if result.first_token_at is not None or exc.kind not in FAILOVER_KINDS:
                    raise
                error = exc
        assert error is not None
        raise error

    async def reachable(self) -> dict[str, bool]:
        """Probe every server's /models (for health checks)."""

        async def probe(backend: Backend) -> bool:
            try:
                async with asyncio.timeout(self._probe_timeout_s):
                    response = await self.http.get(
                        f"{backend.base_url}/models", timeout=self.settings.connect_timeout_s
                    )
            except (httpx.HTTPError, TimeoutError):
                return False
            return response.status_code < 500

        answers = await asyncio.gather(*(probe(b) for b in self.backends))
        return {b.base_url: ok for b, ok in zip(self.backends, answers, strict=True)}

    @property
    def _probe_timeout_s(self) -> float:
        # httpx's own time-outs bound each read, not the whole: a server sending a byte now and
        # then would hold a probe (and the answer waiting on a token count) for ever
        return 2 * self.settings.connect_timeout_s

    async def _stream_from(
        self,
        backend: Backend,
        messages: list[dict[str, str]],
        sampling: Sampling,
        result: StreamResult,
    ) -> AsyncGenerator[str, None]:
        body = {
            "model": self.settings.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            **sampling.as_dict(),
        }
        url = f"{backend.base_url}/chat/completions"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.total_timeout_s
        # one bound for the headers, an error body and the first token together: a server
        # that takes the request and then says nothing must not hold a model slot for ever
        first_deadline = min(deadline, loop.time() + self.settings.first_token_timeout_s)
        try:
            async with contextlib.AsyncExitStack() as stack:
                try:
                    async with asyncio.timeout_at(first_deadline):
                        response = await stack.enter_async_context(
                            self.http.stream("POST", url, json=body, headers=SSE_HEADERS)
                        )
                        await _raise_for_status(response)
                except TimeoutError:
                    raise LLMError(
                        Failure.TIMEOUT, "no response within first_token_timeout_s"
                    ) from None
                deltas = await stack.enter_async_context(
                    contextlib.aclosing(
                        self._deltas(
                            data_events(response.aiter_bytes()), result, first_deadline, deadline
                        )
                    )
                )
                async for text in deltas:
                    yield text
        except LLMError:
            raise
        except httpx.TimeoutException as exc:
            raise LLMError(Failure.TIMEOUT, type(exc).__name__) from None
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise LLMError(Failure.UNREACHABLE, type(exc).__name__) from None
        except (httpx.HTTPError, EventTooLarge) as exc:
            raise LLMError(Failure.BAD_RESPONSE, f"{type(exc).__name__}: {exc}") from None

    async def _deltas(
        self,
        events: AsyncIterator[str],
        result: StreamResult,
        first_deadline: float,
        deadline: float,
    ) -> AsyncGenerator[str, None]:
        """Text deltas, each waited for no longer than the time-outs allow."""
        loop = asyncio.get_running_loop()
        while True:
            if result.first_token_at is None:
                # events without text (keep-alives, empty deltas) do not restart this clock
                until = first_deadline
            else:
                until = min(deadline, loop.time() + self.settings.chunk_timeout_s)
            if until <= loop.time():
                raise LLMError(Failure.TIMEOUT, "the answer went over its time-outs")
            try:
                async with asyncio.timeout_at(until):
                    data = await anext(events)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise LLMError(Failure.TIMEOUT, "no text within the time-outs") from None
            if data.strip() == "[DONE]":
                await _drain(events)
                return
            text = _delta(data, result)
            if text:
                if result.first_token_at is None:
                    result.first_token_at = time.time()
                yield text

    async def count_tokens(self, messages: list[dict[str, str]]) -> int:
        counts = await asyncio.gather(*(self._count(m["content"]) for m in messages))
        return sum(counts) + TOKENS_PER_MESSAGE * len(messages)

    async def _count(self, text: str) -> int:
        cached = self._token_cache.get(text)
        if cached is not None:
            self._token_cache.move_to_end(text)
            return cached
        count = await self._tokenize(text) if self._tokenize_available is not False else None
        if count is None:
            return estimate_tokens(text)
        self._token_cache[text] = count
        if len(self._token_cache) > 4096:
            self._token_cache.popitem(last=False)
        return count

    async def _tokenize(self, text: str) -> int | None:
        """vLLM and llama.cpp serve /tokenize beside /v1; remember when a server has none."""
        root = self._candidates(rotate=False)[0].base_url.removesuffix("/v1")
        try:
            async with asyncio.timeout(self._probe_timeout_s):
                response = await self.http.post(
                    f"{root}/tokenize",
                    json={"model": self.settings.model, "prompt": text, "content": text},
                    timeout=self.settings.connect_timeout_s,
                )
        except (httpx.HTTPError, TimeoutError):
            return None
        if response.status_code in (404, 405, 501):
            self._tokenize_available = False
            log.info("model server has no /tokenize; estimating token counts")
            return None
        try:
            data = response.json()
            count = data["count"] if "count" in data else len(data["tokens"])
        except (ValueError, KeyError, TypeError):
            return None
        self._tokenize_available = True
        return int(count)


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


async def _raise_for_status(response: httpx.Response) -> None:
    """Called under the first-token time-out: the error body is read within it, and only its
    start (a server may send an endless one)."""
    if response.status_code < 400:
        content_type = response.headers.get("content-type", "")
        if "text/event-stream" not in content_type:
            # the body is not needed: closing the response drops it
            raise LLMError(Failure.BAD_RESPONSE, f"expected an event stream, got {content_type!r}")
        return
    detail = await _start_of(response)
    lowered = detail.lower()
    if response.status_code in (400, 413) and ("context" in lowered or "too long" in lowered):
        raise LLMError(Failure.CONTEXT_TOO_LONG, detail)
    if response.status_code >= 500:
        raise LLMError(Failure.SERVER, f"HTTP {response.status_code}")
    raise LLMError(Failure.REJECTED, f"HTTP {response.status_code}: {detail}")


async def _start_of(response: httpx.Response) -> str:
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= ERROR_BODY_BYTES:
            break
    return bytes(data[:ERROR_BODY_BYTES]).decode("utf-8", "replace")[:300]


def _delta(data: str, result: StreamResult) -> str:
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError:
        raise LLMError(Failure.BAD_RESPONSE, "chunk is not JSON") from None
    if not isinstance(chunk, dict):
        raise LLMError(Failure.BAD_RESPONSE, "chunk is not an object")
    if "error" in chunk:
        message = json.dumps(chunk["error"])[:300]
        kind = Failure.CONTEXT_TOO_LONG if "context" in message.lower() else Failure.SERVER
        raise LLMError(kind, message)
    usage = chunk.get("usage")
    # a hostile server's counts are clamped: negative ones break counters, huge ones SQLite
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        result.tokens = min(max(0, usage["completion_tokens"]), MAX_TOKENS_COUNTED)
    if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
        result.prompt_tokens = min(max(0, usage["prompt_tokens"]), MAX_TOKENS_COUNTED)
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        raise LLMError(Failure.BAD_RESPONSE, "chunk has no choices")
    if not choices:
        return ""  # the usage-only chunk at the end
    choice = choices[0]
    if not isinstance(choice, dict):
        raise LLMError(Failure.BAD_RESPONSE, "choice is not an object")
    if choice.get("finish_reason"):
        result.finish_reason = choice["finish_reason"]
    delta = choice.get("delta") or {}
    content = delta.get("content") if isinstance(delta, dict) else None
    if content is None:
        return ""
    if not isinstance(content, str):
        raise LLMError(Failure.BAD_RESPONSE, "delta content is not text")
    if not usage:
        result.tokens += 1
    return content


async def _drain(events: AsyncIterator[str]) -> None:
    """Read the stream to its end after [DONE]: httpx reuses a connection only once its response
    has been read whole; without this every answer opened a new connection to the model."""
    with contextlib.suppress(TimeoutError, httpx.HTTPError, EventTooLarge):
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            async for _ in events:
                pass
