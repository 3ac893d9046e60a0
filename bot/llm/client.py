"""OpenAI-compatible chat client (vLLM, llama.cpp, TGI, Ollama): streaming, token counts.

It speaks HTTP through aiohttp, already there for matrix-nio, rather than httpx: a streamed
answer arrives as one HTTP chunk per token, and httpx hands each chunk up through five layers of
pure-Python stream objects and h11, while aiohttp parses in C and hands over everything received
since the last read at once. bench/model_stream.py, 50 answers of 40 tokens at once: 9.7 ms of
CPU per answer through httpx, 1.6 ms here."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from bot.config import LLMSettings
from bot.config_urls import shown
from bot.llm.sse import EventTooLarge, data_batches
from bot.llm.wire import (
    MAX_TOKENS_COUNTED,
    METRICS_BODY_BYTES,
    Failure,
    LLMError,
    StreamResult,
    delta,
    drain,
    raise_for_status,
    start_of,
    waiting_requests,
)

log = logging.getLogger(__name__)

# Without a /tokenize endpoint: about 3 characters a token for French and English text with
# Llama-3-style tokenizers (it errs towards counting too many), plus the chat template's
# per-message header.
CHARS_PER_TOKEN = 3.0
TOKENS_PER_MESSAGE = 4
SSE_HEADERS = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
PROBE_BODY_BYTES = 64 * 1024  # what /models says
# /tokenize answers a count, or the list of token ids (vLLM, llama.cpp): 16,000 ids for the
# longest Matrix message
TOKENIZE_BODY_BYTES = 1024 * 1024
TOKEN_CACHE_ENTRIES = 4096
# connections beyond the model slots: token counts and probes, a few at a time
SPARE_CONNECTIONS = 16
# a connection the server dropped, or an answer it broke off midway
UNREACHABLE_ERRORS = (
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    aiohttp.ClientResponseError,  # the status line or headers made no sense
)


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_p: float
    max_tokens: int

    def as_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}


# failures another replica may not have: worth trying the next server
FAILOVER_KINDS = (Failure.UNREACHABLE, Failure.TIMEOUT, Failure.SERVER, Failure.BAD_RESPONSE)
RECHECK_S = 10.0


@dataclass
class Backend:
    """One model server (a replica); a failed one is skipped for RECHECK_S, then tried again."""

    base_url: str
    failed_at: float | None = None
    has_metrics: bool | None = None  # unknown until its /metrics was read once

    @property
    def usable(self) -> bool:
        return self.failed_at is None or time.monotonic() - self.failed_at > RECHECK_S


class ChatModel:
    def __init__(self, settings: LLMSettings) -> None:
        self.settings = settings
        self.backends = [Backend(url) for url in settings.base_urls or [settings.base_url]]
        self._turn = 0
        self._headers = {}
        if settings.api_key is not None:
            self._headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._tokenize_available: bool | None = None if settings.tokenize == "auto" else False
        # keyed by a digest: 4,096 messages of up to 64 KiB each are not kept whole
        self._token_cache: OrderedDict[bytes, int] = OrderedDict()

    @property
    def http(self) -> aiohttp.ClientSession:
        """Made at first use, inside the running event loop, as aiohttp wants. Read time-outs
        are enforced below, around the headers, the first token and each chunk. Redirects are
        never followed (every request below says so): a conversation is sent to the configured
        server or to none."""
        if self._closed:
            raise aiohttp.ClientConnectionError("the model client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=self.settings.connect_timeout_s,
                    sock_connect=self.settings.connect_timeout_s,
                ),
                connector=aiohttp.TCPConnector(
                    limit=self.settings.max_concurrent_requests + SPARE_CONNECTIONS
                ),
            )
        return self._session

    async def aclose(self) -> None:
        self._closed = True  # a check still under way must not open a new session
        if self._session is not None:
            await self._session.close()
            self._session = None

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
                    log.warning("model server %s failed: %s", shown(backend.base_url), exc.kind)
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
                    url = f"{backend.base_url}/models"
                    async with self.http.get(url, allow_redirects=False) as response:
                        await start_of(response, PROBE_BODY_BYTES)  # a whole answer, in time
                        return response.status < 500
            except (aiohttp.ClientError, TimeoutError):
                return False

        answers = await asyncio.gather(*(probe(b) for b in self.backends))
        return {b.base_url: ok for b, ok in zip(self.backends, answers, strict=True)}

    async def server_waiting(self) -> int | None:
        """Requests waiting in the model servers' own queues, summed over the servers, from
        their Prometheus /metrics; None when no server says (none has them, or none answered)."""
        asked = [b for b in self.backends if b.has_metrics is not False]
        if self._closed or not asked:
            return None
        counts = await asyncio.gather(*(self._waiting_at(b) for b in asked))
        known = [count for count in counts if count is not None]
        return sum(known) if known else None

    async def _waiting_at(self, backend: Backend) -> int | None:
        root = backend.base_url.removesuffix("/v1")
        try:
            async with asyncio.timeout(self._probe_timeout_s):
                async with self.http.get(f"{root}/metrics", allow_redirects=False) as response:
                    status = response.status
                    body = await start_of(response, METRICS_BODY_BYTES)
        except (aiohttp.ClientError, TimeoutError):
            return None
        if status in (404, 405, 501):
            if backend.has_metrics is None:
                backend.has_metrics = False
                log.info("%s has no /metrics: the bot's own queue sets its pace", backend.base_url)
            return None
        waiting = waiting_requests(body)
        if waiting is not None:
            backend.has_metrics = True
        return waiting

    @property
    def _probe_timeout_s(self) -> float:
        # a server sending a byte now and then would hold a probe (and the answer waiting on a
        # token count) for ever: the whole exchange is bounded, not each read
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
                            self.http.post(
                                url, json=body, headers=SSE_HEADERS, allow_redirects=False
                            )
                        )
                        await raise_for_status(response)
                except TimeoutError:
                    raise LLMError(
                        Failure.TIMEOUT, "no response within first_token_timeout_s"
                    ) from None
                deltas = await stack.enter_async_context(
                    contextlib.aclosing(
                        self._deltas(
                            data_batches(response.content.iter_any()),
                            result,
                            first_deadline,
                            deadline,
                        )
                    )
                )
                async for text in deltas:
                    yield text
        except LLMError:
            raise
        except UNREACHABLE_ERRORS as exc:
            raise LLMError(Failure.UNREACHABLE, type(exc).__name__) from None
        except (aiohttp.ClientError, EventTooLarge) as exc:
            raise LLMError(Failure.BAD_RESPONSE, f"{type(exc).__name__}: {exc}") from None

    async def _deltas(
        self,
        batches: AsyncIterator[list[str]],
        result: StreamResult,
        first_deadline: float,
        deadline: float,
    ) -> AsyncGenerator[str, None]:
        """The text of each read (every event received since the last one, parsed in one
        pass), each read waited for no longer than the time-outs allow."""
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
                    batch = await anext(batches)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise LLMError(Failure.TIMEOUT, "no text within the time-outs") from None
            texts: list[str] = []
            try:
                for data in batch:
                    if data.strip() == "[DONE]":
                        if texts:
                            yield "".join(texts)
                        await drain(batches)
                        return
                    text = delta(data, result)
                    if text:
                        if result.first_token_at is None:
                            result.first_token_at = time.time()
                        texts.append(text)
            except LLMError:
                if texts:  # what came before the broken event is still the answer's
                    yield "".join(texts)
                raise
            if texts:
                yield "".join(texts)

    async def count_tokens(self, messages: list[dict[str, str]]) -> int:
        counts = await asyncio.gather(*(self._count(m["content"]) for m in messages))
        return sum(counts) + TOKENS_PER_MESSAGE * len(messages)

    async def _count(self, text: str) -> int:
        key = hashlib.blake2b(text.encode(), digest_size=16).digest()
        cached = self._token_cache.get(key)
        if cached is not None:
            self._token_cache.move_to_end(key)
            return cached
        count = await self._tokenize(text) if self._tokenize_available is not False else None
        if count is None:
            return estimate_tokens(text)
        self._token_cache[key] = count
        if len(self._token_cache) > TOKEN_CACHE_ENTRIES:
            self._token_cache.popitem(last=False)
        return count

    async def _tokenize(self, text: str) -> int | None:
        """vLLM and llama.cpp serve /tokenize beside /v1; remember when a server has none."""
        root = self._candidates(rotate=False)[0].base_url.removesuffix("/v1")
        try:
            async with asyncio.timeout(self._probe_timeout_s):
                async with self.http.post(
                    f"{root}/tokenize",
                    json={"model": self.settings.model, "prompt": text, "content": text},
                    allow_redirects=False,
                ) as response:
                    status = response.status
                    body = await start_of(response, TOKENIZE_BODY_BYTES)
        except (aiohttp.ClientError, TimeoutError):
            return None
        if status in (404, 405, 501):
            self._tokenize_available = False
            log.info("model server has no /tokenize; estimating token counts")
            return None
        try:
            data = json.loads(body)
            count = int(data["count"] if "count" in data else len(data["tokens"]))
        except (ValueError, KeyError, TypeError, OverflowError):  # 1e999, NaN, nonsense
            return None
        self._tokenize_available = True
        return min(max(0, count), MAX_TOKENS_COUNTED)


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)
