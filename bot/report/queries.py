"""The report's figures, aggregated in SQL (GROUP BY) so that a database of millions of votes is
read in a few seconds and constant memory; nothing here reads a message's text or keeps a
user id.

What counts:

- answers, errors and refusals: every answer the bot finished in the range, whoever asked and
  whatever their consent, as counts only (they describe the bot's own work, like `!lucie stats`
  and Prometheus do). An error is an answer that ended in error without being a refusal; a
  refusal is an incident that refused a question or replaced an answer.
- votes, reason labels and corrections: only those an export would use. With
  data.collection = "opt_in", only from people whose latest word is yes to the notice in force,
  and only on answers made while their room collected data and that it still does; never on
  erased answers. One vote per person and answer (their latest standing one), one label of a
  kind per person and answer. With collection "off" nobody is asked, and the people's
  feedback is counted as `!lucie stats` counts it, as aggregates only.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiosqlite

from bot.report.ratings import Pair

DAY_MS = 86_400_000
MAX_DAILY_SPAN = 92  # days; a longer range is shown per week
MAX_PERIODS = 120
MAX_LABELS = 12
DEFAULT = "default"  # prompt version 0 is the same default prompt in every room


@dataclass(frozen=True)
class Scope:
    since_ms: int
    room: str | None
    opt_in: bool
    notice_version: int


@dataclass(frozen=True)
class Period:
    shift: int  # buckets are (days since 1970 + shift) // days: weeks start on Mondays
    days: int

    def sql(self, column: str) -> str:
        return f"(({column} / {DAY_MS}) + {self.shift}) / {self.days}"

    def bucket(self, ms: int) -> int:
        return (ms // DAY_MS + self.shift) // self.days

    def start_ms(self, bucket: int) -> int:
        return (bucket * self.days - self.shift) * DAY_MS


DAILY = Period(0, 1)


def period_for(span_days: float) -> Period:
    """A day up to three months; beyond, weeks, or runs of weeks so that a plot never has
    more than MAX_PERIODS bars (a range of years stays readable, and quick to draw)."""
    if span_days <= MAX_DAILY_SPAN:
        return DAILY
    return Period(3, 7 * max(1, math.ceil(span_days / 7 / MAX_PERIODS)))


@dataclass
class Counts:
    answers: int = 0
    errors: int = 0
    refusals: int = 0
    up: int = 0
    down: int = 0
    corrections: int = 0


# (room id or "" for the default prompt, version) or a model name
VersionKey = tuple[str, int]


@dataclass
class Figures:
    first_ms: int | None = None
    last_ms: int | None = None
    period: Period = DAILY
    timeline: dict[int, Counts] = field(default_factory=dict)
    versions: dict[VersionKey, Counts] = field(default_factory=dict)
    models: dict[str, Counts] = field(default_factory=dict)
    totals: Counts = field(default_factory=Counts)
    labels: list[tuple[str, int]] = field(default_factory=list)
    comparisons: Counter[tuple[Pair, ...]] = field(default_factory=Counter)
    compared_questions: int = 0


def _answers_where(alias: str = "a") -> str:
    return (
        f"{alias}.created_at >= :since AND (:room IS NULL OR {alias}.room_id = :room) "
        f"AND {alias}.status IN ('complete', 'cut', 'error')"
    )


def _prompt_room(alias: str = "a") -> str:
    return f"CASE WHEN {alias}.prompt_version = 0 THEN '' ELSE {alias}.room_id END"


# answers whose feedback may count (see the module's docstring), and the people who may give it
_FEEDBACK = f"""
WITH latest AS (SELECT user_id, MAX(id) AS id FROM consents GROUP BY user_id),
consenting AS (
    SELECT c.user_id FROM consents c JOIN latest ON latest.id = c.id
    WHERE c.action = 'yes' AND c.notice_version >= :notice),
scoped AS (
    SELECT a.id, a.room_id, a.answer_event_id, a.question_event_id, a.prompt_version,
        COALESCE(a.model, '') AS model, a.created_at
    FROM answers a LEFT JOIN rooms r ON r.room_id = a.room_id
    WHERE {_answers_where()} AND a.status <> 'error' AND a.refusal IS NULL
        AND a.answer_event_id IS NOT NULL AND a.erased_at IS NULL
        AND (:opt_in = 0 OR (a.collected = 1 AND r.collection = 1)))
