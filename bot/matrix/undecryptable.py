"""Encrypted messages whose room key has not arrived: kept, asked for quietly, read when it comes.

The events wait in the database (still encrypted), so neither a late key nor a restart loses a
question. When the wait is over, a notice says what went wrong (once per Megolm session, and
rarely per person and per room); the bot never leaves a room over it.

Any member can send thousands of events nobody can read, at no cost to themselves. So how many
are kept per sender and per room, how many keys are asked for and how many notices go out are
all bounded, and requests and notices go out in the background: the sync loop never waits for
them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import Any, Protocol

from nio import AsyncClient, Event, LocalProtocolError, MegolmEvent

from bot.core.clock import now_ms
from bot.core.records import UndecryptedRow
from bot.core.stores import CryptoBookkeeping

log = logging.getLogger(__name__)

# Kept at once: an honest sender rarely has more than a few messages without a key.
MAX_WAITING = 500
MAX_WAITING_PER_ROOM = 100
MAX_WAITING_PER_SENDER = 20
# Key requests: each costs two to-device messages.
KEY_REQUEST_WINDOW_MS = 600_000
KEY_REQUESTS_PER_SENDER = 5
KEY_REQUESTS_PER_WINDOW = 50
KEY_REQUEST_TIMEOUT_S = 10.0
# Notices spend the bot's message rate limit, which answers need.
NOTICE_WINDOW_MS = 600_000
NOTICES_PER_SENDER = 1
NOTICES_PER_ROOM = 2
NOTICES_PER_WINDOW = 10
NOTICE_TIMEOUT_S = 30.0
MAX_BACKGROUND = 8
MAX_QUOTA_KEYS = 10_000


class Decisions(Protocol):
    async def awaits_key(self, room_id: str, sender: str, ts: int) -> bool: ...

    async def unreadable(self, room_id: str, event_id: str) -> None: ...


class Quota:
    """At most `limit` uses per key within a sliding window of `window_ms`."""

    def __init__(self, limit: int, window_ms: int) -> None:
        self.limit = limit
        self.window_ms = window_ms
        self._uses: dict[str, deque[int]] = {}

    def allows(self, key: str, now: int) -> bool:
        uses = self._uses.get(key)
        if uses is None:
            if len(self._uses) >= MAX_QUOTA_KEYS:
                self._drop_idle(now)
            if len(self._uses) >= MAX_QUOTA_KEYS:
                return False  # more keys than memory allows: refuse rather than grow
            uses = self._uses[key] = deque()
        while uses and now - uses[0] >= self.window_ms:
            uses.popleft()
        return len(uses) < self.limit

    def use(self, key: str, now: int) -> None:
        self._uses.setdefault(key, deque()).append(now)

    def _drop_idle(self, now: int) -> None:
        idle = [k for k, uses in self._uses.items() if not uses or now - uses[-1] >= self.window_ms]
        for key in idle:
            del self._uses[key]


class Undecryptable:
    def __init__(
        self, client: AsyncClient, store: CryptoBookkeeping, key_wait_s: float, keep_for_ms: float
    ) -> None:
        self.client = client
        self.store = store
        self.key_wait_ms = key_wait_s * 1000
        self.keep_for_ms = max(keep_for_ms, self.key_wait_ms)
        # keyed by room too: an event id is only unique within its room (a hostile server may
        # reuse one elsewhere)
        self._waiting: dict[tuple[str, str], UndecryptedRow] = {}
        self._requested: set[tuple[str, str, str]] = set()  # sessions asked for lately
        # sessions already explained once, with their room and sender: a session id alone is
        # whatever the event claims, and another member could name someone else's
        self._noticed: set[tuple[str, str, str]] = set()
        self._loaded = False
        self._requests_by_sender = Quota(KEY_REQUESTS_PER_SENDER, KEY_REQUEST_WINDOW_MS)
        self._requests = Quota(KEY_REQUESTS_PER_WINDOW, KEY_REQUEST_WINDOW_MS)
        self._notices_by_sender = Quota(NOTICES_PER_SENDER, NOTICE_WINDOW_MS)
        self._notices_by_room = Quota(NOTICES_PER_ROOM, NOTICE_WINDOW_MS)
        self._notices = Quota(NOTICES_PER_WINDOW, NOTICE_WINDOW_MS)
        self._full_warnings = Quota(1, NOTICE_WINDOW_MS)  # one log line, not one per event
        self._background: set[asyncio.Task[None]] = set()

    async def keep(self, room_id: str, event: MegolmEvent, decisions: Decisions) -> None:
        await self._load()
        if (room_id, event.event_id) in self._waiting:
            return
        if not self._has_room_for(room_id, event.sender):  # checked first: costs no I/O
            if self._full_warnings.allows(event.sender, now_ms()):
                self._full_warnings.use(event.sender, now_ms())
                log.warning("too many unreadable events from %s in %s", event.sender, room_id)
            return
        if not await decisions.awaits_key(room_id, event.sender, event.server_timestamp):
            return  # history the bot could never read: neither asked for nor answered
        row = UndecryptedRow(
            event_id=event.event_id,
            room_id=room_id,
            sender=event.sender,
            session_id=event.session_id,
            source=event.source,
            received_at=now_ms(),
        )
        if await self.store.keep_undecrypted(row):
            self._waiting[room_id, row.event_id] = row
            log.info("waiting for the room key of %s in %s", event.event_id, room_id)
        self._ask_for_key(event, room_id)

    def _has_room_for(self, room_id: str, sender: str) -> bool:
        rows = self._waiting.values()
        return (
            len(self._waiting) < MAX_WAITING
            and sum(1 for row in rows if row.room_id == room_id) < MAX_WAITING_PER_ROOM
            and sum(1 for row in rows if row.sender == sender) < MAX_WAITING_PER_SENDER
        )

    def _ask_for_key(self, event: MegolmEvent, room_id: str) -> None:
        session = (room_id, event.sender, event.session_id)
        if session in self._requested:
            return
        now = now_ms()
        if not (
            self._requests_by_sender.allows(event.sender, now) and self._requests.allows("", now)
        ):
            log.info("room key for %s not asked for: too many requests", event.event_id)
            return
        if not self._spawn(self._request_key(event), f"key-request-{event.event_id}"):
            return
        if len(self._requested) >= MAX_WAITING:
            self._requested.clear()  # asking again, much later, costs little
        self._requested.add(session)
        self._requests_by_sender.use(event.sender, now)
        self._requests.use("", now)

    async def _request_key(self, event: MegolmEvent) -> None:
        """Ask the bot's other devices (nio's way) and the sender's device (what clients do)."""
        try:
            await asyncio.wait_for(self.client.request_room_key(event), KEY_REQUEST_TIMEOUT_S)
        except LocalProtocolError:
            pass  # already asked before a restart
        except Exception as exc:
            log.debug("room key request to own devices failed: %s", type(exc).__name__)
        if not event.device_id:
            return
        assert self.client.device_id is not None
        request = event.as_key_request(
            event.sender, self.client.device_id, event.session_id, event.device_id
        )
        try:
            await asyncio.wait_for(self.client.to_device(request), KEY_REQUEST_TIMEOUT_S)
        except Exception as exc:
            log.debug("room key request to the sender failed: %s", type(exc).__name__)

    async def retry(
        self, decisions: Decisions, handle: Callable[[str, Event], Awaitable[None]]
    ) -> None:
        """After each sync: read what can now be read; give up on what waited too long."""
        await self._load()
        now = now_ms()
        for row in list(self._waiting.values()):
            event = self._decrypt(row)
            if event is not None:
                await self._forget(row)
                log.info("room key arrived for %s", row.event_id)
                await handle(row.room_id, event)
            elif now - row.received_at > self.keep_for_ms:
                await self._forget(row)
            elif now - row.received_at > self.key_wait_ms and row.noticed_at is None:
                if _session(row) not in self._noticed:
                    self._noticed.add(_session(row))
                    log.warning("no room key for %s after the wait", row.event_id)
                    self._notify(row, decisions, now)
                await self.store.mark_session_noticed(row.room_id, row.sender, row.session_id, now)
                self._waiting[row.room_id, row.event_id] = replace(row, noticed_at=now)
        if len(self._noticed) > 2 * MAX_WAITING:  # sessions whose events are all gone
            self._noticed &= {_session(row) for row in self._waiting.values()}

    def _notify(self, row: UndecryptedRow, decisions: Decisions, now: int) -> None:
        """One notice per session at most, and few per person and per room: past that, the
        person learns nothing more from the bot than from its silence."""
        quotas = (
            (self._notices_by_sender, row.sender),
            (self._notices_by_room, row.room_id),
            (self._notices, ""),
        )
        if not all(quota.allows(key, now) for quota, key in quotas):
            log.info("no notice for %s: enough said in %s lately", row.event_id, row.room_id)
            return
        notice = self._notice(decisions, row.room_id, row.event_id)
        if self._spawn(notice, f"unreadable-notice-{row.event_id}"):
            for quota, key in quotas:
                quota.use(key, now)

    async def _notice(self, decisions: Decisions, room_id: str, event_id: str) -> None:
        try:
            await asyncio.wait_for(decisions.unreadable(room_id, event_id), NOTICE_TIMEOUT_S)
        except TimeoutError:
            log.warning("gave up the unreadable-message notice in %s", room_id)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> bool:
        if len(self._background) >= MAX_BACKGROUND:
            work.close()
            log.info("%s skipped: %d already under way", name, len(self._background))
            return False
        task = asyncio.create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._done)
        return True

    def _done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    def _decrypt(self, row: UndecryptedRow) -> Event | None:
        olm = self.client.olm
        source = row.source
        content = source.get("content", {})
        if olm is None or not isinstance(content, dict):
            return None
        known = olm.inbound_group_store.get(
            row.room_id, content.get("sender_key", ""), row.session_id
        )
        if known is None:
            return None  # the cheap check first: most rows still lack their key
        event = MegolmEvent.from_dict(source)
        if not isinstance(event, MegolmEvent):
            return None
        event.room_id = row.room_id
        try:
            decrypted = self.client.decrypt_event(event)
        except Exception as exc:
            log.debug("still unreadable: %s", type(exc).__name__)
            return None
        # nio leaves the flag unset on payloads it could not parse: they came encrypted all the
        # same, and the transport trusts nothing encrypted to be state or a redaction
        decrypted.decrypted = True
        return decrypted

    async def forget_event(self, room_id: str, event_id: str) -> None:
        """A redaction took the event away."""
        if self._waiting.pop((room_id, event_id), None) is not None:
            await self.store.drop_undecrypted(room_id, event_id)

    async def _forget(self, row: UndecryptedRow) -> None:
        self._waiting.pop((row.room_id, row.event_id), None)
        await self.store.drop_undecrypted(row.room_id, row.event_id)

    async def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            rows = await self.store.undecrypted()
            self._waiting = {(row.room_id, row.event_id): row for row in rows}
            self._noticed = {_session(r) for r in self._waiting.values() if r.noticed_at}

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    @property
    def waiting(self) -> int:
        return len(self._waiting)


def _session(row: UndecryptedRow) -> tuple[str, str, str]:
    return (row.room_id, row.sender, row.session_id)
