"""The wire format of OpenAI-compatible servers: chat completion chunks, error responses,
and the Prometheus page of a server's queue; each read bounded, nothing a server says trusted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum

import aiohttp

from bot.errors import TransientError
from bot.llm.sse import EventTooLarge

DRAIN_TIMEOUT_S = 1.0
ERROR_BODY_BYTES = 4096
MAX_WAITING = 100_000  # a hostile server's count is bounded
MAX_TOKENS_COUNTED = 10_000_000  # more than any answer and prompt: a server's count beyond is not
METRICS_BODY_BYTES = 1024 * 1024  # vLLM's /metrics, histograms included, is about 100 kB
# requests a server holds in its own queue, not yet generating: vLLM's, llama.cpp's
# (Text Generation Inference's too)
WAITING_METRICS = ("vllm:num_requests_waiting", "llamacpp:requests_deferred", "tgi_queue_size")
# name, optional labels, a value, an optional timestamp
GAUGE_LINE = re.compile(
    r"(?P<name>[a-z_:]+)(?:\{[^{}\n]*\})?[ \t]+(?P<value>[^ \t]+)(?:[ \t]+-?\d+)?[ \t]*"
)
MAX_GAUGE_LINE_CHARS = 512
MAX_GAUGE_LINES = 64


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


@dataclass
class StreamResult:
    """Filled in while a stream runs."""

    finish_reason: str | None = None
    tokens: int = 0
    prompt_tokens: int = 0  # as the server's usage chunk says (0 when it sends none)
    first_token_at: float | None = None


async def raise_for_status(response: aiohttp.ClientResponse) -> None:
    """Called under the first-token time-out: the error body is read within it, and only its
    start (a server may send an endless one)."""
    if 300 <= response.status < 400:
        raise LLMError(Failure.BAD_RESPONSE, f"redirected (HTTP {response.status}), not followed")
    if response.status < 400:
        content_type = response.headers.get("content-type", "")
        if "text/event-stream" not in content_type:
            # the body is not needed: closing the response drops it
            raise LLMError(Failure.BAD_RESPONSE, f"expected an event stream, got {content_type!r}")
        return
    detail = (await start_of(response, ERROR_BODY_BYTES))[:300]
    lowered = detail.lower()
    if response.status in (400, 413) and ("context" in lowered or "too long" in lowered):
        raise LLMError(Failure.CONTEXT_TOO_LONG, detail)
    if response.status >= 500:
        raise LLMError(Failure.SERVER, f"HTTP {response.status}")
    raise LLMError(Failure.REJECTED, f"HTTP {response.status}: {detail}")


async def start_of(response: aiohttp.ClientResponse, limit: int) -> str:
    data = bytearray()
    async for chunk in response.content.iter_any():
        data += chunk
        if len(data) >= limit:
            break
    return bytes(data[:limit]).decode("utf-8", "replace")


def delta(data: str, result: StreamResult) -> str:
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


async def drain(events: AsyncIterator[list[str]]) -> None:
    """Read the stream to its end after [DONE]: a connection is reused only once its response
    has been read whole; without this every answer opened a new connection to the model."""
    with contextlib.suppress(TimeoutError, aiohttp.ClientError, EventTooLarge):
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            async for _ in events:
                pass


def waiting_requests(exposition: str) -> int | None:
    """The waiting requests a Prometheus text exposition reports, if it has the metric.

    Read line by line with a strict pattern, not prometheus_client's parser: a hostile server's
    label values full of escaped quotes take that parser quadratic time, on the event loop. A
    waiting gauge line is short (name, a few labels, a number): longer lines are not one."""
    total = 0.0
    found = False
    lines = 0
    for line in exposition.splitlines():
        if not line.startswith(WAITING_METRICS):
            continue
        lines += 1
        if lines > MAX_GAUGE_LINES:
            break
        match = GAUGE_LINE.fullmatch(line) if len(line) <= MAX_GAUGE_LINE_CHARS else None
        if match is None or match["name"] not in WAITING_METRICS:
            continue
        try:
            value = float(match["value"])
        except ValueError:
            continue
        if math.isfinite(value):
            total += min(max(value, 0.0), MAX_WAITING)
            found = True
    return min(int(total), MAX_WAITING) if found else None
