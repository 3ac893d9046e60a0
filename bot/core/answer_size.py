"""An answer within what one Matrix event can carry: kept as it streams in, measured as the
homeserver will count it, and cut to fit when it must be."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, Protocol

from bot.core.ports import SendRefused
from bot.core.render import edit_content

# Homeservers refuse an event over 64 KiB (M_TOO_LARGE), counted on the whole event: room for
# what the homeserver adds (ids, hashes, signatures, auth and prev events) is kept aside, and in
# an encrypted room the content travels as the base64 of its JSON, 4/3 as long.
MAX_EVENT_BYTES = 65_536
ENVELOPE_BYTES = 4_096
CONTENT_BYTES = (MAX_EVENT_BYTES - ENVELOPE_BYTES) * 3 // 4 - 512
# An edit carries its text at least twice (body and m.new_content.body): beyond this many
# bytes of text, no edit can carry it.
TEXT_BYTES = CONTENT_BYTES // 2
# Rendering Markdown takes about 5 ms per kB: longer texts are rendered off the event loop.
RENDER_OFF_LOOP_CHARS = 2_000
LONGEST_EVENT_ID = "$" + "x" * 254  # the spec's limit: 255 bytes


class Oversized(SendRefused):
    """The event would be over the size limit: never sent, as it could only be refused."""


class TextView(Protocol):
    """Text that is worked out only when read: what a send shows of an answer so far."""

    def text(self) -> str: ...


class AnswerText:
    """An answer as it streams in, kept as its deltas and joined only when it is read.

    Adding each delta to the text so far copied the whole text every time: quadratic in its
    length, enough for an endless stream of tiny deltas to hold the event loop. Past TEXT_BYTES
    the rest is dropped (`full`): no event could carry it."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self.size = 0  # UTF-8 bytes so far
        self.full = False
        self.has_text = False  # more than white space

    def add(self, delta: str) -> None:
        if self.full or not delta:
            return
        encoded = delta.encode()
        if self.size + len(encoded) > TEXT_BYTES:
            self.full = True
            encoded = encoded[: TEXT_BYTES - self.size]
            delta = encoded.decode("utf-8", "ignore")
        self._parts.append(delta)
        self.size += len(encoded)
        if not self.has_text and not delta.isspace():
            self.has_text = True

    def text(self) -> str:
        if len(self._parts) > 1:
            self._parts = ["".join(self._parts)]  # the next read joins only what came since
        return self._parts[0].strip() if self._parts else ""


def content_bytes(content: dict[str, Any]) -> int:
    """At least what the event's content weighs on the wire (ASCII-escaped JSON, as nio sends
    it and encrypts it), and in the homeserver's canonical JSON."""
    return len(json.dumps(content, separators=(",", ":")))


def fits(text: str, mention: str | None) -> bool:
    """Whether an edit carrying text (the largest event an answer makes) stays in one event."""
    content = edit_content(LONGEST_EVENT_ID, text, mention=mention)
    return content_bytes(content) <= CONTENT_BYTES


def fit_to_event(text: str, answer: str, marker: str, mention: str | None) -> str:
    """text if it fits in one event; else the longest start of answer found that fits with the
    marker after it. CPU-bound for long texts: run it in a thread."""
    if fits(text, mention):
        return text

    def cut(length: int) -> str:
        start = answer[:length].rstrip()
        return f"{start}\n\n{marker}" if start else marker

    # each character is at least a byte in each of the body's two copies; a cut within 1.5 %
    # of the longest is as good, and spares renderings
    low, high = 0, min(len(answer), TEXT_BYTES)
    while high - low > max(16, high // 64):
        middle = (low + high + 1) // 2
        if fits(cut(middle), mention):
            low = middle
        else:
            high = middle - 1
    return cut(low)


async def fit_off_loop(text: str, answer: str, marker: str, mention: str | None) -> str:
    """fit_to_event, in a thread when the text is long enough for rendering it to hold the loop."""
    if len(text) > RENDER_OFF_LOOP_CHARS:
        return await asyncio.to_thread(fit_to_event, text, answer, marker, mention)
    return fit_to_event(text, answer, marker, mention)


async def render_within(text: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """An event's content, never over the size limit (Oversized otherwise); a long text is
    rendered off the event loop."""
    if len(text) > RENDER_OFF_LOOP_CHARS:
        content, size = await asyncio.to_thread(_measured, build)
    else:
        content, size = _measured(build)
    if size > CONTENT_BYTES:
        raise Oversized(f"the event would carry {size} bytes of content")
    return content


def _measured(build: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], int]:
    content = build()
    return content, content_bytes(content)
