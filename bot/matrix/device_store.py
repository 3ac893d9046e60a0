"""Keeping the bot's device and its encryption store together.

nio quietly makes a fresh Olm account when its store is missing, so the same device id would
reappear with new keys (other clients flag that) and every room key would be lost. Start-up
checks the store first and stops with one line; `lucie-bot new-device` is the deliberate way out.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import aiosqlite

from bot import paths
from bot.errors import OperatorError

RECOVERY = "see 'Encryption store' in the README, or run `lucie-bot new-device`"


class StoreProblem(OperatorError):
    """The encryption store cannot be trusted; the message is one line for the operator."""


def store_file(store_dir: Path, user_id: str, device_id: str) -> Path:
    return store_dir / f"{user_id}_{device_id}.db"  # nio's own naming


def stores_of(store_dir: Path, user_id: str) -> list[Path]:
    return sorted(store_dir.glob(f"{user_id}_*.db"))


async def check_store(store_dir: Path, user_id: str, device_id: str | None) -> None:
    """Before nio opens it: the store of the saved device exists, is sound and holds its account."""
    if device_id is None:
        orphans = stores_of(store_dir, user_id)
        if orphans:
            raise StoreProblem(
                f"the saved login is missing but an encryption store exists ({orphans[0].name}):"
                f" restore credentials.json, or {RECOVERY}"
            )
        return
    path = store_file(store_dir, user_id, device_id)
    if not path.exists():
        raise StoreProblem(
            f"the encryption store of device {device_id} is missing ({path}); without it the bot"
            f" cannot read encrypted rooms: {RECOVERY}"
        )
    try:
        async with aiosqlite.connect(f"file:{path}?mode=ro", uri=True) as db:
            async with db.execute("PRAGMA quick_check") as cursor:
                verdict = await cursor.fetchone()
            if not verdict or verdict[0] != "ok":
                raise StoreProblem(f"the encryption store {path} is damaged: {RECOVERY}")
            query = "SELECT count(*) FROM accounts WHERE user_id = ? AND device_id = ?"
            async with db.execute(query, (user_id, device_id)) as cursor:
                row = await cursor.fetchone()
    except aiosqlite.DatabaseError as exc:
        raise StoreProblem(f"the encryption store {path} is damaged ({exc}): {RECOVERY}") from None
    if not row or row[0] != 1:
        raise StoreProblem(
            f"the encryption store {path} holds no keys for device {device_id}: {RECOVERY}"
        )


def retire(data_dir: Path, store_dir: Path, user_id: str, files: list[Path]) -> Path:
    """Move the login and the encryption store aside (never deleted: they may hold room keys)."""
    folder = paths.retired(data_dir) / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for path in [*files, *stores_of(store_dir, user_id)]:
        for part in (path, *path.parent.glob(path.name + "-*")):  # SQLite's -wal and -shm
            if part.exists():
                shutil.move(part, folder / part.name)
    return folder


async def retire_async(data_dir: Path, store_dir: Path, user_id: str, files: list[Path]) -> Path:
    return await asyncio.to_thread(retire, data_dir, store_dir, user_id, files)
