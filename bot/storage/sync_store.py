"""Where the bot is in the homeserver's event stream, and which events it already acted on."""

from __future__ import annotations

from bot.storage.connection import Database


class SqliteSyncPosition:
    """The sync token, and the commands and reactions already carried out."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def sync_token(self) -> str | None:
        row = await self.db.one("SELECT next_batch FROM sync_state WHERE id = 1")
        return row["next_batch"] if row else None

    async def set_sync_token(self, token: str) -> None:
        await self.db.write(
            "INSERT INTO sync_state (id, next_batch) VALUES (1, ?) "
            "ON CONFLICT (id) DO UPDATE SET next_batch = excluded.next_batch",
            token,
        )

    async def claim_event(self, room_id: str, event_id: str, now: int) -> bool:
        """True the first time an event is claimed, False ever after."""
        changed = await self.db.write(
            "INSERT INTO handled_events (room_id, event_id, ts) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            room_id,
            event_id,
            now,
        )
        return changed == 1
