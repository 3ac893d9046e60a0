"""Rooms the bot is in, their settings, and every version of their system prompt."""

from __future__ import annotations

from typing import Any

import aiosqlite

from bot.core.records import PromptRow, RoomRow
from bot.storage.connection import Database


class SqliteRooms:
    """Rooms and their prompts."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def room(self, room_id: str) -> RoomRow | None:
        row = await self.db.one("SELECT * FROM rooms WHERE room_id = ?", room_id)
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
        changed = await self.db.write(
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
        await self.db.write(
            f"UPDATE rooms SET {assignments} WHERE room_id = ?", *fields.values(), room_id
        )

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


def _prompt(row: aiosqlite.Row) -> PromptRow:
    return PromptRow(
        version=row["version"], text=row["text"], set_by=row["set_by"], set_at=row["set_at"]
    )
