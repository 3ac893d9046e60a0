"""What the bot keeps, as plain data: rooms, prompts, messages, answers, encrypted events.

The storage layer fills these; the core reads them, through the protocols of bot.core.stores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RoomRow:
    room_id: str
    joined_at: int
    mode: str
    lang: str | None
    notice_sent: bool
    dm_reset_at: int
    collection: bool
    consent_notice_event_id: str | None
    consent_notice_version: int | None = None
    direct: bool | None = None  # None: not known yet


@dataclass(frozen=True)
class PromptRow:
    version: int
    text: str | None
    set_by: str
    set_at: int


@dataclass(frozen=True)
class MessageRow:
    event_id: str
    room_id: str
    sender: str
    sender_name: str | None
    body: str
    ts: int
    reply_to: str | None
    thread_root: str | None
    from_bot: bool


@dataclass(frozen=True)
class AnswerRow:
    id: int
    room_id: str
    question_event_id: str
    sibling: int
    question_ts: int
    thread_root: str | None
    answer_event_id: str | None
    status: str
    text: str | None
    edits: int
    attempts: int
    requested_by: str | None = None  # who asked for a regeneration (None: the asker)


@dataclass(frozen=True)
class UndecryptedRow:
    event_id: str
    room_id: str
    sender: str
    session_id: str
    source: dict[str, Any]
    received_at: int
    noticed_at: int | None = None
