"""What each person and room spent (questions, model tokens), for quotas over sliding windows.

Times are milliseconds, like the rest of the database; a window's start is inclusive."""

from __future__ import annotations

from collections.abc import Sequence

from bot.storage.connection import Database

# rows read to find when a scope falls back under a limit: past this the answer is the latest
# time walked, an early estimate that the next check corrects
MAX_WALK = 2000


class SqliteUsage:
    """bot.core.quotas.UsageStore over the bot's database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, scope: str, kind: str, amount: int, ts: int) -> None:
        await self.db.write(
            "INSERT INTO usage (scope, kind, amount, ts) VALUES (?, ?, ?, ?)",
            scope,
            kind,
            amount,
            ts,
        )

    async def spent(self, scope: str, kind: str, since_ts: int) -> int:
        row = await self.db.returning(
            "SELECT COALESCE(SUM(amount), 0) AS total FROM usage "
            "WHERE scope = ? AND kind = ? AND ts >= ?",
            scope,
            kind,
            since_ts,
        )
        return int(row["total"])

    async def spending(
        self, scopes: Sequence[str], since: Sequence[int]
    ) -> dict[tuple[str, str], list[int]]:
        """For each scope and kind with rows, the amounts spent since each start of `since`, in
        one trip (a check reads several windows of two scopes at once)."""
        if not scopes or not since:
            return {}
        sums = ", ".join("SUM(CASE WHEN ts >= ? THEN amount ELSE 0 END)" for _ in since)
        marks = ", ".join("?" for _ in scopes)
        rows = await self.db.all(
            f"SELECT scope, kind, {sums} FROM usage WHERE scope IN ({marks}) "
            "AND kind IN ('question', 'tokens') AND ts >= ? GROUP BY scope, kind",
            *since,
            *scopes,
            min(since),
        )
        return {(row[0], row[1]): [int(row[i + 2]) for i in range(len(since))] for row in rows}

    async def falls_under(self, scope: str, kind: str, since_ts: int, limit: int) -> int | None:
        """The time of the row whose leaving the window brings the amount spent since since_ts
        under limit (the window slides: rows leave it oldest first); None when already under."""
        rows = await self.db.all(
            "SELECT ts, amount, (SELECT COALESCE(SUM(amount), 0) FROM usage "
            "WHERE scope = ?1 AND kind = ?2 AND ts >= ?3) AS total "
            "FROM usage WHERE scope = ?1 AND kind = ?2 AND ts >= ?3 ORDER BY ts LIMIT ?4",
            scope,
            kind,
            since_ts,
            MAX_WALK,
        )
        if not rows or int(rows[0]["total"]) < limit:
            return None
        remaining = int(rows[0]["total"])
        for row in rows:
            remaining -= int(row["amount"])
            if remaining < limit:
                return int(row["ts"])
        return int(rows[-1]["ts"])

    async def prune(self, before_ts: int, batch: int = 5000) -> int:
        """Drop rows older than before_ts, at most `batch` of them; how many went. Rows are read
        oldest first by rowid (they are written in time order), so a prune costs at most
        `batch` rows read, however large the table."""
        return await self.db.write(
            "DELETE FROM usage WHERE rowid IN (SELECT rowid FROM "
            "(SELECT rowid, ts FROM usage ORDER BY rowid LIMIT ?) WHERE ts < ?)",
            batch,
            before_ts,
        )
