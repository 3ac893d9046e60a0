"""Messages the bot took part in and the answers it owes or gave; found by room and event id."""

from __future__ import annotations

import json
from typing import Any

import aiosqlite

from bot.core.records import AnswerRow, MessageRow
from bot.storage.connection import Database

# what an answer record says, as opposed to how it went: erasure empties these for good
ERASABLE_ANSWER_FIELDS = {"text", "request_messages", "context_event_ids"}


class SqliteConversations:
    """Messages and answers."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def save_message(self, message: MessageRow) -> bool:
        """Keep a message; False when it was erased and must stay so: an answer that finishes
        streaming after a redaction or "forget me", a redacted message fetched again, or what a
        person wrote before asking to be forgotten."""
        changed = await self.db.write(SAVE_MESSAGE, *_message_args(message))
        return changed == 1

    async def answer_message(self, answer_id: int, message: MessageRow, **fields: Any) -> None:
        """An answer's progress and its message together, in one trip to the database."""
        update = _answer_update(answer_id, fields)
        await self.db.batch([update, (SAVE_MESSAGE, _message_args(message))])

    async def message(self, room_id: str, event_id: str) -> MessageRow | None:
        row = await self.db.one(
            "SELECT * FROM messages WHERE room_id = ? AND event_id = ?", room_id, event_id
        )
        return message_row(row) if row else None

    async def edit_question(
        self, room_id: str, event_id: str, sender: str, body: str, now: int
    ) -> bool:
        """An edit by a message's own sender replaces the text kept, and says when."""
        changed = await self.db.write(
            "UPDATE messages SET body = ?, edited_at = ? WHERE room_id = ? AND event_id = ? "
            "AND sender = ? AND from_bot = 0",
            body,
            now,
            room_id,
            event_id,
            sender,
        )
        return changed == 1

    async def recent_messages(
        self, room_id: str, since_ts: int, until_ts: int, limit: int
    ) -> list[MessageRow]:
        """The newest messages of a room between since_ts and until_ts, oldest first."""
        rows = await self.db.all(
            "SELECT * FROM messages WHERE room_id = ? AND ts > ? AND ts <= ? "
            "AND thread_root IS NULL ORDER BY ts DESC, rowid DESC LIMIT ?",
            room_id,
            since_ts,
            until_ts,
            limit,
        )
        return [message_row(row) for row in reversed(rows)]

    async def thread_messages(self, room_id: str, root: str, limit: int) -> list[MessageRow]:
        rows = await self.db.all(
            "SELECT * FROM messages WHERE room_id = ? AND thread_root = ? "
            "ORDER BY ts DESC, rowid DESC LIMIT ?",
            room_id,
            root,
            limit,
        )
        return [message_row(row) for row in reversed(rows)]

    async def bot_answered_in_thread(self, room_id: str, root: str) -> bool:
        row = await self.db.one(
            "SELECT 1 FROM messages WHERE room_id = ? AND thread_root = ? AND from_bot = 1 LIMIT 1",
            room_id,
            root,
        )
        return row is not None

    async def refused_questions(self, room_id: str, event_ids: list[str]) -> set[str]:
        """Those of the room's messages whose question a guardrail refused before the model."""
        if not event_ids:
            return set()
        marks = ",".join("?" * len(event_ids))
        rows = await self.db.all(
            "SELECT question_event_id FROM answers WHERE room_id = ? AND refusal IS NOT NULL "
            "AND json_extract(refusal, '$.stage') IN ('question', 'passages') "
            f"AND question_event_id IN ({marks})",
            room_id,
            *event_ids,
        )
        return {row["question_event_id"] for row in rows}

    async def queue_answer(
        self,
        room_id: str,
        question_event_id: str,
        question_ts: int,
        thread_root: str | None,
        now: int,
        collected: bool = True,
    ) -> AnswerRow | None:
        """Owe an answer to a question; None if it was already owed or given."""
        row = await self.db.one(
            "INSERT INTO answers (room_id, question_event_id, question_ts, thread_root, "
            "created_at, collected) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (room_id, question_event_id, sibling) DO NOTHING RETURNING *",
            room_id,
            question_event_id,
            question_ts,
            thread_root,
            now,
            int(collected),
        )
        return _answer(row) if row else None

    async def answer_for_question(self, room_id: str, question_event_id: str) -> AnswerRow | None:
        """The first answer to a question (its regenerations are siblings)."""
        row = await self.db.one(
            "SELECT * FROM answers WHERE room_id = ? AND question_event_id = ? AND sibling = 0",
            room_id,
            question_event_id,
        )
        return _answer(row) if row else None

    async def add_sibling(
        self, original: AnswerRow, now: int, collected: bool, requested_by: str | None = None
    ) -> AnswerRow:
        """A regenerated answer to the same question, in the same room."""
        row = await self.db.returning(
            "INSERT INTO answers (room_id, question_event_id, sibling, question_ts, thread_root, "
            "created_at, collected, requested_by) SELECT room_id, question_event_id, "
            "MAX(sibling) + 1, question_ts, thread_root, ?, ?, ? FROM answers WHERE room_id = ? "
            "AND question_event_id = ? RETURNING *",
            now,
            int(collected),
            requested_by,
            original.room_id,
            original.question_event_id,
        )
        return _answer(row)

    async def siblings(self, room_id: str, question_event_id: str) -> int:
        """How many answers a question has had, regenerations included."""
        row = await self.db.one(
            "SELECT COUNT(*) FROM answers WHERE room_id = ? AND question_event_id = ?",
            room_id,
            question_event_id,
        )
        return int(row[0]) if row else 0

    async def answer_by_event(self, room_id: str, answer_event_id: str) -> AnswerRow | None:
        row = await self.db.one(
            "SELECT * FROM answers WHERE room_id = ? AND answer_event_id = ?",
            room_id,
            answer_event_id,
        )
        return _answer(row) if row else None

    async def open_answers(self) -> list[AnswerRow]:
        rows = await self.db.all(
            "SELECT * FROM answers WHERE status IN ('queued', 'streaming') ORDER BY question_ts"
        )
        return [_answer(row) for row in rows]

    async def update_answer(self, answer_id: int, **fields: Any) -> None:
        """Record an answer's progress; what it says stays gone once it was erased."""
        update = _answer_update(answer_id, fields)
        if fields.get("context_event_ids"):
            # a message erased while its answer waited for the model (its context not recorded
            # yet, so the erasure could not find it): the answer is erased now that it is
            await self.db.batch([update, (ERASE_IF_BUILT_ON_ERASED, (answer_id,))])
        else:
            await self.db.write(update[0], *update[1])


