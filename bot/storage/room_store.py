"""Rooms the bot is in, their settings, and every version of their system prompt."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import aiosqlite

from bot.core.records import PromptRow, RoomRow
from bot.storage.connection import Database

# rooms whose settings are kept in memory: a room is read several times per answer
CACHED_ROOMS = 10_000
ROOM_FIELDS = {
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


class SqliteRooms:
    """Rooms and their prompts.

    Room rows are cached: only this class writes the rooms table, and only in the bot's own
    process, so every change passes here and clears the room from the cache."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._rooms: OrderedDict[str, RoomRow] = OrderedDict()
        self._writes = 0  # a read that a write overtook must not cache what it read

    async def room(self, room_id: str) -> RoomRow | None:
        cached = self._rooms.get(room_id)
        if cached is not None:
            self._rooms.move_to_end(room_id)
            return cached
        writes = self._writes
        row = await self.db.one("SELECT * FROM rooms WHERE room_id = ?", room_id)
        if row is None:
            return None
        room = _room(row)
        if writes != self._writes:
            return room
        self._rooms[room_id] = room
        if len(self._rooms) > CACHED_ROOMS:
            self._rooms.popitem(last=False)
        return room

    async def add_room(self, room_id: str, joined_at: int) -> bool:
        """Record a joined room; False when it was already known (a rejoin keeps its settings)."""
        changed = await self.db.write(
            "INSERT INTO rooms (room_id, joined_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
            room_id,
            joined_at,
        )
        return changed == 1

    async def set_room(self, room_id: str, **fields: Any) -> None:
        unknown = set(fields) - ROOM_FIELDS
        if unknown:
            raise ValueError(f"unknown room fields {unknown}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self._writes += 1
        try:
            await self.db.write(
                f"UPDATE rooms SET {assignments} WHERE room_id = ?", *fields.values(), room_id
            )
        finally:  # even a write that failed may have changed the row: read it again
            self._rooms.pop(room_id, None)

    async def current_prompt(self, room_id: str) -> PromptRow | None:
        row = await self.db.one(
            "SELECT * FROM prompts WHERE room_id = ? ORDER BY version DESC LIMIT 1", room_id
        )
        return _prompt(row) if row else None

    async def add_prompt(self, room_id: str, text: str | None, set_by: str, set_at: int) -> int:
        row = await self.db.returning(
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
        rows = await self.db.all(
            "SELECT * FROM prompts WHERE room_id = ? ORDER BY version DESC", room_id
        )
        return [_prompt(row) for row in rows]

    async def remember_policy(self, sha256: str, lang: str, text: str, now: int) -> None:
        """The operators' policy as the model read it, kept once for exports."""
        await self.db.write(
            "INSERT INTO policies (sha256, lang, text, first_used) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (sha256) DO NOTHING",
            sha256,
            lang,
            text,
            now,
        )


def _room(row: aiosqlite.Row) -> RoomRow:
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


def _prompt(row: aiosqlite.Row) -> PromptRow:
    return PromptRow(
        version=row["version"], text=row["text"], set_by=row["set_by"], set_at=row["set_at"]
    )
