"""Typed reads and writes of the bot's state; every method is one short transaction."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from bot.storage.database import open_database, unavailable

OPEN_STATUSES = ("queued", "streaming")
# what an answer record says, as opposed to how it went: erasure empties these for good
ERASABLE_ANSWER_FIELDS = {"text", "request_messages", "context_event_ids"}


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


@dataclass(frozen=True)
class UndecryptedRow:
    event_id: str
    room_id: str
    sender: str
    session_id: str
    source: dict[str, Any]
    received_at: int
    noticed_at: int | None = None


class Store:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, path: Path) -> Store:
        return cls(await open_database(path))

    async def close(self) -> None:
        await self.conn.close()

    @contextlib.asynccontextmanager
    async def _guarded(self) -> AsyncIterator[None]:
        """A locked, full or read-only database becomes one clear error, its transaction undone."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            passing = unavailable(exc)
            if passing is None:
                raise  # a bug in a statement, not a passing condition
            with contextlib.suppress(sqlite3.Error):
                await self.conn.rollback()
            raise passing from None

    # Each helper is one trip to aiosqlite's thread: a trip costs the event loop a wake-up, and
    # an answer makes about a dozen of them.
    async def _one(self, sql: str, *args: Any) -> aiosqlite.Row | None:
        rows = await self._all(sql, *args)
        return rows[0] if rows else None

    async def _all(self, sql: str, *args: Any) -> list[aiosqlite.Row]:
        async with self._guarded():
            return list(await self.conn.execute_fetchall(sql, args))

    async def _write(self, sql: str, *args: Any) -> int:
        """One statement, committed on its own (the connection is in autocommit mode); returns
        how many rows it changed."""
        return len(await self._all(f"{sql} RETURNING 1", *args))

    async def _write_returning(self, sql: str, *args: Any) -> aiosqlite.Row:
        row = await self._one(sql, *args)
        assert row is not None
        return row

    async def writable(self) -> bool:
        """A real write (rolled into a no-op update): fails on a read-only or full disk."""
        await self._write(
            "INSERT INTO handled_events (room_id, event_id, ts) VALUES ('', 'health', 0) "
            "ON CONFLICT (room_id, event_id) DO UPDATE SET ts = ts"
        )
        return True

    # Sync position
    async def sync_token(self) -> str | None:
        row = await self._one("SELECT next_batch FROM sync_state WHERE id = 1")
        return row["next_batch"] if row else None

    async def set_sync_token(self, token: str) -> None:
        await self._write(
            "INSERT INTO sync_state (id, next_batch) VALUES (1, ?) "
            "ON CONFLICT (id) DO UPDATE SET next_batch = excluded.next_batch",
            token,
        )

    async def claim_event(self, room_id: str, event_id: str, now: int) -> bool:
        """True the first time an event is claimed, False ever after."""
        changed = await self._write(
            "INSERT INTO handled_events (room_id, event_id, ts) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            room_id,
            event_id,
            now,
        )
        return changed == 1

    # Rooms
    async def room(self, room_id: str) -> RoomRow | None:
        row = await self._one("SELECT * FROM rooms WHERE room_id = ?", room_id)
        if row is None:
            return None
        return RoomRow(
            room_id=row["room_id"],
            joined_at=row["joined_at"],
            mode=row["mode"],
            lang=row["lang"],
            notice_sent=bool(row["notice_sent"]),
            dm_reset_at=row["dm_reset_at"],
            collection=bool(row["collection"]),
            consent_notice_event_id=row["consent_notice_event_id"],
            consent_notice_version=row["consent_notice_version"],
            direct=None if row["direct"] is None else bool(row["direct"]),
        )

    async def add_room(self, room_id: str, joined_at: int) -> bool:
        """Record a joined room; False when it was already known (a rejoin keeps its settings)."""
        changed = await self._write(
            "INSERT INTO rooms (room_id, joined_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
            room_id,
            joined_at,
        )
        return changed == 1

    async def set_room(self, room_id: str, **fields: Any) -> None:
        allowed = {
            "mode",
            "lang",
            "notice_sent",
            "dm_reset_at",
            "joined_at",
            "collection",
            "consent_notice_event_id",
            "consent_notice_version",
            "direct",
        }
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"unknown room fields {unknown}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        await self._write(
            f"UPDATE rooms SET {assignments} WHERE room_id = ?", *fields.values(), room_id
        )

    # Prompts
    async def current_prompt(self, room_id: str) -> PromptRow | None:
        row = await self._one(
            "SELECT * FROM prompts WHERE room_id = ? ORDER BY version DESC LIMIT 1", room_id
        )
        return _prompt(row) if row else None

    async def add_prompt(self, room_id: str, text: str | None, set_by: str, set_at: int) -> int:
        row = await self._write_returning(
            "INSERT INTO prompts (room_id, version, text, set_by, set_at) "
            "SELECT ?, COALESCE(MAX(version), 0) + 1, ?, ?, ? FROM prompts WHERE room_id = ? "
            "RETURNING version",
            room_id,
            text,
            set_by,
            set_at,
            room_id,
        )
        return int(row[0])

    async def prompt_history(self, room_id: str) -> list[PromptRow]:
        rows = await self._all(
            "SELECT * FROM prompts WHERE room_id = ? ORDER BY version DESC", room_id
        )
        return [_prompt(row) for row in rows]

    # Messages
    async def save_message(self, message: MessageRow) -> None:
        """Keep a message; never brings back the text of an answer erased meanwhile (an answer
        that finishes streaming after a redaction or "forget me" stays erased)."""
        await self._write(
            "INSERT INTO messages (event_id, room_id, sender, sender_name, body, ts, reply_to, "
            "thread_root, from_bot) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS ("
            "SELECT 1 FROM answers WHERE room_id = ?2 AND answer_event_id = ?1 "
            "AND erased_at IS NOT NULL) "
            "ON CONFLICT (room_id, event_id) DO UPDATE SET body = excluded.body",
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

    async def message(self, room_id: str, event_id: str) -> MessageRow | None:
        row = await self._one(
            "SELECT * FROM messages WHERE room_id = ? AND event_id = ?", room_id, event_id
        )
        return _message(row) if row else None

    async def edit_question(self, room_id: str, event_id: str, sender: str, body: str) -> bool:
        """An edit by a message's own sender replaces the text kept for exports."""
        changed = await self._write(
            "UPDATE messages SET body = ? WHERE room_id = ? AND event_id = ? AND sender = ? "
            "AND from_bot = 0",
            body,
            room_id,
            event_id,
            sender,
        )
        return changed == 1

    async def recent_messages(
        self, room_id: str, since_ts: int, until_ts: int, limit: int
    ) -> list[MessageRow]:
        """The newest messages of a room between since_ts and until_ts, oldest first."""
        rows = await self._all(
            "SELECT * FROM messages WHERE room_id = ? AND ts > ? AND ts <= ? "
            "AND thread_root IS NULL ORDER BY ts DESC, rowid DESC LIMIT ?",
            room_id,
            since_ts,
            until_ts,
            limit,
        )
        return [_message(row) for row in reversed(rows)]

    async def thread_messages(self, room_id: str, root: str, limit: int) -> list[MessageRow]:
        rows = await self._all(
            "SELECT * FROM messages WHERE room_id = ? AND thread_root = ? "
            "ORDER BY ts DESC, rowid DESC LIMIT ?",
            room_id,
            root,
            limit,
        )
        return [_message(row) for row in reversed(rows)]

    async def bot_answered_in_thread(self, room_id: str, root: str) -> bool:
        row = await self._one(
            "SELECT 1 FROM messages WHERE room_id = ? AND thread_root = ? AND from_bot = 1 LIMIT 1",
            room_id,
            root,
        )
        return row is not None

    # Answers
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
        row = await self._one(
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
        row = await self._one(
            "SELECT * FROM answers WHERE room_id = ? AND question_event_id = ? AND sibling = 0",
            room_id,
            question_event_id,
        )
        return _answer(row) if row else None

    async def add_sibling(self, original: AnswerRow, now: int, collected: bool) -> AnswerRow:
        """A regenerated answer to the same question, in the same room."""
        row = await self._write_returning(
            "INSERT INTO answers (room_id, question_event_id, sibling, question_ts, thread_root, "
            "created_at, collected) SELECT room_id, question_event_id, MAX(sibling) + 1, "
            "question_ts, thread_root, ?, ? FROM answers WHERE room_id = ? "
            "AND question_event_id = ? RETURNING *",
            now,
            int(collected),
            original.room_id,
            original.question_event_id,
        )
        return _answer(row)

    async def siblings(self, room_id: str, question_event_id: str) -> int:
        """How many answers a question has had, regenerations included."""
        row = await self._one(
            "SELECT COUNT(*) FROM answers WHERE room_id = ? AND question_event_id = ?",
            room_id,
            question_event_id,
        )
        return int(row[0]) if row else 0

    async def answer_by_event(self, room_id: str, answer_event_id: str) -> AnswerRow | None:
        row = await self._one(
            "SELECT * FROM answers WHERE room_id = ? AND answer_event_id = ?",
            room_id,
            answer_event_id,
        )
        return _answer(row) if row else None

    async def open_answers(self) -> list[AnswerRow]:
        rows = await self._all(
            "SELECT * FROM answers WHERE status IN ('queued', 'streaming') ORDER BY question_ts"
        )
        return [_answer(row) for row in rows]

    async def update_answer(self, answer_id: int, **fields: Any) -> None:
        """Record an answer's progress; what it says stays gone once it was erased."""
        for name in ("request_messages", "sampling", "context_event_ids"):
            if name in fields and not isinstance(fields[name], str | None):
                fields[name] = json.dumps(fields[name], ensure_ascii=False)
        assignments = ", ".join(
            f"{name} = CASE WHEN erased_at IS NULL THEN ? END"
            if name in ERASABLE_ANSWER_FIELDS
            else f"{name} = ?"
            for name in fields
        )
        await self._write(
            f"UPDATE answers SET {assignments} WHERE id = ?", *fields.values(), answer_id
        )

    # Votes, labels, corrections
    async def add_vote(
        self,
        reaction_event_id: str,
        answer_event_id: str,
        room_id: str,
        sender: str,
        vote: str,
        raw_key: str,
        ts: int,
        source: str = "vote",
    ) -> bool:
        changed = await self._write(
            "INSERT INTO votes (reaction_event_id, answer_event_id, room_id, sender, vote, "
            "raw_key, ts, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            reaction_event_id,
            answer_event_id,
            room_id,
            sender,
            vote,
            raw_key,
            ts,
            source,
        )
        return changed == 1

    async def withdraw_reaction(self, room_id: str, reaction_event_id: str, now: int) -> bool:
        """A redacted reaction: the vote or label it carried no longer counts."""
        changed = 0
        for table in ("votes", "labels"):
            changed += await self._write(
                f"UPDATE {table} SET withdrawn_at = ? "
                "WHERE room_id = ? AND reaction_event_id = ? AND withdrawn_at IS NULL",
                now,
                room_id,
                reaction_event_id,
            )
        return changed > 0

    async def add_label(
        self,
        reaction_event_id: str,
        answer_event_id: str,
        room_id: str,
        sender: str,
        label: str,
        raw_key: str,
        ts: int,
    ) -> bool:
        changed = await self._write(
            "INSERT INTO labels (reaction_event_id, answer_event_id, room_id, sender, label, "
            "raw_key, ts) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            reaction_event_id,
            answer_event_id,
            room_id,
            sender,
            label,
            raw_key,
            ts,
        )
        return changed == 1

    async def add_correction(
        self, event_id: str, answer_event_id: str, room_id: str, sender: str, text: str, ts: int
    ) -> None:
        await self._write(
            "INSERT INTO corrections (event_id, answer_event_id, room_id, sender, text, ts) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            event_id,
            answer_event_id,
            room_id,
            sender,
            text,
            ts,
        )

    async def stats(self, room_id: str | None) -> list[dict[str, Any]]:
        """Answers, votes and corrections per prompt version (every room when room_id is None)."""
        rows = await self._all(
            "SELECT a.room_id, a.prompt_version, COUNT(DISTINCT a.id) AS answers, "
            "COUNT(DISTINCT CASE WHEN v.vote = 'up' THEN v.reaction_event_id END) AS up, "
            "COUNT(DISTINCT CASE WHEN v.vote = 'down' THEN v.reaction_event_id END) AS down, "
            "COUNT(DISTINCT c.event_id) AS corrections "
            "FROM answers a "
            "LEFT JOIN current_votes v ON v.room_id = a.room_id "
            "AND v.answer_event_id = a.answer_event_id "
            "LEFT JOIN corrections c ON c.room_id = a.room_id "
            "AND c.answer_event_id = a.answer_event_id "
            "WHERE a.status IN ('complete', 'cut') AND (? IS NULL OR a.room_id = ?) "
            "GROUP BY a.room_id, a.prompt_version ORDER BY a.room_id, a.prompt_version",
            room_id,
            room_id,
        )
        return [dict(row) for row in rows]

    # Consent and erasure
    async def add_consent(
        self,
        user_id: str,
        action: str,
        notice_version: int,
        room_id: str | None,
        ts: int,
        source_event_id: str | None = None,
    ) -> None:
        await self._write(
            "INSERT INTO consents (user_id, action, notice_version, room_id, ts, "
            "source_event_id) VALUES (?, ?, ?, ?, ?, ?)",
            user_id,
            action,
            notice_version,
            room_id,
            ts,
            source_event_id,
        )

    async def consent_given_by(self, room_id: str, event_id: str) -> tuple[str, int] | None:
        """(user, notice version) when this ✅ reaction gave the consent now in force."""
        row = await self._one(
            "SELECT c.user_id, c.notice_version FROM consents c WHERE c.room_id = ? "
            "AND c.source_event_id = ? "
            "AND c.id = (SELECT MAX(id) FROM consents WHERE user_id = c.user_id)",
            room_id,
            event_id,
        )
        return (row["user_id"], row["notice_version"]) if row else None

    async def consent(self, user_id: str) -> tuple[str, int, int] | None:
        """The consent in force: (action, notice version, time), or None if never given."""
        row = await self._one(
            "SELECT action, notice_version, ts FROM consents WHERE user_id = ? "
            "ORDER BY id DESC LIMIT 1",
            user_id,
        )
        return (row["action"], row["notice_version"], row["ts"]) if row else None

    async def forget(self, user_id: str, now: int) -> None:
        """Erase everything stored about a person; only the fact of erasure stays."""
        rows = await self._all("SELECT room_id, event_id FROM messages WHERE sender = ?", user_id)
        for row in rows:
            await self._erase(row["room_id"], row["event_id"], now)
        for table in ("votes", "labels", "corrections", "undecrypted"):
            await self._write(f"DELETE FROM {table} WHERE sender = ?", user_id)
        await self._write("DELETE FROM consents WHERE user_id = ?", user_id)
        # a room's prompt history stays (it is the room's configuration), without its author
        await self._write("UPDATE prompts SET set_by = 'erased' WHERE set_by = ?", user_id)
        await self.add_consent(user_id, "erased", 0, None, now)
        await self._checkpoint()

    async def erase_event(self, room_id: str, event_id: str, now: int) -> None:
        """A message is gone (redacted, or its author erased): its text goes, and so does every
        answer built on it, and every answer built on those, since each carried the words."""
        await self._erase(room_id, event_id, now)
        await self._checkpoint()

    async def _erase(self, room_id: str, event_id: str, now: int) -> None:
        pending, seen = [event_id], set()
        # exact matches within the room only: an id is data, never a pattern
        condition = (
            "room_id = ? AND (question_event_id = ? OR answer_event_id = ? OR EXISTS "
            "(SELECT 1 FROM json_each(CASE WHEN json_valid(context_event_ids) "
            "THEN context_event_ids END) WHERE value = ?))"
        )
        while pending:
            current = pending.pop()
            if current in seen:
                continue
            seen.add(current)
            args = (room_id, current, current, current)
            built_on = await self._all(
                "UPDATE answers SET request_messages = NULL, context_event_ids = NULL, "
                f"text = NULL, erased_at = COALESCE(erased_at, ?) WHERE {condition} "
                "RETURNING answer_event_id",
                now,
                *args,
            )
            pending += [row["answer_event_id"] for row in built_on if row["answer_event_id"]]
            for table in ("messages", "corrections", "undecrypted"):
                await self._write(
                    f"DELETE FROM {table} WHERE room_id = ? AND event_id = ?", room_id, current
                )

    async def _checkpoint(self) -> None:
        """Erased text must not linger in the write-ahead log either (secure_delete clears the
        database pages): copy the log back into the database and empty it, when no reader
        holds it open; a busy log is emptied at a later checkpoint."""
        async with self._guarded():
            await self.conn.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")

    # Encrypted events waiting for their room key
    async def keep_undecrypted(self, row: UndecryptedRow) -> bool:
        """True if the event was not kept already."""
        changed = await self._write(
            "INSERT INTO undecrypted (event_id, room_id, sender, session_id, source, "
            "received_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            row.event_id,
            row.room_id,
            row.sender,
            row.session_id,
            json.dumps(row.source),
            row.received_at,
        )
        return changed == 1

    async def undecrypted(self) -> list[UndecryptedRow]:
        rows = await self._all("SELECT * FROM undecrypted ORDER BY received_at")
        return [
            UndecryptedRow(
                event_id=r["event_id"],
                room_id=r["room_id"],
                sender=r["sender"],
                session_id=r["session_id"],
                source=json.loads(r["source"]),
                received_at=r["received_at"],
                noticed_at=r["noticed_at"],
            )
            for r in rows
        ]

    async def drop_undecrypted(self, room_id: str, event_id: str) -> None:
        await self._write(
            "DELETE FROM undecrypted WHERE room_id = ? AND event_id = ?", room_id, event_id
        )

    async def mark_session_noticed(self, session_id: str, now: int) -> None:
        await self._write(
            "UPDATE undecrypted SET noticed_at = ? WHERE session_id = ? AND noticed_at IS NULL",
            now,
            session_id,
        )

    # Server-side key backup
    async def backed_up_sessions(self, version: str) -> set[str]:
        rows = await self._all(
            "SELECT session_id FROM backed_up_sessions WHERE version = ?", version
        )
        return {row["session_id"] for row in rows}

    async def mark_backed_up(self, version: str, session_ids: list[str]) -> None:
        # "WHERE true" keeps SQLite from reading ON CONFLICT as part of the SELECT's join
        await self._write(
            "INSERT INTO backed_up_sessions (version, session_id) "
            "SELECT ?, value FROM json_each(?) WHERE true ON CONFLICT DO NOTHING",
            version,
            json.dumps(session_ids),
        )


def _prompt(row: aiosqlite.Row) -> PromptRow:
    return PromptRow(
        version=row["version"], text=row["text"], set_by=row["set_by"], set_at=row["set_at"]
    )


def _message(row: aiosqlite.Row) -> MessageRow:
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
    )
