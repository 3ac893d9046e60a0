"""What the export reads, through the same storage layer as the bot: streamed and batched, so a
database of millions of votes is read in constant memory. Read-only: it never upgrades or
changes the database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import aiosqlite

from bot.storage.database import migrations, schema_version

BATCH = 500
Key = tuple[str, str]  # (room id, event id)
# the questions (room id, question event id) of one part of a split export: from the first
# (included, None: from the start) to the second (excluded, None: to the end)
Shard = tuple[Key | None, Key | None]
# tables the export reads by (room id, event id), and the column that holds the event id
KEYED = {
    "messages": "event_id",
    "current_votes": "answer_event_id",
    "labels": "answer_event_id",
    "corrections": "answer_event_id",
}
# keyed tables with one row per (room id, event id) (their primary key): no order to keep, and
# sorting by ts made SQLite read the whole room through its (room_id, ts) index to skip a sort
UNIQUE_KEYS = frozenset({"messages"})


def _per_room(keys: Iterable[Key]) -> Iterator[tuple[str, list[str]]]:
    """Event ids grouped by room, BATCH at a time: every query names its room."""
    by_room: dict[str, list[str]] = {}
    for room_id, event_id in keys:
        by_room.setdefault(room_id, []).append(event_id)
    for room_id, event_ids in by_room.items():
        for start in range(0, len(event_ids), BATCH):
            yield room_id, _padded(event_ids[start : start + BATCH])


def _padded(chunk: list[Any]) -> list[Any]:
    """The chunk, its last value repeated up to a power of two (or BATCH): a value twice in an
    IN list changes nothing, and queries of a few lengths only are prepared once each. Of every
    length, SQLite keeps a prepared statement (up to 128, of up to BATCH values): memory grew
    with the size of the database, and each new length was parsed again."""
    size = 1
    while size < len(chunk):
        size *= 2
    return chunk + chunk[-1:] * (min(size, BATCH) - len(chunk))


# the model's answers: finished, never refused nor replaced by a refusal
_ANSWERS = "a.status IN ('complete', 'cut') AND a.refusal IS NULL AND a.answer_event_id IS NOT NULL"
# refusals shown to a person: before the model (status error, no model call) or in place of an
# answer the model wrote (complete or cut)
_REFUSALS = "a.status IN ('complete', 'cut', 'error') AND a.refusal IS NOT NULL"


def _finished(refused: bool) -> str:
    return (
        f"{_REFUSALS if refused else _ANSWERS} AND a.erased_at IS NULL AND a.text IS NOT NULL "
        "AND r.collection = 1 AND a.collected = 1 AND a.question_ts >= ? "
        "AND (? IS NULL OR a.room_id = ?)"
    )


def _bound(key: Key | None) -> tuple[str | None, str | None, str | None]:
    return (None, None, None) if key is None else (key[0], key[0], key[1])


class SchemaMismatch(Exception):
    def __init__(self, found: int, known: int) -> None:
        super().__init__(f"schema {found}, code {known}")
        self.found, self.known = found, known


class SqliteExportReader:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, path: Path) -> SqliteExportReader:
        conn = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True)
        conn.row_factory = aiosqlite.Row
        reader = cls(conn)
        try:
            found, known = await schema_version(conn), len(migrations())
            if found != known:
                raise SchemaMismatch(found, known)
        except BaseException:
            await conn.close()
            raise
        return reader

    async def close(self) -> None:
        await self.conn.close()

    async def latest_consents(self) -> AsyncIterator[aiosqlite.Row]:
        """Each person's latest consent row: user_id, action, notice_version."""
        query = (
            "SELECT c.user_id, c.action, c.notice_version FROM consents c "
            "JOIN (SELECT user_id, MAX(id) AS id FROM consents GROUP BY user_id) latest "
            "ON latest.id = c.id"
        )
        async with self.conn.execute(query) as cursor:
            async for row in cursor:
                yield row

    async def people(self) -> AsyncIterator[aiosqlite.Row]:
        """Everyone whose words the bot kept: sender, sender_name."""
        query = "SELECT DISTINCT sender, sender_name FROM messages WHERE from_bot = 0"
        async with self.conn.execute(query) as cursor:
            async for row in cursor:
                yield row

    async def finished_answers(
        self, since_ms: int, room: str | None, refused: bool = False, shard: Shard = (None, None)
    ) -> AsyncIterator[list[aiosqlite.Row]]:
        """Answers that may be exported, in batches, siblings of a question together: the
        model's answers, or (refused) the refusals shown instead of one; with shard, only the
        questions from its first key (included) to its last (excluded)."""
        start, stop = shard
        query = (
            "SELECT a.*, r.lang AS room_lang FROM answers a JOIN rooms r ON r.room_id = a.room_id "
            f"WHERE {_finished(refused)} AND (? IS NULL OR (a.room_id, a.question_event_id) >= "
            "(?, ?)) AND (? IS NULL OR (a.room_id, a.question_event_id) < (?, ?)) "
            "ORDER BY a.room_id, a.question_event_id, a.sibling"
        )
        bounds = [*_bound(start), *_bound(stop)]
        async with self.conn.execute(query, (since_ms, room, room, *bounds)) as cursor:
            # a batch a trip to the database's thread (iterating the cursor takes 64 rows a trip)
            while batch := list(await cursor.fetchmany(BATCH)):
                yield batch

    async def count_questions(self, since_ms: int, room: str | None, refused: bool) -> int:
        """How many questions finished_answers reads."""
        query = (
            "SELECT COUNT(*) FROM (SELECT DISTINCT a.room_id, a.question_event_id FROM answers a "
            f"JOIN rooms r ON r.room_id = a.room_id WHERE {_finished(refused)})"
        )
        async with self.conn.execute(query, (since_ms, room, room)) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row is not None else 0

    async def question_keys(
        self, since_ms: int, room: str | None, refused: bool
    ) -> AsyncIterator[Key]:
        """The keys of the questions finished_answers reads, in its order."""
        query = (
            "SELECT DISTINCT a.room_id, a.question_event_id FROM answers a "
            f"JOIN rooms r ON r.room_id = a.room_id WHERE {_finished(refused)} "
            "ORDER BY a.room_id, a.question_event_id"
        )
        async with self.conn.execute(query, (since_ms, room, room)) as cursor:
            while batch := await cursor.fetchmany(BATCH * 10):
                for row in batch:
                    yield (row[0], row[1])

    async def policy(self, sha256: str) -> str | None:
        """The operators' policy text an answer's model read first, by its hash."""
        async with self.conn.execute(
            "SELECT text FROM policies WHERE sha256 = ?", (sha256,)
        ) as cursor:
            row = await cursor.fetchone()
        return row[0] if row is not None else None

    async def refusals_touching(self, keys: Iterable[Key]) -> list[dict[str, Any]]:
        """Refused or replaced answers whose question or shown refusal is one of keys: room_id,
        question_event_id, answer_event_id, refusal."""
        found: list[dict[str, Any]] = []
        for room_id, chunk in _per_room(keys):
            marks = ", ".join("?" * len(chunk))
            # one select per column, so that each reads its own index (an OR reads the room's)
            query = " UNION ALL ".join(
                "SELECT room_id, question_event_id, answer_event_id, refusal FROM answers "
                f"WHERE room_id = ? AND {column} IN ({marks}) AND refusal IS NOT NULL"
                for column in ("question_event_id", "answer_event_id")
            )
            async with self.conn.execute(query, [room_id, *chunk] * 2) as cursor:
                found += [dict(row) async for row in cursor]
        return found

    async def prompt(self, room_id: str, version: int) -> aiosqlite.Row | None:
        """A room's prompt version: text, set_by."""
        async with self.conn.execute(
            "SELECT text, set_by FROM prompts WHERE room_id = ? AND version = ?",
            (room_id, version),
        ) as cursor:
            return await cursor.fetchone()

    async def by_key(
        self,
        table: str,
        keys: Iterable[Key],
        standing_only: bool = False,
        columns: tuple[str, ...] | None = None,
    ) -> dict[Key, list[dict[str, Any]]]:
        """Rows of a keyed table whose (room_id, event id) is one of keys, grouped by that
        pair, oldest first; standing_only leaves out withdrawn reactions; columns: only these
        (and the event id), not all."""
        column = KEYED[table]
        chosen = "*" if columns is None else ", ".join(dict.fromkeys((column, *columns)))
        condition = " AND withdrawn_at IS NULL" if standing_only else ""
        order = "" if table in UNIQUE_KEYS else " ORDER BY ts"
        grouped: dict[Key, list[dict[str, Any]]] = {}
        for room_id, chunk in _per_room(keys):
            marks = ", ".join("?" * len(chunk))
            query = (
                f"SELECT {chosen} FROM {table} WHERE room_id = ? AND {column} IN ({marks})"
                f"{condition}{order}"
            )
            async with self.conn.cursor() as cursor:
                # plain tuples, made dicts here at once: a Row object for each of a million
                # votes on top of its dict costs a third more
                cursor.row_factory = None
                await cursor.execute(query, [room_id, *chunk])
                rows = await cursor.fetchall()  # the chunk (at most BATCH keys) in one trip
                names = [described[0] for described in cursor.description]
            at = names.index(column)
            for row in rows:
                grouped.setdefault((room_id, row[at]), []).append(
                    dict(zip(names, row, strict=True))
                )
        return grouped

    async def answer_sources(self, answer_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
        """The passages each answer was given, in rank order, with what decides whether they
        may be exported: the passage's text (gone with its document), who shared the file, and
        whether its collection is exportable."""
        grouped: dict[int, list[dict[str, Any]]] = {}
        for start in range(0, len(answer_ids), BATCH):
            chunk = _padded(answer_ids[start : start + BATCH])
            marks = ", ".join("?" * len(chunk))
            query = (
                "SELECT s.answer_id, s.rank, s.document_name, s.page, s.section, s.collection, "
                "s.event_id, s.document_id, s.document_version, p.text, d.sharer, d.room_id, "
                "c.exportable FROM answer_sources s "
                "LEFT JOIN passages p ON p.id = s.passage_id "
                "LEFT JOIN documents d ON d.id = s.document_id "
                "LEFT JOIN collections c ON c.name = s.collection "
                f"WHERE s.answer_id IN ({marks}) ORDER BY s.answer_id, s.rank"
            )
            async with self.conn.execute(query, chunk) as cursor:
                async for row in cursor:
                    grouped.setdefault(row["answer_id"], []).append(dict(row))
        return grouped

    async def grounded_answers(self, keys: Iterable[Key]) -> dict[Key, tuple[int, int]]:
        """(answer id, grounded) of the bot's messages among keys that answered from documents
        (or found none that covered the question)."""
        found: dict[Key, tuple[int, int]] = {}
        for room_id, chunk in _per_room(keys):
            marks = ", ".join("?" * len(chunk))
            query = (
                "SELECT answer_event_id, id, grounded FROM answers WHERE room_id = ? "
                f"AND answer_event_id IN ({marks}) AND grounded IS NOT NULL"
            )
            async with self.conn.execute(query, [room_id, *chunk]) as cursor:
                async for row in cursor:
                    found[(room_id, row[0])] = (row[1], row[2])
        return found
