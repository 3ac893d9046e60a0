"""Fair use over hours and days: questions and model tokens per person and per room.

The database holds what was spent, so a restart changes nothing. A scope found over a limit is
remembered as blocked until a time: someone who keeps asking costs no database trip."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from bot.config import QuotaSettings, Settings
from bot.core.fair_use import MAX_TRACKED
from bot.core.metrics import Metrics
from bot.core.pseudonyms import LocalPseudonyms
from bot.texts import say

PERSON, ROOM = "person", "room"
QUESTION, TOKENS = "question", "tokens"
PRUNE_EVERY_S = 300.0
PRUNE_BATCH = 5000
# a model server's usage figure is not trusted to stay within what SQLite's integers hold
MAX_TOKENS_PER_ANSWER = 10_000_000
MAX_TOLD = 100  # people told of one block, at most


class UsageStore(Protocol):
    """What was spent, by scope ("person:<keyed hash>", "room:<room id>"), kind and time (ms)."""

    async def add(self, scope: str, kind: str, amount: int, ts: int) -> None: ...
    async def spent(self, scope: str, kind: str, since_ts: int) -> int: ...
    async def spending(
        self, scopes: Sequence[str], since: Sequence[int]
    ) -> dict[tuple[str, str], list[int]]: ...
    async def falls_under(self, scope: str, kind: str, since_ts: int, limit: int) -> int | None: ...
    async def prune(self, before_ts: int, batch: int = PRUNE_BATCH) -> int: ...


@dataclass(frozen=True)
class Quota:
    name: str  # "person.questions_hour": the metric's label; "quota.<name>" its notice
    scope: str  # person | room
    kind: str  # question | tokens
    limit: int
    window_s: float

    @property
    def key(self) -> str:
        return f"quota.{self.name}"

    @property
    def window_ms(self) -> int:
        return max(1, round(self.window_s * 1000))


def quotas_of(q: QuotaSettings) -> list[Quota]:
    """The quotas in force: a limit of 0 is none."""
    every = (
        Quota("person.questions_hour", PERSON, QUESTION, q.questions_per_hour, q.hour_s),
        Quota("person.questions_day", PERSON, QUESTION, q.questions_per_day, q.day_s),
        Quota("person.tokens_day", PERSON, TOKENS, q.tokens_per_day, q.day_s),
        Quota("room.questions_hour", ROOM, QUESTION, q.room_questions_per_hour, q.hour_s),
        Quota("room.questions_day", ROOM, QUESTION, q.room_questions_per_day, q.day_s),
        Quota("room.tokens_day", ROOM, TOKENS, q.room_tokens_per_day, q.day_s),
    )
    return [quota for quota in every if quota.limit > 0] if q.enabled else []


@dataclass(frozen=True)
class QuotaRefusal:
    key: str  # the notice, in bot.texts
    limit: int
    retry_after_s: float
    first: bool  # the first refusal of this block: worth a notice; later ones are silent


@dataclass
class Block:
    quota: Quota
    until: float  # clock time
    # who was told already: each person once (a room's block concerns everyone in it), and a
    # bounded number of people per block, so that a flood of newcomers costs no flood of notices
    told: set[str] = field(default_factory=set)


def is_exempt(settings: Settings, person: str) -> bool:
    return person in settings.bot.operators or person in settings.guard.quotas.exempt


def retry_text(lang: str, seconds: float) -> str:
    """When someone can ask again, in whole minutes rounded up (at least one)."""
    minutes = max(1, math.ceil(seconds / 60))
    if minutes < 60:
        return say(lang, "quota.in_minutes", minutes=minutes)
    return say(lang, "quota.in_hours", hours=minutes // 60, minutes=minutes % 60)


def _ms(seconds: float) -> int:
    # rounded, not cut: a block's end read back in milliseconds is the millisecond it was
    return round(seconds * 1000)


class Quotas:
    def __init__(
        self,
        settings: Settings,
        usage: UsageStore,
        pseudonyms: LocalPseudonyms,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,  # wall time: what is stored outlives the process
    ) -> None:
        self.settings = settings
        self.usage = usage
        self.pseudonyms = pseudonyms
        self.metrics = metrics
        self.clock = clock
        self.quotas = quotas_of(settings.guard.quotas)
        # only what some quota reads is written
        self._recorded = {(quota.scope, quota.kind) for quota in self.quotas}
        self._windows = sorted({quota.window_ms for quota in self.quotas})
        self._blocked: OrderedDict[str, Block] = OrderedDict()
        self._next_prune = 0.0
        for scope in (PERSON, ROOM):
            metrics.quota_limited.labels(scope).set_function(partial(self._count_blocked, scope))

    def exempt(self, person: str) -> bool:
        return is_exempt(self.settings, person)

    async def check(self, person: str, room_id: str) -> QuotaRefusal | None:
        """None when the person may ask here now; else which quota, and when they may again."""
        if not self.quotas or self.exempt(person):
            return None
        now = self.clock()
        scopes = self._scopes(person, room_id)
        block = self._current_block(scopes, now)
        if block is None:
            block = await self._look(scopes, now)
            if block is None:
                return None
        first = person not in block.told and len(block.told) < MAX_TOLD
        if first:
            block.told.add(person)
        self.metrics.quota_refusals.labels(block.quota.name).inc()
        return QuotaRefusal(block.quota.key, block.quota.limit, max(0.0, block.until - now), first)

    async def asked(self, person: str, room_id: str) -> None:
        """One question (or regeneration) taken, by the person and the room."""
        await self._record(person, room_id, QUESTION, 1)

    async def spent(self, person: str, room_id: str, tokens: int) -> None:
        """Model tokens (prompt and answer) an answer to the person's question took."""
        if tokens > 0:
            await self._record(person, room_id, TOKENS, min(tokens, MAX_TOKENS_PER_ANSWER))

    async def _record(self, person: str, room_id: str, kind: str, amount: int) -> None:
        if not self.quotas or self.exempt(person):
            return  # exempt people's use counts against nobody, the room included
        now = self.clock()
        for scope_kind, scope in zip((PERSON, ROOM), self._scopes(person, room_id), strict=True):
            if (scope_kind, kind) in self._recorded:
                await self.usage.add(scope, kind, amount, _ms(now))
        await self._prune(now)

    def _scopes(self, person: str, room_id: str) -> tuple[str, str]:
        return f"{PERSON}:{self.pseudonyms.of(person)}", f"{ROOM}:{room_id}"

    def _current_block(self, scopes: tuple[str, str], now: float) -> Block | None:
        """The longest block in memory still running for these scopes; ended ones go."""
        found: Block | None = None
        for scope in scopes:
            block = self._blocked.get(scope)
            if block is None:
                continue
            if block.until <= now:
                del self._blocked[scope]
            elif found is None or block.until > found.until:
                found = block
        return found

    async def _look(self, scopes: tuple[str, str], now: float) -> Block | None:
        """Read what the scopes spent; block each one over a limit until it is back under all."""
        now_ms = _ms(now)
        # a row counts while ts > now - window: it leaves the window at ts + window
        starts = {window: now_ms - window + 1 for window in self._windows}
        spent = await self.usage.spending(scopes, list(starts.values()))
        longest: dict[str, Block] = {}
        for quota in self.quotas:
            scope = scopes[0] if quota.scope == PERSON else scopes[1]
            index = self._windows.index(quota.window_ms)
            if spent.get((scope, quota.kind), [0] * len(starts))[index] < quota.limit:
                continue
            since = starts[quota.window_ms]
            leaving = await self.usage.falls_under(scope, quota.kind, since, quota.limit)
            if leaving is None:
                continue  # back under since the first read
            until = (leaving + quota.window_ms) / 1000
            if scope not in longest or until > longest[scope].until:
                longest[scope] = Block(quota, until)
        for scope, block in longest.items():
            self._remember(scope, block)
        return max(longest.values(), key=lambda block: block.until, default=None)

    def _remember(self, scope: str, block: Block) -> None:
        self._blocked[scope] = block
        self._blocked.move_to_end(scope)
        while len(self._blocked) > MAX_TRACKED:
            self._blocked.popitem(last=False)  # forgotten, not lifted: the database still knows

    def _count_blocked(self, scope_kind: str) -> int:
        now, prefix = self.clock(), f"{scope_kind}:"
        return sum(
            1
            for scope, block in list(self._blocked.items())
            if scope.startswith(prefix) and block.until > now
        )

    async def _prune(self, now: float) -> None:
        """Rows older than the longest window, now and then and a batch at a time; again at the
        next use while a backlog remains."""
        if now < self._next_prune:
            return
        removed = await self.usage.prune(_ms(now) - self._windows[-1], PRUNE_BATCH)
        self._next_prune = now if removed >= PRUNE_BATCH else now + PRUNE_EVERY_S
