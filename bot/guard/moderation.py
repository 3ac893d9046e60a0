"""Moderation: the configured backends asked in turn, each within its time-out, and what the
categories they find lead to under the operators' actions and stance.

The embedded rules answer first and at once; when they refuse, no server is asked. Servers are
asked together. A server that fails is left alone for a while, so that a hung one does not cost
every message its time-out: meanwhile the stance decides, at no cost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from bot.config import GuardAction, GuardSettings
from bot.guard.ports import Exchange, ModerationUnavailable, Moderator

log = logging.getLogger(__name__)
PAUSE_AFTER_FAILURE_S = 10.0
UNAVAILABLE = "unavailable"

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


class _Pause:
    def __init__(self) -> None:
        self.until = 0.0

    @property
    def paused(self) -> bool:
        return time.monotonic() < self.until


class Moderation:
    def __init__(
        self,
        settings: GuardSettings,
        moderators: Sequence[Moderator],
        observe: CheckObserver | None = None,
    ) -> None:
        self.settings = settings
        self.local = [m for m in moderators if m.name == "rules"]
        self.remote = [m for m in moderators if m.name != "rules"]
        self.observe = observe or (lambda backend, seconds, failed: None)
        self._pauses = {m.name: _Pause() for m in self.remote}

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
        flags = [Flag(backend, c, self.action_for(c)) for c in categories]
        return [flag for flag in flags if flag.action != "allow"]

    async def _ask(self, moderator: Moderator, exchange: Exchange) -> list[Flag]:
        pause = self._pauses[moderator.name]
        if pause.paused:
            self.observe(moderator.name, 0.0, True)
            return [Flag(moderator.name, UNAVAILABLE, "unavailable")]
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                categories = await moderator.check(exchange)
        except Exception as exc:  # whatever the failure, the stance decides
            pause.until = time.monotonic() + PAUSE_AFTER_FAILURE_S
            # the reason names the failure, never the text
            log.warning(
                "moderation server %s failed (%s): %s for %.0f s",
                moderator.name,
                _why(exc),
                "refusing" if self.settings.stance == "fail_closed" else "letting texts through",
                PAUSE_AFTER_FAILURE_S,
            )
            self.observe(moderator.name, time.monotonic() - started, True)
            return [Flag(moderator.name, UNAVAILABLE, "unavailable")]
        self.observe(moderator.name, time.monotonic() - started, False)
        return self._flags(moderator.name, categories)

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
