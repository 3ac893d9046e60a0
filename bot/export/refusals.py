"""Refusals in exports. A question refused before the model, or an answer replaced by a refusal
after it, never trains the model as a conversation (not as an answer, not as context); it may
only become a labelled safety example, in the "refusal" format."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bot.guard.categories import UNAVAILABLE
from bot.storage.export_reader import Key

STAGES = ("question", "passages", "answer")
# the record is the bot's own, but read as any stored text: bounded before it is parsed
MAX_RECORD = 4096
MAX_CATEGORIES = 32


@dataclass(frozen=True)
class Refusal:
    stage: str  # question, passages (both before the model) or answer (replaced after it)
    categories: tuple[str, ...]
    backend: str | None

    @property
    def reasons(self) -> tuple[str, ...]:
        """What was found in the text. A refusal because moderation was down (fail_closed)
        found nothing: as a safety example it would teach refusing a harmless question."""
        return tuple(c for c in self.categories if c != UNAVAILABLE)


def parse_refusal(record: str | None) -> Refusal | None:
    """The refusal recorded with an answer; None when there is none or it cannot be read."""
    if record is None or len(record) > MAX_RECORD:
        return None
    try:
        found = json.loads(record)
    except ValueError:
        return None
    if not isinstance(found, dict) or found.get("stage") not in STAGES:
        return None
    categories = found.get("categories")
    if not isinstance(categories, list):
        categories = []
    backend = found.get("backend")
    return Refusal(
        stage=found["stage"],
        categories=tuple(c for c in categories[:MAX_CATEGORIES] if isinstance(c, str)),
        backend=backend if isinstance(backend, str) else None,
    )


def refused_events(rows: Iterable[dict[str, Any]]) -> set[Key]:
    """Events no training conversation may hold: each refusal the bot showed, and each question
    refused before the model. A question whose answer alone was replaced stays usable (its
    regenerations answer it); an unreadable record counts as a refused question."""
    events: set[Key] = set()
    for row in rows:
        if row["answer_event_id"] is not None:
            events.add((row["room_id"], row["answer_event_id"]))
        refusal = parse_refusal(row["refusal"])
        if refusal is None or refusal.stage != "answer":
            events.add((row["room_id"], row["question_event_id"]))
    return events
