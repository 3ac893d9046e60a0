"""The one connection every store shares: a statement is one trip to aiosqlite's thread.

A trip costs the event loop a wake-up, and an answer makes about a dozen of them, so each helper
here is a single `execute_fetchall`, committed on its own (the connection is in autocommit mode).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from bot.storage.database import open_database, unavailable

T = TypeVar("T")


class Database:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, path: Path) -> Database:
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

    async def one(self, sql: str, *args: Any) -> aiosqlite.Row | None:
        rows = await self.all(sql, *args)
        return rows[0] if rows else None

    async def all(self, sql: str, *args: Any) -> list[aiosqlite.Row]:
        async with self._guarded():
            return list(await self.conn.execute_fetchall(sql, args))

    async def write(self, sql: str, *args: Any) -> int:
        """One statement; how many rows it changed."""
        return len(await self.all(f"{sql} RETURNING 1", *args))

    async def batch(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        """Several writes in one trip and one transaction; how many rows each changed."""

        def run(conn: sqlite3.Connection) -> list[int]:
            return [conn.execute(sql, args).rowcount for sql, args in statements]

        return await self.in_thread(run, write=True)

    async def returning(self, sql: str, *args: Any) -> aiosqlite.Row:
        row = await self.one(sql, *args)
        assert row is not None
        return row

    async def in_thread(self, work: Callable[[sqlite3.Connection], T], write: bool) -> T:
        """Run `work` on the connection in aiosqlite's thread, in one trip; a write runs in one
        transaction, undone whole if anything fails. A transaction spread over several awaits
        would take in whatever statements other coroutines sent meanwhile, and undo them on a
        rollback. (aiosqlite offers no public call for this: `_execute` is how its own methods
        reach the thread.)"""
        raw = self.conn._conn

        def run() -> T:
            if not write:
                return work(raw)
            raw.execute("BEGIN IMMEDIATE")
            try:
                result = work(raw)
                raw.execute("COMMIT")
            except BaseException:
                if raw.in_transaction:
                    raw.rollback()
                raise
            return result

        async with self._guarded():
            return await self.conn._execute(run)

    async def checkpoint(self) -> None:
        """Copy the write-ahead log back into the database and empty it, when no reader holds
        it open (a busy log is emptied at a later checkpoint): erased text must not linger in
        the log either, as secure_delete already clears it from the database pages."""
        async with self._guarded():
            await self.conn.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")

    async def writable(self) -> bool:
        """A real write (rolled into a no-op update): fails on a read-only or full disk."""
        await self.write(
            "INSERT INTO handled_events (room_id, event_id, ts) VALUES ('', 'health', 0) "
            "ON CONFLICT (room_id, event_id) DO UPDATE SET ts = ts"
        )
        return True