SAVE_MESSAGE = (
    "INSERT INTO messages (event_id, room_id, sender, sender_name, body, ts, reply_to, "
    "thread_root, from_bot) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS ("
    "SELECT 1 FROM answers WHERE room_id = ?2 AND answer_event_id = ?1 "
    "AND erased_at IS NOT NULL) "
    "AND NOT EXISTS (SELECT 1 FROM erased_events WHERE room_id = ?2 AND event_id = ?1) "
    "AND NOT EXISTS (SELECT 1 FROM erased_people WHERE user_id = ?3 AND erased_at >= ?6) "
    "ON CONFLICT (room_id, event_id) DO UPDATE SET body = excluded.body"
)
ERASE_IF_BUILT_ON_ERASED = (
    "UPDATE answers SET request_messages = NULL, context_event_ids = NULL, text = NULL, "
    "erased_at = COALESCE(erased_at, (SELECT MAX(e.erased_at) FROM erased_events e "
    "WHERE e.room_id = answers.room_id)) WHERE id = ? AND EXISTS ("
    "SELECT 1 FROM json_each(answers.context_event_ids) j JOIN erased_events e "
    "ON e.room_id = answers.room_id AND e.event_id = j.value)"
)


def _message_args(message: MessageRow) -> tuple[Any, ...]:
    return (
        message.event_id,
        message.room_id,
        message.sender,
        message.sender_name,
        message.body,
        message.ts,
        message.reply_to,
        message.thread_root,
        int(message.from_bot),
    )


def _answer_update(answer_id: int, fields: dict[str, Any]) -> tuple[str, tuple[Any, ...]]:
    for name in ("request_messages", "sampling", "context_event_ids", "stages"):
        if name in fields and not isinstance(fields[name], str | None):
            fields[name] = json.dumps(fields[name], ensure_ascii=False)
    assignments = ", ".join(
        f"{name} = CASE WHEN erased_at IS NULL THEN ? END"
        if name in ERASABLE_ANSWER_FIELDS
        else f"{name} = ?"
        for name in fields
    )
    return f"UPDATE answers SET {assignments} WHERE id = ?", (*fields.values(), answer_id)


def message_row(row: aiosqlite.Row | dict[str, Any]) -> MessageRow:
    """A messages row as the core reads it (the export reads the same rows)."""
    return MessageRow(
        event_id=row["event_id"],
        room_id=row["room_id"],
        sender=row["sender"],
        sender_name=row["sender_name"],
        body=row["body"],
        ts=row["ts"],
        reply_to=row["reply_to"],
        thread_root=row["thread_root"],
        from_bot=bool(row["from_bot"]),
    )


def _answer(row: aiosqlite.Row) -> AnswerRow:
    return AnswerRow(
        id=row["id"],
        room_id=row["room_id"],
        question_event_id=row["question_event_id"],
        sibling=row["sibling"],
        question_ts=row["question_ts"],
        thread_root=row["thread_root"],
        answer_event_id=row["answer_event_id"],
        status=row["status"],
        text=row["text"],
        edits=row["edits"],
        attempts=row["attempts"],
        requested_by=row["requested_by"],
    )
