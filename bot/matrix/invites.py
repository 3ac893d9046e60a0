"""Invites: accepted or declined by tasks, so that a slow homeserver or a flood of invites
never holds up the sync loop; every join call is cut after a time-out, and only so many
invites are handled at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from nio import AsyncClient, JoinError

from bot.backoff import backoff

log = logging.getLogger(__name__)
T = TypeVar("T")
JOIN_ATTEMPTS = 8
JOIN_TIMEOUT_S = 30.0
# past this many, an invite stays open on the homeserver, for a later start to take up
MAX_INVITES_IN_FLIGHT = 32
MAX_JOINS_AT_ONCE = 4


class InviteDecisions(Protocol):
    def accepts_invite(self, inviter: str) -> bool: ...

    async def joined(self, room_id: str) -> None: ...


def inviter_of(invite_state: list[Any], user_id: str) -> str | None:
    """The sender of the last invite for the bot in the stripped state: Synapse appends the real
    one last, while the inviting server may put a forged one, "from" anyone, before it."""
    inviter = None
    for event in invite_state:
        if (
            getattr(event, "state_key", None) == user_id
            and getattr(event, "membership", None) == "invite"
        ):
            inviter = getattr(event, "sender", None)
    return inviter if isinstance(inviter, str) else None


class Invites:
    def __init__(
        self, client: AsyncClient, user_id: str, max_backoff_s: float, stopping: asyncio.Event
    ) -> None:
        self.client = client
        self.user_id = user_id
        self.max_backoff_s = max_backoff_s
        self._stopping = stopping
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(MAX_JOINS_AT_ONCE)
        self._just_joined: set[str] = set()

    def newly_joined(self, room_id: str) -> bool:
        """True once for a room the bot joined on invite, when a sync first shows it joined."""
        if room_id not in self._just_joined:
            return False
        self._just_joined.discard(room_id)
        return True

    def handle(self, room_id: str, invite_state: list[Any], decisions: InviteDecisions) -> None:
        """Decided at once, carried out by a task: a join can take long, the sync loop cannot."""
        if room_id in self._tasks:
            return
        if len(self._tasks) >= MAX_INVITES_IN_FLIGHT:
            log.warning("invite to %s left open: %d already under way", room_id, len(self._tasks))
            return
        inviter = inviter_of(invite_state, self.user_id)
        task = asyncio.create_task(
            self._answer(room_id, inviter, decisions), name=f"invite-{room_id}"
        )
        self._tasks[room_id] = task
        task.add_done_callback(lambda done: self._done(room_id, done))

    def _done(self, room_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(room_id) is task:
            del self._tasks[room_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("could not answer the invite to %s", room_id, exc_info=task.exception())

    async def _answer(self, room_id: str, inviter: str | None, decisions: InviteDecisions) -> None:
        if inviter is None or not decisions.accepts_invite(inviter):
            log.info("refused invite to %s from %s", room_id, inviter)
            try:
                await self._bounded(lambda: self.client.room_leave(room_id))
            except Exception as exc:  # the invite stays open; the bot never joins it
                log.warning("could not decline the invite to %s: %s", room_id, type(exc).__name__)
            return
        wait = 0.0
        for attempt in range(JOIN_ATTEMPTS):
            if attempt:
                await self._pause(max(wait, backoff(attempt, self.max_backoff_s)))
                if self._stopping.is_set():
                    return
            try:
                retry = await self._join(room_id, decisions)
            except Exception as exc:  # its time-out included
                log.warning("could not join %s: %s", room_id, type(exc).__name__)
                retry = 0.0
            if retry is None:
                log.info("joined %s on invite from %s (attempt %d)", room_id, inviter, attempt + 1)
                return
            wait = retry
        log.error("gave up joining %s after %d attempts", room_id, JOIN_ATTEMPTS)

    async def _join(self, room_id: str, decisions: InviteDecisions) -> float | None:
        """None once joined; otherwise how long the homeserver asked to wait (0 if it did not)."""
        # marked before the call: the sync showing the room joined may come before its answer;
        # the room is introduced once its state has synced
        self._just_joined.add(room_id)
        response = await self._bounded(lambda: self.client.join(room_id))
        if isinstance(response, JoinError):
            self._just_joined.discard(room_id)
            log.warning("could not join %s: %s", room_id, response.message)
            return (response.retry_after_ms or 0) / 1000
        await decisions.joined(room_id)
        return None

    async def _bounded(self, call: Callable[[], Awaitable[T]]) -> T:
        """A join or leave: a few at once, each cut after JOIN_TIMEOUT_S."""
        async with self._slots:
            return await asyncio.wait_for(call(), JOIN_TIMEOUT_S)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
