"""Showing an answer while it is generated: one reply, then throttled m.replace edits."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from bot.core.ports import ChatPort, RateLimited, SendFailed, SendRefused
from bot.core.render import edit_content, message_content

log = logging.getLogger(__name__)
SEND_RETRY_S = 2.0
NOTICE_TIMEOUT_S = 120
T = TypeVar("T")

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
# Each edit carries the whole text again: past this many characters shown, edits come further
# apart in proportion, so a long answer costs the homeserver about as much as a short one.
EDIT_GROWTH_CHARS = 1_000
# A homeserver that took this many times longer to take the last edit than the interval is
# spared: the next edit waits that many times its time to answer.
SLOW_SEND_FACTOR = 4.0


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


class ReplyStream:
    """Publishes the latest text of an answer without ever holding up the model stream.

    The first text is sent as soon as it exists. Later texts become edits no more often than
    `interval`, at most `max_edits` of them; a 429 skips intermediate edits until the homeserver
    allows more. `finish` always lands the full text, waiting out rate limits if it must, unless
    the homeserver refused the answer for good (`refused`). A text too large for one event is
    not sent (`overflowed`): the caller cuts it (fit_to_event) for `finish`.
    """

    def __init__(
        self,
        port: ChatPort,
        room_id: str,
        reply_to: str,
        thread_root: str | None,
        mention: str | None,
        interval: float,
        max_edits: int,
        final_timeout: float,
        on_first_event: Callable[[str], Awaitable[None]],
        existing_event_id: str | None = None,
        first_delay: float = 0.0,
        first_txn_id: str | None = None,
        first_may_exist: bool = False,
        live: bool = True,
    ) -> None:
        self.port = port
        self.room_id = room_id
        self.reply_to = reply_to
        self.thread_root = thread_root
        self.mention = mention
        self.interval = interval
        self.max_edits = max_edits
        self.final_timeout = final_timeout
        self.on_first_event = on_first_event
        self.event_id = existing_event_id
        self.edits = 0
        self.rate_limit_waits = 0
        self.first_visible_at: float | None = None
        self.refused: SendRefused | None = None
        self.overflowed = False
        self._latest: str | TextView = ""
        self._last_look = 0.0
        self._sent: tuple[str, bool] | None = None  # the text and liveness last shown
        self._first: tuple[str, bool] | None = None
        self._changed = asyncio.Event()
        self._finishing = asyncio.Event()
        self._last_send = 0.0
        self._send_took = 0.0  # how long the homeserver took to take the last edit
        self._not_before = 0.0
        self._publisher: asyncio.Task[None] | None = None
        # a short answer that is complete by then goes out whole: one event, no "(edited)"
        self._first_due = 0.0
        self.first_delay = first_delay
        # stable across restarts when given: a first message the homeserver took just before a
        # crash, but whose id was never recorded, comes back as the same event, not a second one
        self._first_txn = first_txn_id or uuid.uuid4().hex
        # then the homeserver hands back that earlier event, with its earlier text, so the text
        # shown is unknown until an edit has set it
        self.first_may_exist = first_may_exist
        # off: nothing is shown before finish, which sends the whole answer as one message
        self.live = live

    def update(self, text: str | TextView) -> None:
        """The latest text; a TextView is read only when a send is due."""
        self._latest = text
        self._changed.set()
        if self._publisher is None and self.live:
            self._first_due = time.monotonic() + self.first_delay
            self._publisher = asyncio.create_task(self._publish())

    def poke(self) -> None:
        """Read the text again though the model sent nothing new (a filter let more through)."""
        if self._publisher is not None:
            self._changed.set()

    def next_interval(self) -> float:
        """The wait before the next edit: longer as the text grows, and when the homeserver is
        slow to take edits (the one place where fewer events help everyone in its rooms)."""
        shown = len(self._sent[0]) if self._sent else 0
        by_length = self.interval * max(1.0, shown / EDIT_GROWTH_CHARS)
        return max(by_length, SLOW_SEND_FACTOR * self._send_took)

    def _latest_text(self) -> str:
        latest = self._latest
        return latest if isinstance(latest, str) else latest.text()

    async def _publish(self) -> None:
        while not self._finishing.is_set():
            await self._changed.wait()
            self._changed.clear()
            if self.event_id is not None:
                if self.edits >= self.max_edits:
                    return
                # a look that found nothing new to send counts as a send: deltas of white space
                # alone must not make the text be read at every one of them
                last = max(self._last_send, self._last_look)
                wait = max(self._not_before, last + self.next_interval()) - time.monotonic()
            else:
                wait = max(self._not_before, self._first_due) - time.monotonic()
            if wait > 0:
                # finish() interrupts the wait; a send already under way is let through
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._finishing.wait(), wait)
            if self._finishing.is_set():
                continue
            text = self._latest_text()
            # nothing to show yet (a filter holds the text back until it is checked)
            if not text or (text, True) == self._sent:
                self._last_look = time.monotonic()
                continue
            if not await self._publish_one(text):
                return

    async def _publish_one(self, text: str) -> bool:
        """One live update; False once no more can be sent."""
        try:
            await self._send(text, live=True, txn_id=self._txn_id())
        except RateLimited as exc:
            self.rate_limit_waits += 1
            log.info("rate limited in %s: next update in %.1f s", self.room_id, exc.retry_after_s)
            self._not_before = time.monotonic() + exc.retry_after_s
            self._changed.set()
        except Oversized:
            self.overflowed = True  # what is shown stays; the caller cuts the final text
            return False
        except SendRefused as exc:
            log.warning("the homeserver refused the answer in %s: %s", self.room_id, exc)
            self.refused = exc
            return False
        except SendFailed as exc:
            log.warning("could not update answer in %s: %s", self.room_id, exc)
            self._not_before = time.monotonic() + SEND_RETRY_S
            self._changed.set()
        return True

    def _txn_id(self) -> str:
        """The first message keeps one id through every retry; each edit gets its own."""
        if self.event_id is None:
            return self._first_txn
        return uuid.uuid4().hex

    async def _send(self, text: str, live: bool, txn_id: str) -> str:
        if self.event_id is None:
            fresh = self._first is None
            if self._first is None:
                # fixed at the first attempt: a retry under the same txn id must be the same event
                self._first = (text, live)
            text, live = self._first
            build = functools.partial(
                message_content,
                text,
                reply_to=self.reply_to,
                thread_root=self.thread_root,
                mention=self.mention,
                live=live,
            )
            try:
                content = await _render(text, build)
            except Oversized:
                if fresh:
                    self._first = None  # never sent: the first message may still be another
                raise
            started = time.monotonic()
            event_id = await self.port.send(self.room_id, content, txn_id)
            self._send_took = time.monotonic() - started
            self.event_id = event_id
            self.first_visible_at = time.time()
            await self.on_first_event(event_id)
            if self.first_may_exist:
                self._sent = None
                self._last_send = time.monotonic()
                return event_id
        else:
            build = functools.partial(
                edit_content, self.event_id, text, mention=self.mention, live=live
            )
            content = await _render(text, build)
            started = time.monotonic()
            await self.port.send(self.room_id, content, txn_id)
            self._send_took = time.monotonic() - started
            self.edits += 1
        self._sent = (text, live)
        self._last_send = time.monotonic()
        return self.event_id

    async def finish(self, text: str) -> bool:
        """Land the full text (ending the live marker); False if the homeserver never took it,
        at once if it refused the answer for good."""
        self._finishing.set()
        if self._publisher is not None:
            self._changed.set()
            (outcome,) = await asyncio.gather(self._publisher, return_exceptions=True)
            if isinstance(outcome, Exception):
                log.error("answer publisher failed in %s: %r", self.room_id, outcome)
        deadline = time.monotonic() + self.final_timeout
        while self.refused is None and self._sent != (text, False):
            send = functools.partial(self._send, text, live=False, txn_id=self._txn_id())
            try:
                landed = await retrying(send, deadline - time.monotonic())
            except SendRefused as exc:
                log.warning("the homeserver refused the final answer in %s: %s", self.room_id, exc)
                self.refused = exc
                break
            if landed is None:
                log.error("gave up sending the final answer text in %s", self.room_id)
                return False
        return self.refused is None


async def fit_off_loop(text: str, answer: str, marker: str, mention: str | None) -> str:
    """fit_to_event, in a thread when the text is long enough for rendering it to hold the loop."""
    if len(text) > RENDER_OFF_LOOP_CHARS:
        return await asyncio.to_thread(fit_to_event, text, answer, marker, mention)
    return fit_to_event(text, answer, marker, mention)


async def _render(text: str, build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
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


async def retrying(send: Callable[[], Awaitable[T]], give_up_after_s: float) -> T | None:
    """Retry a send through rate limits (waiting what the server asks) and failures; None once
    give_up_after_s is over. A refusal for good (SendRefused) is raised at once."""
    deadline = time.monotonic() + give_up_after_s
    while True:
        try:
            return await send()
        except RateLimited as exc:
            pause = exc.retry_after_s
        except SendRefused:
            raise
        except SendFailed as exc:
            log.warning("send failed, retrying: %s", exc)
            pause = SEND_RETRY_S
        if time.monotonic() + pause > deadline:
            return None
        await asyncio.sleep(pause)


async def send_notice(
    port: ChatPort, room_id: str, text: str, reply_to: str | None = None, thread: str | None = None
) -> str | None:
    """A notice (the bot speaking for itself, not the model); its event id, or None if it never
    got through. Refused with its reply or thread relation (a thread rooted in another room),
    it goes out once more without them: the person still hears back."""
    content = message_content(text, "m.notice", reply_to=reply_to, thread_root=thread)
    try:
        return await _send_notice(port, room_id, content)
    except SendRefused as exc:
        if not (reply_to or thread):
            log.warning("the homeserver refused a notice in %s: %s", room_id, exc)
            return None
        log.warning("notice refused in %s (%s); sent again without its relations", room_id, exc)
    try:
        return await _send_notice(port, room_id, message_content(text, "m.notice"))
    except SendRefused as exc:
        log.warning("the homeserver refused a notice in %s: %s", room_id, exc)
        return None


async def _send_notice(port: ChatPort, room_id: str, content: dict[str, Any]) -> str | None:
    txn_id = uuid.uuid4().hex
    return await retrying(lambda: port.send(room_id, content, txn_id), NOTICE_TIMEOUT_S)
