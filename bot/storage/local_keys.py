"""Keys the bot makes for itself and keeps in its database (mode 0600)."""

from __future__ import annotations

import secrets

from bot.storage.connection import Database

KEY_BYTES = 32
PEOPLE_KEY = "people"  # keys the hashes of user ids in incidents and quotas


async def local_key(db: Database, name: str) -> bytes:
    """The key called name, made on first use; the same one on every later call and start."""
    await db.write(
        "INSERT INTO local_keys (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
        name,
        secrets.token_bytes(KEY_BYTES),
    )
    row = await db.returning("SELECT value FROM local_keys WHERE name = ?", name)
    return bytes(row["value"])