"""


def _counted(alias: str) -> str:
    return f"(:opt_in = 0 OR {alias}.sender IN consenting)"


def _joined(alias: str) -> str:
    return f"{alias}.room_id = a.room_id AND {alias}.answer_event_id = a.answer_event_id"


class ReportQueries:
    def __init__(self, conn: aiosqlite.Connection, scope: Scope) -> None:
        self.conn = conn
        self.scope = scope
        self.params: dict[str, object] = {
            "since": scope.since_ms,
            "room": scope.room,
            "opt_in": int(scope.opt_in),
            "notice": scope.notice_version,
        }
        self.low = self.high = 0  # the timeline's first and last days

    async def _rows(self, sql: str) -> AsyncIterator[aiosqlite.Row]:
        async with self.conn.execute(sql, self.params) as cursor:
            async for row in cursor:
                yield row

    async def figures(self, now_ms: int) -> Figures:
        figures = Figures()
        async for row in self._rows(
            f"SELECT MIN(a.created_at), MAX(a.created_at) FROM answers a WHERE {_answers_where()}"
        ):
            figures.first_ms, figures.last_ms = row[0], row[1]
        if figures.first_ms is None or figures.last_ms is None:
            return figures
        # counted per day in SQL, merged into longer periods once the span is known: votes
        # come after their answers, until now (a vote dated later is a wrong clock)
        self.low = DAILY.bucket(figures.first_ms)
        self.high = DAILY.bucket(max(figures.last_ms, now_ms))
        await self._answers(figures)
        await self._refusals(figures)
        await self._votes(figures)
        await self._corrections(figures)
        await self._labels(figures)
        await self._comparisons(figures)
        _regroup(figures)
        return figures

    def _bucket(self, figures: Figures, bucket: int | None) -> Counts | None:
        """The period's counts; None for a time outside the range (a sender's clock is theirs
        to set, so a vote may claim any date: counted in the totals, not in the timeline)."""
        if bucket is None or not self.low <= bucket <= self.high:
            return None
        return figures.timeline.setdefault(bucket, Counts())

    def _add(self, figures: Figures, row: aiosqlite.Row, name: str, count: int) -> None:
        """Add count to the totals, the row's period, prompt version and model."""
        key: VersionKey = (row["prompt_room"], row["prompt_version"])
        places = [
            figures.totals,
            figures.versions.setdefault(key, Counts()),
            figures.models.setdefault(row["model"], Counts()),
            self._bucket(figures, row["bucket"]),
        ]
        for counts in places:
            if counts is not None:
                setattr(counts, name, getattr(counts, name) + count)

    async def _answers(self, figures: Figures) -> None:
        sql = (
            f"SELECT {DAILY.sql('a.created_at')} AS bucket, {_prompt_room()} AS "
            "prompt_room, a.prompt_version, COALESCE(a.model, '') AS model, "
            "COUNT(*) AS answers, "
            "SUM(a.status = 'error' AND a.refusal IS NULL) AS errors "
            f"FROM answers a WHERE {_answers_where()} GROUP BY 1, 2, 3, 4"
        )
        async for row in self._rows(sql):
            self._add(figures, row, "answers", row["answers"])
            self._add(figures, row, "errors", row["errors"])

    async def _refusals(self, figures: Figures) -> None:
        """Refusals shown to a person, from the incidents: a question refused or an answer
        replaced (a flagged passage is left out, and the answer still goes out)."""
        sql = (
            f"SELECT {DAILY.sql('a.created_at')} AS bucket, {_prompt_room()} AS "
            "prompt_room, a.prompt_version, COALESCE(a.model, '') AS model, "
            "COUNT(DISTINCT a.id) AS refusals "
            "FROM incidents i JOIN answers a ON a.id = i.answer_id "
            f"WHERE {_answers_where()} AND i.action = 'refuse' "
            "AND i.stage IN ('question', 'answer') "
            "GROUP BY 1, 2, 3, 4"
        )
        async for row in self._rows(sql):
            self._add(figures, row, "refusals", row["refusals"])

    async def _votes(self, figures: Figures) -> None:
        sql = (
            f"{_FEEDBACK} SELECT {DAILY.sql('v.ts')} AS bucket, {_prompt_room()} AS "
            "prompt_room, a.prompt_version, a.model, v.vote, COUNT(*) AS count "
            f"FROM scoped a JOIN current_votes v ON {_joined('v')} WHERE {_counted('v')} "
            "GROUP BY 1, 2, 3, 4, 5"
        )
        async for row in self._rows(sql):
            self._add(figures, row, "up" if row["vote"] == "up" else "down", row["count"])

    async def _corrections(self, figures: Figures) -> None:
        sql = (
            f"{_FEEDBACK} SELECT {DAILY.sql('c.ts')} AS bucket, {_prompt_room()} AS "
            "prompt_room, a.prompt_version, a.model, COUNT(*) AS count "
            f"FROM scoped a JOIN corrections c ON {_joined('c')} WHERE {_counted('c')} "
            "GROUP BY 1, 2, 3, 4"
        )
        async for row in self._rows(sql):
            self._add(figures, row, "corrections", row["count"])

    async def _labels(self, figures: Figures) -> None:
        sql = (
            f"{_FEEDBACK} SELECT label, COUNT(*) AS count FROM ("
            "SELECT DISTINCT l.room_id, l.answer_event_id, l.sender, l.label "
            f"FROM scoped a JOIN labels l ON {_joined('l')} "
            f"WHERE l.withdrawn_at IS NULL AND {_counted('l')}) "
            f"GROUP BY label ORDER BY count DESC, label LIMIT {MAX_LABELS}"
        )
        figures.labels = [(row["label"], row["count"]) async for row in self._rows(sql)]

    async def _comparisons(self, figures: Figures) -> None:
        """Each question whose siblings were answered under different prompt versions and
        voted on: the net score (👍 minus 👎) of each, streamed one question at a time."""
        sql = (
            f"{_FEEDBACK}, compared AS (SELECT room_id, question_event_id FROM scoped "
            "GROUP BY 1, 2 HAVING COUNT(DISTINCT prompt_version) > 1) "
            f"SELECT a.room_id, a.question_event_id, {_prompt_room()} AS prompt_room, "
            "a.prompt_version, SUM(CASE v.vote WHEN 'up' THEN 1 ELSE -1 END) AS net "
            "FROM scoped a JOIN compared q USING (room_id, question_event_id) "
            f"JOIN current_votes v ON {_joined('v')} WHERE {_counted('v')} "
            "GROUP BY a.id ORDER BY a.room_id, a.question_event_id"
        )
        question: tuple[str, str] | None = None
        siblings: list[tuple[VersionKey, int]] = []
        async for row in self._rows(sql):
            if (row["room_id"], row["question_event_id"]) != question:
                self._compare(figures, siblings)
                question, siblings = (row["room_id"], row["question_event_id"]), []
            siblings.append(((row["prompt_room"], row["prompt_version"]), row["net"]))
        self._compare(figures, siblings)

    @staticmethod
    def _compare(figures: Figures, siblings: list[tuple[VersionKey, int]]) -> None:
        """Every pair of voted siblings of other versions whose net scores differ; a tie
        prefers neither, and a sibling nobody voted on says nothing."""
        pairs: list[Pair] = []
        for n, (first, first_net) in enumerate(siblings):
            for second, second_net in siblings[n + 1 :]:
                if first != second and first_net != second_net:
                    winner, loser = (first, second) if first_net > second_net else (second, first)
                    pairs.append((version_id(winner), version_id(loser)))
        if pairs:
            figures.comparisons[tuple(sorted(pairs))] += 1
            figures.compared_questions += 1


def _regroup(figures: Figures) -> None:
    """Days merged into the period their span calls for."""
    if not figures.timeline:
        return
    days = figures.timeline
    figures.period = period_for(max(days) - min(days))
    if figures.period is DAILY:
        return
    merged: dict[int, Counts] = {}
    for day, counts in days.items():
        into = merged.setdefault(figures.period.bucket(day * DAY_MS), Counts())
        for name, value in vars(counts).items():
            setattr(into, name, getattr(into, name) + value)
    figures.timeline = merged


def version_id(key: VersionKey) -> str:
    """A stable id for a prompt version (the room's id, a NUL, the number)."""
    room, version = key
    return DEFAULT if version == 0 else f"{room}\x00{version}"
