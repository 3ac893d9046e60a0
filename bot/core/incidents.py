"""Incidents: each moderation decision other than a pass is recorded (a keyed hash for the
person, the text only when log_content is on), counted for Prometheus, and told in one line to
the operators' alert room, in the background and rate-limited."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from bot.config import Settings
from bot.core.clock import now_ms
from bot.core.fair_use import SlidingLimit
from bot.core.metrics import Metrics
from bot.core.ports import ChatPort
from bot.core.streaming import send_notice
from bot.core.tasks import Tasks
from bot.errors import TransientError
from bot.guard.categories import KNOWN_CODES, category_name, clean_code
from bot.texts import say

log = logging.getLogger(__name__)
Stage = Literal["question", "passages", "answer"]
Action = Literal["refuse", "log", "unavailable"]
STAGES: tuple[Stage, ...] = ("question", "passages", "answer")
ALERT_WINDOW_S = 60.0
ALERTS = "alerts"  # the one key of the alert room's sliding limit
# Alert sends waiting on a slow or rate-limiting homeserver, at most; beyond, lines are dropped
# (and said to be missing in the next line) rather than piling up tasks.
MAX_PENDING_ALERTS = 8
# A category may come from a hostile server, a room id from another homeserver: shown in
# Markdown, neither may make a link, an image or a code span (other Markdown is harmless).
MARKDOWN_ACTIVE = frozenset("\\`[]<>")
MAX_TEXT_CHARS = 16_000
MAX_STATS_CATEGORIES = 40
# The Prometheus label of a category neither the bot nor its operators know: a server may name
# any, and each new label value is a time series kept for good.
OTHER = "other"


@dataclass(frozen=True)
class Incident:
    """What the guard decided, as the pipeline tells it."""

    room_id: str
    answer_id: int | None
    stage: Stage
    category: str
    backend: str
    action: Action
    sender: str  # the user id; only its keyed hash is stored or shown
    text: str | None = None  # the text judged; kept only when log_content is on


@dataclass(frozen=True)
class IncidentRow(Incident):
    """An incident as stored: the sender is a keyed hash, never the user id."""

    ts: int = 0


@dataclass(frozen=True)
class IncidentCount:
    category: str
    stage: str
    action: str
    count: int


class IncidentStore(Protocol):
    """Incident records (bot.storage.incident_store.SqliteIncidents)."""

    async def add(self, row: IncidentRow) -> int: ...

    async def stats(self, room_id: str | None) -> list[IncidentCount]:
        """Refusals and flags (not outages) by category, stage and action; every room when
        room_id is None."""
        ...

    async def forget(self, sender: str) -> int:
        """Clear the texts and the keyed hash of one person's incidents; the rows stay."""
        ...


class Pseudonyms(Protocol):
    def of(self, user_id: str) -> str: ...


def literal(text: str) -> str:
    """Markdown that shows text as it is, without links, images or code spans."""
    return "".join(f"\\{char}" if char in MARKDOWN_ACTIVE else char for char in text)


