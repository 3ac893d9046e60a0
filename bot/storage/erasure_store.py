"""Erasure: a redacted message, or everything about a person, and every record built on it."""

from __future__ import annotations

from bot.core.pseudonyms import LocalPseudonyms
from bot.storage.connection import Database
from bot.storage.incident_store import SqliteIncidents
from bot.storage.local_keys import PEOPLE_KEY, local_key


class SqliteErasure:
    """Takes words out of every record that carried them; only the fact of erasure stays."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.incidents = SqliteIncidents(db)

    async def forget(self, user_id: str, now: int) -> None:
        """Erase everything stored about a person; only the fact of erasure stays."""
        rows = await self.db.all("SELECT room_id, event_id FROM messages WHERE sender = ?", user_id)
        for row in rows:
            await self._erase(row["room_id"], row["event_id"], now)
        for table in ("votes", "labels", "corrections", "undecrypted"):
            await self.db.write(f"DELETE FROM {table} WHERE sender = ?", user_id)
        await self.db.write("DELETE FROM consents WHERE user_id = ?", user_id)
        await self.db.write("DELETE FROM pii_reminded WHERE user_id = ?", user_id)
        # incidents stay counted, under no one's name: their words and keyed hash go
        people = LocalPseudonyms(await local_key(self.db, PEOPLE_KEY))
        await self.incidents.forget(people.of(user_id))
        # nor does anything of theirs wait for the webhook, nor the record of what left
        for table in ("webhook_outbox", "webhook_forwarded", "webhook_people"):
            await self.db.write(f"DELETE FROM {table} WHERE person = ?", people.of(user_id))
        # a room's prompt history stays (it is the room's configuration), without its author
        await self.db.write("UPDATE prompts SET set_by = 'erased' WHERE set_by = ?", user_id)
        await self.db.write(
            "UPDATE answers SET requested_by = NULL WHERE requested_by = ?", user_id
        )
        await self.db.write(
            "INSERT INTO consents (user_id, action, notice_version, room_id, ts) "
            "VALUES (?, 'erased', 0, NULL, ?)",
            user_id,
            now,
        )
        # what they wrote until now stays out, even when fetched again for a later question
        await self.db.write(
            "INSERT INTO erased_people (user_id, erased_at) VALUES (?, ?) "
            "ON CONFLICT (user_id) DO UPDATE SET erased_at = MAX(erased_at, excluded.erased_at)",
            user_id,
            now,
        )
        await self.db.checkpoint()

    async def erase_event(self, room_id: str, event_id: str, now: int) -> None:
        """A message is gone (redacted, or its author erased): its text goes, and so does every
        answer built on it, and every answer built on those, since each carried the words."""
        await self._erase(room_id, event_id, now)
        await self.db.checkpoint()

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
            built_on = await self.db.all(
                "UPDATE answers SET request_messages = NULL, context_event_ids = NULL, "
                f"text = NULL, erased_at = COALESCE(erased_at, ?) WHERE {condition} "
                "RETURNING id, answer_event_id",
                now,
                *args,
            )
            pending += [row["answer_event_id"] for row in built_on if row["answer_event_id"]]
            await self.incidents.forget_answers([row["id"] for row in built_on])
            await self.db.write(
                "INSERT INTO erased_events (room_id, event_id, erased_at) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                room_id,
                current,
                now,
            )
            for table in ("messages", "corrections", "undecrypted"):
                await self.db.write(
                    f"DELETE FROM {table} WHERE room_id = ? AND event_id = ?", room_id, current
                )
            # feedback it made that waits for the webhook stays in (its removal, when it had
            # left, was queued before: bot.core.feedback_events)
            for table in ("webhook_outbox", "webhook_forwarded"):
                await self.db.write(
                    f"DELETE FROM {table} WHERE room_id = ? AND source_event_id = ?",
                    room_id,
                    current,
                )
