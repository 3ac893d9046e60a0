"""Showing an answer while it is generated: one reply, then throttled m.replace edits."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from bot.core.answer_size import Oversized, TextView, render_within
from bot.core.ports import ChatPort, RateLimited, SendFailed, SendRefused
from bot.core.render import edit_content, message_content

log = logging.getLogger(__name__)
SEND_RETRY_S = 2.0
NOTICE_TIMEOUT_S = 120
T = TypeVar("T")

# Each edit carries the whole text again: past this many characters shown, edits come further
# apart in proportion, so a long answer costs the homeserver about as much as a short one.
EDIT_GROWTH_CHARS = 1_000
# A homeserver slow to take the bot's messages is spared: the next edit waits at least this
# many times its recent time to take one.
SLOW_SEND_FACTOR = 4.0
PACE_WEIGHT = 0.2  # of the latest send in the running average: recent sends tell the pace
PACE_HALF_LIFE_S = 5.0  # a quiet homeserver is soon taken as a quick one again
# Messages of the bot's that the homeserver has not taken yet, beyond which live updates wait
# (looked at again every CROWDED_RECHECK_S; a first text for MAX_FIRST_HOLD_S at most).
CROWDED_SENDS = 8
CROWDED_RECHECK_S = 0.5
MAX_FIRST_HOLD_S = 5.0


class SendPace:
    """How long the homeserver has lately taken to accept the bot's messages, across rooms.

    A homeserver that is slow or crowded is a busy one, and each first text and edit is one more
    event for it. While many of the bot's messages wait on it, live updates wait their turn: a
    new answer holds its first text (a short one then goes out whole, one event, as with
    streaming off) and edits are put off; while its recent sends were slow, edits come further
    apart. Quick homeservers see no change, and a slow spell is forgotten within seconds once it
    is over."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.in_flight = 0  # the bot's messages sent and not yet taken
        self._recent_s = 0.0
        self._at = clock()

    def crowded(self) -> bool:
        return self.in_flight >= CROWDED_SENDS

    @property
    def recent_s(self) -> float:
        """The running average, halved for every PACE_HALF_LIFE_S without a send."""
        return self._recent_s * 0.5 ** ((self.clock() - self._at) / PACE_HALF_LIFE_S)

    def took(self, seconds: float) -> None:
        recent = self.recent_s
        self._recent_s = recent + PACE_WEIGHT * (seconds - recent)
        self._at = self.clock()


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
        pace: SendPace | None = None,
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
        self._send_took = 0.0  # how long the homeserver took to take our last message
        self._not_before = 0.0
        self._publisher: asyncio.Task[None] | None = None
        # a short answer that is complete by then goes out whole: one event, no "(edited)"
        self._first_due = 0.0
        self._first_hold_until = 0.0
        self.first_delay = first_delay
        # stable across restarts when given: a first message the homeserver took just before a
        # crash, but whose id was never recorded, comes back as the same event, not a second one
        self._first_txn = first_txn_id or uuid.uuid4().hex
        # then the homeserver hands back that earlier event, with its earlier text, so the text
        # shown is unknown until an edit has set it
        self.first_may_exist = first_may_exist
        # off: nothing is shown before finish, which sends the whole answer as one message
        self.live = live
        self.pace = pace or SendPace()  # shared by the publisher's answers

    def update(self, text: str | TextView) -> None:
        """The latest text; a TextView is read only when a send is due."""
        self._latest = text
        self._changed.set()
        if self._publisher is None and self.live:
            self._first_due = time.monotonic() + self.first_delay
            self._first_hold_until = self._first_due + MAX_FIRST_HOLD_S
            self._publisher = asyncio.create_task(self._publish())

    def poke(self) -> None:
        """Read the text again though the model sent nothing new (a filter let more through)."""
        if self._publisher is not None:
            self._changed.set()

    def _may_hold(self) -> bool:
        """Whether this live update may wait for a crowded homeserver: an edit always may, a
        first text for MAX_FIRST_HOLD_S at most."""
        return self.event_id is not None or time.monotonic() < self._first_hold_until

    def next_interval(self) -> float:
        """The wait before the next edit: longer as the text grows, and when the homeserver is
        slow to take edits (the one place where fewer events help everyone in its rooms)."""
        shown = len(self._sent[0]) if self._sent else 0
        by_length = self.interval * max(1.0, shown / EDIT_GROWTH_CHARS)
        return max(by_length, SLOW_SEND_FACTOR * max(self._send_took, self.pace.recent_s))

    async def _timed_send(self, content: dict[str, Any], txn_id: str) -> str:
        started = time.monotonic()
        self.pace.in_flight += 1
        try:
            event_id = await self.port.send(self.room_id, content, txn_id)
        finally:
            self.pace.in_flight -= 1
        self._send_took = time.monotonic() - started
        self.pace.took(self._send_took)
        return event_id

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
            if self.pace.crowded() and self._may_hold():
                # many of the bot's messages already wait on the homeserver: a live update
                # waits its turn (a first text may well never be needed: the answer then goes
                # out whole); the final text never waits on this
                self._not_before = max(self._not_before, time.monotonic() + CROWDED_RECHECK_S)
                self._changed.set()
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
                content = await render_within(text, build)
            except Oversized:
                if fresh:
                    self._first = None  # never sent: the first message may still be another
                raise
            event_id = await self._timed_send(content, txn_id)
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
            content = await render_within(text, build)
            await self._timed_send(content, txn_id)
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
