"""Showing an answer while it is generated: one reply, then throttled m.replace edits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from bot.core.ports import ChatPort, RateLimited, SendFailed
from bot.core.render import edit_content, message_content

log = logging.getLogger(__name__)
SEND_RETRY_S = 2.0
NOTICE_TIMEOUT_S = 120
T = TypeVar("T")


class ReplyStream:
    """Publishes the latest text of an answer without ever holding up the model stream.

    The first text is sent as soon as it exists. Later texts become edits no more often than
    `interval`, at most `max_edits` of them; a 429 skips intermediate edits until the homeserver
    allows more. `finish` always lands the full text, waiting out rate limits if it must.
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
        self._latest = ""
        self._sent: tuple[str, bool] | None = None  # the text and liveness last shown
        self._first: tuple[str, bool] | None = None
        self._changed = asyncio.Event()
        self._finishing = asyncio.Event()
        self._last_send = 0.0
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

    def update(self, text: str) -> None:
        self._latest = text
        self._changed.set()
        if self._publisher is None:
            self._first_due = time.monotonic() + self.first_delay
            self._publisher = asyncio.create_task(self._publish())

    async def _publish(self) -> None:
        while not self._finishing.is_set():
            await self._changed.wait()
            self._changed.clear()
            if self.event_id is not None:
                if self.edits >= self.max_edits:
                    return
                wait = max(self._not_before, self._last_send + self.interval) - time.monotonic()
            else:
                wait = max(self._not_before, self._first_due) - time.monotonic()
            if wait > 0:
                # finish() interrupts the wait; a send already under way is let through
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._finishing.wait(), wait)
            if self._finishing.is_set() or (self._latest, True) == self._sent:
                continue
            try:
                await self._send(self._latest, live=True, txn_id=self._txn_id())
            except RateLimited as exc:
                self.rate_limit_waits += 1
                log.info(
                    "rate limited in %s: next update in %.1f s", self.room_id, exc.retry_after_s
                )
                self._not_before = time.monotonic() + exc.retry_after_s
                self._changed.set()
            except SendFailed as exc:
                log.warning("could not update answer in %s: %s", self.room_id, exc)
                self._not_before = time.monotonic() + SEND_RETRY_S
                self._changed.set()

    def _txn_id(self) -> str:
        """The first message keeps one id through every retry; each edit gets its own."""
        if self.event_id is None:
            return self._first_txn
        return uuid.uuid4().hex

    async def _send(self, text: str, live: bool, txn_id: str) -> str:
        if self.event_id is None:
            if self._first is None:
                # fixed at the first attempt: a retry under the same txn id must be the same event
                self._first = (text, live)
            text, live = self._first
            content = message_content(
                text,
                reply_to=self.reply_to,
                thread_root=self.thread_root,
                mention=self.mention,
                live=live,
            )
            event_id = await self.port.send(self.room_id, content, txn_id)
            self.event_id = event_id
            self.first_visible_at = time.time()
            await self.on_first_event(event_id)
            if self.first_may_exist:
                self._sent = None
                self._last_send = time.monotonic()
                return event_id
        else:
            content = edit_content(self.event_id, text, mention=self.mention, live=live)
            await self.port.send(self.room_id, content, txn_id)
            self.edits += 1
        self._sent = (text, live)
        self._last_send = time.monotonic()
        return self.event_id

    async def finish(self, text: str) -> bool:
        """Land the full text (ending the live marker); False if the homeserver never took it."""
        self._finishing.set()
        if self._publisher is not None:
            self._changed.set()
            (outcome,) = await asyncio.gather(self._publisher, return_exceptions=True)
            if isinstance(outcome, Exception):
                log.error("answer publisher failed in %s: %r", self.room_id, outcome)
        deadline = time.monotonic() + self.final_timeout
        while self._sent != (text, False):
            txn_id = self._txn_id()
            landed = await retrying(
                lambda txn_id=txn_id: self._send(text, live=False, txn_id=txn_id),
                deadline - time.monotonic(),
            )
            if landed is None:
                log.error("gave up sending the final answer text in %s", self.room_id)
                return False
        return True


async def retrying(send: Callable[[], Awaitable[T]], give_up_after_s: float) -> T | None:
    """Retry a send through rate limits (waiting what the server asks) and failures."""
    deadline = time.monotonic() + give_up_after_s
    while True:
        try:
            return await send()
        except RateLimited as exc:
            pause = exc.retry_after_s
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
    got through."""
    content = message_content(text, "m.notice", reply_to=reply_to, thread_root=thread)
    txn_id = uuid.uuid4().hex
    return await retrying(lambda: port.send(room_id, content, txn_id), NOTICE_TIMEOUT_S)
