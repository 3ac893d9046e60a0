"""Encryption bookkeeping: events waiting for their room key, and keys already backed up."""

from __future__ import annotations

import json

from bot.core.records import UndecryptedRow
from bot.storage.connection import Database


class SqliteCryptoBookkeeping:
    """Undecrypted events and key-backup progress."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def keep_undecrypted(self, row: UndecryptedRow) -> bool:
        """True if the event was not kept already."""
        changed = await self.db.write(
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
        rows = await self.db.all("SELECT * FROM undecrypted ORDER BY received_at")
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
        await self.db.write(
            "DELETE FROM undecrypted WHERE room_id = ? AND event_id = ?", room_id, event_id
        )

    async def mark_session_noticed(
        self, room_id: str, sender: str, session_id: str, now: int
    ) -> None:
        """A session id is whatever the event claims: it counts only with its room and sender."""
        await self.db.write(
            "UPDATE undecrypted SET noticed_at = ? WHERE room_id = ? AND sender = ? "
            "AND session_id = ? AND noticed_at IS NULL",
            now,
            room_id,
            sender,
            session_id,
        )

    async def backed_up_sessions(self, version: str) -> set[str]:
        rows = await self.db.all(
            "SELECT session_id FROM backed_up_sessions WHERE version = ?", version
        )
        return {row["session_id"] for row in rows}

    async def mark_backed_up(self, version: str, session_ids: list[str]) -> None:
        # "WHERE true" keeps SQLite from reading ON CONFLICT as part of the SELECT's join
        await self.db.write(
            "INSERT INTO backed_up_sessions (version, session_id) "
            "SELECT ?, value FROM json_each(?) WHERE true ON CONFLICT DO NOTHING",
            version,
            json.dumps(session_ids),
        )