class AlertRoom:
    """One notice per incident in the operators' room, sent in the background; past the rate
    limit or the pending bound, incidents are counted, and the next line says how many."""

    def __init__(
        self, settings: Settings, port: ChatPort, tasks: Tasks, clock: Callable[[], float]
    ) -> None:
        self.room_id = settings.guard.alert_room
        self.lang = settings.bot.default_lang
        self.port = port
        self.tasks = tasks
        self.clock = clock
        self.window = SlidingLimit(settings.guard.alerts_per_minute, ALERT_WINDOW_S)
        self.pending = 0
        self.unreported = 0

    def tell(self, incident: Incident, category: str, sender: str) -> None:
        """Never waits: the line goes out in a task of its own, or is counted as not sent."""
        if self.room_id is None:
            return
        full = self.pending >= MAX_PENDING_ALERTS
        if full or not self.window.take(ALERTS, self.clock()).allowed:
            self.unreported += 1
            return
        carried, self.unreported = self.unreported, 0
        line = self._line(incident, category, sender, carried)
        self.pending += 1
        self.tasks.spawn(self._send(self.room_id, line, carried), name="incident alert")

    def _line(self, incident: Incident, category: str, sender: str, carried: int) -> str:
        lang = self.lang
        line = say(
            lang,
            "guard.alert",
            action=say(lang, f"guard.action.{incident.action}"),
            stage=say(lang, f"guard.stage.{incident.stage}"),
            category=literal(category_name(category, lang)),
            room=literal(incident.room_id),
            sender=sender,
        )
        return line + say(lang, "guard.alert_dropped", count=carried) if carried else line

    async def _send(self, room_id: str, line: str, carried: int) -> None:
        try:
            if await send_notice(self.port, room_id, line) is None:
                self.unreported += 1 + carried  # said in a line that never arrived
                log.warning("an incident alert could not be sent to %s", room_id)
        finally:
            self.pending -= 1


class Incidents:
    def __init__(
        self,
        settings: Settings,
        store: IncidentStore,
        pseudonyms: Pseudonyms,
        port: ChatPort,
        metrics: Metrics,
        tasks: Tasks,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.store = store
        self.pseudonyms = pseudonyms
        self.metrics = metrics
        self.alerts = AlertRoom(settings, port, tasks, clock)
        guard = settings.guard
        configured = [*guard.actions, *(rule.category for rule in guard.rules)]
        self.labelled = KNOWN_CODES | {clean_code(category) for category in configured}

    async def record(self, incident: Incident) -> None:
        """Count, alert (in the background) and store one incident. A database that is down
        loses the record, never the refusal the person is waiting for."""
        sender = self.pseudonyms.of(incident.sender)
        # a label, a database value and a line in the alert room: short, no control characters
        category = clean_code(incident.category)
        label = category if category in self.labelled else OTHER
        labels = {"stage": incident.stage, "category": label, "action": incident.action}
        self.metrics.moderation_flags.labels(**labels).inc()
        self.alerts.tell(incident, category, sender)
        text = incident.text if self.settings.log_content else None
        row = IncidentRow(
            room_id=incident.room_id,
            answer_id=incident.answer_id,
            stage=incident.stage,
            category=category,
            backend=clean_code(incident.backend),
            action=incident.action,
            sender=sender,
            text=text[:MAX_TEXT_CHARS] if text else None,
            ts=now_ms(),
        )
        try:
            await self.store.add(row)
        except TransientError as exc:
            log.error("incident in %s not recorded: database unavailable (%s)", row.room_id, exc)

    async def forget(self, user_id: str) -> None:
        """The texts of this person's incidents go, and so does the keyed hash that tied them
        together (the key is kept, so the hash could name them again); the counts stay."""
        await self.store.forget(self.pseudonyms.of(user_id))


def refusals_text(counts: list[IncidentCount], lang: str) -> str:
    """Refusals and flags per category, most frequent first, each with its stages; "" if none."""
    totals: Counter[str] = Counter()
    stages: dict[str, Counter[str]] = {}
    for row in counts:
        totals[row.category] += row.count
        stages.setdefault(row.category, Counter())[row.stage] += row.count
    ranked = sorted(totals, key=lambda category: (-totals[category], category))
    lines = [
        say(
            lang,
            "cmd.stats.refusal_line",
            category=literal(category_name(category, lang)),
            count=totals[category],
            stages=_stages_text(stages[category], lang),
        )
        for category in ranked[:MAX_STATS_CATEGORIES]
    ]
    return say(lang, "cmd.stats.refusals", lines="\n".join(lines)) if lines else ""


def _stages_text(counts: Counter[str], lang: str) -> str:
    shown = [stage for stage in STAGES if counts[stage]]
    return ", ".join(f"{say(lang, f'guard.stage.{stage}')} {counts[stage]}" for stage in shown)
