"""Who was already reminded not to share personal identifiers."""

from __future__ import annotations

from bot.storage.connection import Database


class SqliteReminders:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def first_reminder(self, user_id: str, now: int) -> bool:
        """True once per person: the first time, and never again (even after a restart)."""
        changed = await self.db.write(
            "INSERT INTO pii_reminded (user_id, ts) VALUES (?, ?) ON CONFLICT (user_id) DO NOTHING",
            user_id,
            now,
        )
        return changed > 0
