"""What the server-backed moderation backends share: one JSON POST bounded in time and size,
and texts bounded before they are sent. A server may be down, slow or hostile; whatever goes
wrong is one ModerationUnavailable whose reason holds neither the text nor the key, and which
says whether the server is down or only refused this one text (a 4xx)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from pydantic import SecretStr

from bot.guard.ports import MAX_CONNECTIONS, ModerationUnavailable
from bot.tls import tls_context

# A verdict is a few bytes and an OpenAI moderation result about 2 KiB: nothing sane comes near.
MAX_RESPONSE_BYTES = 64 * 1024
# A whole Matrix message (bot.core.events.MAX_BODY_CHARS is 20,000) is checked uncut; a longer
# text loses its middle, which keeps each request's cost bounded.
MAX_CHECKED_CHARS = 24_000
ELISION = "\n[…]\n"
# A 4xx refuses one request (a text past the model's context, a payload too large), and someone
# can send that text at will; these two say the server is overwhelmed, which is about them all.
BUSY_STATUSES = frozenset({408, 429})


def api_key(secret: SecretStr | None) -> str | None:
    """The key as sent in a header, which only takes ASCII: refused at start, not at each call."""
    if secret is None:
        return None
    key = secret.get_secret_value()
    if not key.isascii() or not key.isprintable():
        raise ValueError("a moderation api_key must be printable ASCII")
    return key


def client(timeout_s: float, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)),
        limits=httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=4),
        transport=transport,
        verify=tls_context(),
    )


def bounded(text: str, limit: int = MAX_CHECKED_CHARS) -> str:
    """The text, or its start and its end when longer than limit: hostile content placed at
    either end, where instructions and payloads sit, is still seen."""
    if len(text) <= limit:
        return text
    half = (limit - len(ELISION)) // 2
    return text[:half] + ELISION + text[-half:]


async def post_json(
    http: httpx.AsyncClient, url: str, body: dict[str, Any], key: str | None, timeout_s: float
) -> Any:
    """The parsed JSON answer of a 200; ModerationUnavailable for anything else."""
    # compressed answers could expand past the bound inside a single chunk: not accepted
    headers = {"Accept-Encoding": "identity"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        async with asyncio.timeout(timeout_s):
            async with http.stream("POST", url, json=body, headers=headers) as response:
                raw = await _body(response)
    except TimeoutError:
        raise ModerationUnavailable(f"no answer within {timeout_s:g} s") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise ModerationUnavailable(type(exc).__name__) from None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: 64 KiB of nested brackets
        raise ModerationUnavailable("answer is not JSON") from None


async def _body(response: httpx.Response) -> bytes:
    status = response.status_code
    if status != 200:
        refused = 400 <= status < 500 and status not in BUSY_STATUSES
        raise ModerationUnavailable(f"HTTP {status}", server_down=not refused)
    if response.headers.get("content-encoding", "identity").strip().lower() != "identity":
        raise ModerationUnavailable("compressed answer")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        raise ModerationUnavailable(f"answer larger than {MAX_RESPONSE_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():  # identity: the bytes as sent
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise ModerationUnavailable(f"answer larger than {MAX_RESPONSE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class RemoteModerator:
    """What both server backends share: one bounded HTTP client, the route, the key."""

    def __init__(
        self,
        url: str | None,
        route: str,
        key: SecretStr | None,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None,
        setting: str,
    ) -> None:
        if url is None:
            raise ValueError(f"{setting} is not set")
        self.url = f"{url}/{route}"
        self.timeout_s = timeout_s
        self.http = client(timeout_s, transport)
        self.key = api_key(key)

    async def ask(self, body: dict[str, Any]) -> Any:
        return await post_json(self.http, self.url, body, self.key, self.timeout_s)

    async def aclose(self) -> None:
        await self.http.aclose()
