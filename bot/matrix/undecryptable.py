"""Encrypted messages whose room key has not arrived: kept, asked for quietly, read when it comes.

The events wait in the database (still encrypted), so neither a late key nor a restart loses a
question. When the wait is over, one notice per Megolm session says what went wrong; the bot never
leaves a room over it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Protocol

from nio import AsyncClient, Event, LocalProtocolError, MegolmEvent

from bot.core.clock import now_ms
from bot.storage.store import Store, UndecryptedRow

log = logging.getLogger(__name__)


class Decisions(Protocol):
    async def awaits_key(self, room_id: str, sender: str, ts: int) -> bool: ...

    async def unreadable(self, room_id: str, event_id: str) -> None: ...


class Undecryptable:
    def __init__(
        self, client: AsyncClient, store: Store, key_wait_s: float, keep_for_ms: float
    ) -> None:
        self.client = client
        self.store = store
        self.key_wait_ms = key_wait_s * 1000
        self.keep_for_ms = max(keep_for_ms, self.key_wait_ms)
        self._waiting: dict[str, UndecryptedRow] = {}
        self._requested: set[str] = set()
        self._noticed: set[str] = set()  # sessions already explained once
        self._loaded = False

    async def keep(self, room_id: str, event: MegolmEvent, decisions: Decisions) -> None:
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
        await self._load()
        if await self.store.keep_undecrypted(row):
            self._waiting[row.event_id] = row
            log.info("waiting for the room key of %s in %s", event.event_id, room_id)
        await self._request_key(event)

    async def _request_key(self, event: MegolmEvent) -> None:
        """Ask the bot's other devices (nio's way) and the sender's device (what clients do)."""
        if event.session_id in self._requested:
            return
        self._requested.add(event.session_id)
        try:
            await self.client.request_room_key(event)
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
            await self.client.to_device(request)
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
                if row.session_id not in self._noticed:
                    self._noticed.add(row.session_id)
                    log.warning("no room key for %s after the wait", row.event_id)
                    await decisions.unreadable(row.room_id, row.event_id)
                await self.store.mark_session_noticed(row.session_id, now)
                self._waiting[row.event_id] = replace(row, noticed_at=now)

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
            return self.client.decrypt_event(event)
        except Exception as exc:
            log.debug("still unreadable: %s", type(exc).__name__)
            return None

    async def forget_event(self, event_id: str) -> None:
        """A redaction took the event away."""
        row = self._waiting.pop(event_id, None)
        if row is not None:
            await self.store.drop_undecrypted(event_id)

    async def _forget(self, row: UndecryptedRow) -> None:
        self._waiting.pop(row.event_id, None)
        await self.store.drop_undecrypted(row.event_id)

    async def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            self._waiting = {row.event_id: row for row in await self.store.undecrypted()}
            self._noticed = {r.session_id for r in self._waiting.values() if r.noticed_at}

    @property
    def waiting(self) -> int:
        return len(self._waiting)
