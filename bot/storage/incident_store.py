"""Incidents: moderation decisions other than a pass, by room, stage and category. The person
is a keyed hash; the text is there only when log_content was on, and goes on "forget me", with
the hash."""

from __future__ import annotations

from bot.core.incidents import IncidentCount, IncidentRow
from bot.storage.connection import Database

# The sender of an erased person's incidents: a hash is hex, so it never reads "erased"
ERASED = "erased"


class SqliteIncidents:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, row: IncidentRow) -> int:
        added = await self.db.returning(
            "INSERT INTO incidents (room_id, answer_id, stage, category, backend, action, "
            "sender, text, ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            row.room_id,
            row.answer_id,
            row.stage,
            row.category,
            row.backend,
            row.action,
            row.sender,
            row.text,
            row.ts,
        )
        return int(added["id"])

    async def stats(self, room_id: str | None) -> list[IncidentCount]:
        """Refusals and flags by category, stage and action (every room when room_id is None);
        a moderation server's outages are counted by Prometheus, not here."""
        rows = await self.db.all(
            "SELECT category, stage, action, COUNT(*) AS count FROM incidents "
            "WHERE action IN ('refuse', 'log') AND (?1 IS NULL OR room_id = ?1) "
            "GROUP BY category, stage, action ORDER BY category, stage, action",
            room_id,
        )
        return [IncidentCount(r["category"], r["stage"], r["action"], r["count"]) for r in rows]

    async def forget(self, sender: str) -> int:
        """Clear the texts of one person's incidents and their keyed hash (the key stays, so the
        hash would still name them); the rows stay, as counts are not personal. How many rows."""
        return await self.db.write(
            "UPDATE incidents SET text = NULL, sender = ? WHERE sender = ?", ERASED, sender
        )

    async def forget_answers(self, answer_ids: list[int]) -> None:
        """Clear the texts of incidents about answers whose words were erased."""
        for answer_id in answer_ids:
            await self.db.write(
                "UPDATE incidents SET text = NULL WHERE answer_id = ? AND text IS NOT NULL",
                answer_id,
            )
