"""Moderation: the configured backends asked in turn, each within its time-out, and what the
categories they find lead to under the operators' actions and stance.

The embedded rules answer first and at once; when they refuse, no server is asked. Servers are
asked together, each by a bounded number of checks at once. A server that keeps failing is left
alone for a while (bot.guard.health), so that a hung one does not cost every text its time-out:
meanwhile the stance decides, at no cost. A server that refuses one text (a 4xx) is not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from bot.config import GuardAction, GuardSettings
from bot.guard.health import Admission, ServerHealth
from bot.guard.ports import MAX_CONNECTIONS, Exchange, ModerationUnavailable, Moderator

log = logging.getLogger(__name__)
UNAVAILABLE = "unavailable"
# Checks under way per server: as many as its client has connections. Past them, checks wait
# for a slot, at most the time-out, rather than holding sockets and tasks without bound.
MAX_CONCURRENT_CHECKS = MAX_CONNECTIONS
# Categories one backend's answer may flag, at most: each is an incident row, a metric and an
# alert line, and a hostile server could name dozens.
MAX_FLAGS_PER_BACKEND = 8

Action = Literal["pass", "log", "refuse", "unavailable"]
# told of each check: backend, seconds, whether it failed
CheckObserver = Callable[[str, float, bool], None]


@dataclass(frozen=True)
class Flag:
    backend: str
    category: str
    action: GuardAction | Literal["unavailable"]


@dataclass(frozen=True)
class Decision:
    action: Action
    flags: tuple[Flag, ...] = ()  # every category found (allowed ones left out), and failures

    @property
    def categories(self) -> tuple[str, ...]:
        """The categories behind the action."""
        return tuple(dict.fromkeys(f.category for f in self._behind()))

    @property
    def backend(self) -> str | None:
        return next((f.backend for f in self._behind()), None)

    def _behind(self) -> list[Flag]:
        if self.action in ("refuse", "unavailable"):
            return [f for f in self.flags if f.action == self.action]
        return list(self.flags)


PASS = Decision("pass")


class Moderation:
    def __init__(
        self,
        settings: GuardSettings,
        moderators: Sequence[Moderator],
        observe: CheckObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.local = [m for m in moderators if m.name == "rules"]
        self.remote = [m for m in moderators if m.name != "rules"]
        self.observe = observe or (lambda backend, seconds, failed: None)
        self._health = {m.name: ServerHealth(clock) for m in self.remote}
        self._slots = {m.name: asyncio.Semaphore(MAX_CONCURRENT_CHECKS) for m in self.remote}

    @property
    def has_remote(self) -> bool:
        return bool(self.remote)

    def action_for(self, category: str) -> GuardAction:
        return self.settings.actions.get(category, self.settings.default_action)

    def decide(self, backend: str, categories: Sequence[str]) -> Decision:
        """The decision for categories one backend found (the inline rules, at each edit)."""
        return self._decide(self._flags(backend, categories))

    async def check(self, exchange: Exchange) -> Decision:
        """Every backend's word on one text."""
        flags: list[Flag] = []
        for moderator in self.local:
            flags += self._flags(moderator.name, await moderator.check(exchange))
        if any(flag.action == "refuse" for flag in flags):
            return self._decide(flags)
        if self.remote:
            answers = await asyncio.gather(*(self._ask(m, exchange) for m in self.remote))
            for found in answers:
                flags += found
        return self._decide(flags)

    def _flags(self, backend: str, categories: Sequence[str]) -> list[Flag]:
        flags = [Flag(backend, c, self.action_for(c)) for c in dict.fromkeys(categories)]
        kept = [flag for flag in flags if flag.action != "allow"]
        kept.sort(key=lambda flag: flag.action != "refuse")  # stable: the cap keeps refusals
        return kept[:MAX_FLAGS_PER_BACKEND]

    async def _ask(self, moderator: Moderator, exchange: Exchange) -> list[Flag]:
        health = self._health[moderator.name]
        admitted = health.admit()
        if admitted is None:  # paused, and another check's turn to probe
            self.observe(moderator.name, 0.0, True)
            return [Flag(moderator.name, UNAVAILABLE, "unavailable")]
        try:
            return await self._send(moderator, exchange, admitted)
        finally:
            health.done(admitted)

    async def _send(
        self, moderator: Moderator, exchange: Exchange, admitted: Admission
    ) -> list[Flag]:
        name, timeout_s = moderator.name, self.settings.timeout_s
        slots = self._slots[name]
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout_s):
                await slots.acquire()
        except TimeoutError:
            # the checks under way tell how the server is doing; this one is only not sent
            log.warning(
                "moderation server %s: %d checks under way, one more not sent",
                name,
                MAX_CONCURRENT_CHECKS,
            )
            self.observe(name, time.monotonic() - started, True)
            return [Flag(name, UNAVAILABLE, "unavailable")]
        try:
            started = time.monotonic()
            async with asyncio.timeout(timeout_s):
                categories = await moderator.check(exchange)
        except Exception as exc:  # whatever the failure, the stance decides
            self.observe(name, time.monotonic() - started, True)
            self._failed(name, exc, admitted)
            return [Flag(name, UNAVAILABLE, "unavailable")]
        finally:
            slots.release()
        self.observe(name, time.monotonic() - started, False)
        if self._health[name].answered():
            log.info("moderation server %s answers again", name)
        return self._flags(name, categories)

    def _failed(self, name: str, exc: Exception, admitted: Admission) -> None:
        """Log lines name the failure, never the text."""
        closed = self.settings.stance == "fail_closed"
        if isinstance(exc, ModerationUnavailable) and not exc.server_down:
            told = "refused" if closed else "let through"
            log.warning("moderation server %s refused a text (%s): %s", name, _why(exc), told)
            return
        health = self._health[name]
        if health.failed(admitted):
            log.warning(
                "moderation server %s failed %d times in a row (%s): left alone, texts %s"
                " meanwhile, tried again in %g s",
                name,
                health.failures,
                _why(exc),
                "refused" if closed else "let through",
                health.probe_every_s,
            )
        elif admitted == "probe":
            again_s = health.probe_every_s
            log.warning(
                "moderation server %s still failing (%s): next try in %g s",
                name,
                _why(exc),
                again_s,
            )
        else:
            log.warning("moderation server %s failed (%s)", name, _why(exc))

    def _decide(self, flags: list[Flag]) -> Decision:
        """Refused when a category says so; when a server could not tell, the stance decides
        (fail_open lets the text through, still recorded); logged categories are recorded."""
        actions = {flag.action for flag in flags}
        if "refuse" in actions:
            return Decision("refuse", tuple(flags))
        if "unavailable" in actions and self.settings.stance == "fail_closed":
            return Decision("unavailable", tuple(flags))
        if actions:
            return Decision("log", tuple(flags))
        return PASS

    async def aclose(self) -> None:
        for moderator in (*self.local, *self.remote):
            await moderator.aclose()


def _why(exc: Exception) -> str:
    if isinstance(exc, TimeoutError):
        return "time-out"
    if isinstance(exc, ModerationUnavailable):
        return str(exc)[:200]
    return type(exc).__name__  # not the message: it might quote the text
