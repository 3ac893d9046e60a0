"""Documents shared in rooms and operators' collections: their passages, terms and vectors, the
rooms' choices of collections, and the passages each answer used.

A change that takes several statements runs in one trip to aiosqlite's thread, between BEGIN
IMMEDIATE and COMMIT: the connection is shared by every coroutine of the bot, so a transaction
spread over several awaits would take in whatever statements other coroutines sent meanwhile
(and undo them on a rollback), and would let a search see a half-replaced document.

A removed document's passages, terms and vectors go in the same statement (a trigger on
`passages`); its rows in `answer_sources` go too. FTS5 keeps a deleted row's terms in its index
segments until they are merged, so a removal ends by merging them (`optimize`) and emptying the
write-ahead log, as the erasure of a message does.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bot.rag.documents import Found, PreparedPassage, Scope
from bot.rag.ports import CollectionRow, DocumentRow, NewDocument
from bot.storage import document_search as search
from bot.storage import document_writes as writes
from bot.storage.connection import Database

if TYPE_CHECKING:
    import numpy as np

_COLUMNS = (
    "id, name, version, kind, size, pages, passages, added_at, room_id, event_id, sharer, "
    "collection, path, embedded"
)


def _document(row: sqlite3.Row) -> DocumentRow:
    values = dict(row)
    values["embedded"] = bool(values["embedded"])
    return DocumentRow(**values)


class SqliteDocuments:
    """bot.rag.ports.DocumentStore over the bot's database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # indexing

    async def begin_document(self, doc: NewDocument, now: int) -> int:
        row = await self.db.returning(
            "INSERT INTO documents (name, version, kind, size, added_at, room_id, event_id, "
            "sharer, collection, path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            doc.name,
            doc.version,
            doc.kind,
            doc.size,
            now,
            doc.room_id,
            doc.event_id,
            doc.sharer,
            doc.collection,
            doc.path,
        )
        return int(row["id"])

    async def add_passages(
        self,
        document_id: int,
        passages: Sequence[PreparedPassage],
        vectors: np.ndarray | None,
    ) -> None:
        if vectors is not None and (vectors.ndim != 2 or vectors.shape[0] != len(passages)):
            raise ValueError(f"{len(passages)} passages but vectors of shape {vectors.shape}")
        if vectors is not None and not _finite(vectors):
            raise ValueError("vectors must be finite")
        if not passages:
            return
        await self.db.in_thread(
            lambda conn: writes.add_passages(conn, document_id, passages, vectors), True
        )

    async def finish_document(self, document_id: int, pages: int | None) -> None:
        await self.db.in_thread(lambda conn: writes.finish(conn, document_id, pages), True)

    async def discard_document(self, document_id: int) -> None:
        await self.db.write("DELETE FROM documents WHERE id = ?", document_id)

    # reading and removing

    async def document(self, document_id: int) -> DocumentRow | None:
        row = await self.db.one(f"SELECT {_COLUMNS} FROM documents WHERE id = ?", document_id)
        return _document(row) if row is not None else None

    async def room_documents(self, room_id: str) -> list[DocumentRow]:
        rows = await self.db.all(
            f"SELECT {_COLUMNS} FROM documents WHERE room_id = ? AND status = 'ready' "
            "ORDER BY added_at, id",
            room_id,
        )
        return [_document(row) for row in rows]

    async def has_documents(self, room_id: str) -> bool:
        row = await self.db.one(
            "SELECT EXISTS (SELECT 1 FROM documents WHERE room_id = ? AND status = 'ready')",
            room_id,
        )
        return bool(row and row[0])

    async def collection_documents(self, name: str) -> list[DocumentRow]:
        rows = await self.db.all(
            f"SELECT {_COLUMNS} FROM documents WHERE collection = ? AND status = 'ready' "
            "ORDER BY path, id",
            name,
        )
        return [_document(row) for row in rows]

    async def remove_document(self, document_id: int) -> bool:
        return await self._removing("id = ?", (document_id,)) > 0

    async def remove_shared_by_event(self, room_id: str, event_id: str) -> int:
        return await self._removing("room_id = ? AND event_id = ?", (room_id, event_id))

    async def remove_shared_by(self, user_id: str) -> int:
        return await self._removing("sharer = ? AND collection IS NULL", (user_id,))

    async def remove_collection(self, name: str, path: str | None = None) -> int:
        """The whole collection, or the file at `path`, or every file under the folder `path`."""
        if path is not None:
            folder = path.rstrip("/") + "/"
            where = "collection = ? AND (path = ? OR substr(path, 1, length(?)) = ?)"
            return await self._removing(where, (name, path, folder, folder))

        def work(conn: sqlite3.Connection) -> int:
            removed = writes.remove(conn, "collection = ?", (name,))
            conn.execute("DELETE FROM collections WHERE name = ?", (name,))
            return removed

        removed = await self.db.in_thread(work, True)
        await self._purge(removed)
        return removed

    async def discard_unfinished_shared(self) -> int:
        return await self._removing("status = 'indexing' AND room_id IS NOT NULL", ())

    async def shared_file_erased(self, room_id: str, event_id: str, sharer: str, ts: int) -> bool:
        row = await self.db.one(
            "SELECT EXISTS (SELECT 1 FROM erased_events WHERE room_id = ? AND event_id = ?) "
            "OR EXISTS (SELECT 1 FROM erased_people WHERE user_id = ? AND erased_at >= ?)",
            room_id,
            event_id,
            sharer,
            ts,
        )
        return bool(row and row[0])

    async def _removing(self, where: str, args: Sequence[Any]) -> int:
        removed = await self.db.in_thread(lambda conn: writes.remove(conn, where, args), True)
        await self._purge(removed)
        return removed

    async def _purge(self, removed: int) -> None:
        """Merge the index's segments, where deleted passages' terms linger until merged, and
        empty the write-ahead log (secure_delete already zeroes the freed pages)."""
        if removed:
            await self.db.write("INSERT INTO passage_terms (passage_terms) VALUES ('optimize')")
            await self.db.checkpoint()

    # collections and the rooms that use them

    async def ensure_collection(self, name: str, exportable: bool, now: int) -> None:
        await self.db.write(
            "INSERT INTO collections (name, exportable, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET exportable = excluded.exportable",
            name,
            int(exportable),
            now,
        )

    async def collections(self) -> list[CollectionRow]:
        rows = await self.db.all(
            "SELECT c.name, c.exportable, COUNT(d.id), COALESCE(SUM(d.passages), 0), "
            "c.created_at FROM collections c "
            "LEFT JOIN documents d ON d.collection = c.name AND d.status = 'ready' "
            "GROUP BY c.name ORDER BY c.name"
        )
        return [CollectionRow(row[0], bool(row[1]), row[2], row[3], row[4]) for row in rows]

    async def room_collections(self, room_id: str, defaults: Sequence[str]) -> list[str]:
        choices = {
            row["collection"]: bool(row["used"])
            for row in await self.db.all(
                "SELECT collection, used FROM room_collections WHERE room_id = ?", room_id
            )
        }
        wanted = [name for name in defaults if choices.get(name, True)]
        wanted += [name for name, used in choices.items() if used]
        wanted = list(dict.fromkeys(wanted))
        existing = set()
        for part in search.chunks(wanted):
            rows = await self.db.all(
                f"SELECT name FROM collections WHERE name IN ({', '.join('?' * len(part))})",
                *part,
            )
            existing |= {row["name"] for row in rows}
        return [name for name in wanted if name in existing]

    async def use_collection(self, room_id: str, name: str, used: bool) -> None:
        await self.db.write(
            "INSERT INTO room_collections (room_id, collection, used) VALUES (?, ?, ?) "
            "ON CONFLICT (room_id, collection) DO UPDATE SET used = excluded.used",
            room_id,
            name,
            int(used),
        )

    async def auto_index(self, room_id: str) -> bool:
        row = await self.db.one("SELECT auto_index FROM room_documents WHERE room_id = ?", room_id)
        return bool(row and row["auto_index"])

    async def set_auto_index(self, room_id: str, on: bool) -> None:
        await self.db.write(
            "INSERT INTO room_documents (room_id, auto_index) VALUES (?, ?) "
            "ON CONFLICT (room_id) DO UPDATE SET auto_index = excluded.auto_index",
            room_id,
            int(on),
        )

    # searching

    async def lexical(self, terms: Sequence[str], scope: Scope, limit: int) -> list[int]:
        if not terms:
            return []
        return await self.db.in_thread(
            lambda conn: search.lexical(conn, terms, scope, limit), False
        )

    async def scope_stamp(self, scope: Scope) -> str:
        keys = [search.owner_key(room, name) for room, name in search.scope_owners(scope)]
        if not keys:
            return ""
        rows = await self.db.all(
            "SELECT owner, generation FROM document_generations "
            f"WHERE owner IN ({', '.join('?' * len(keys))})",
            *keys,
        )
        generations = {row["owner"]: row["generation"] for row in rows}
        return "|".join(f"{key}={generations.get(key, 0)}" for key in keys)

    async def scope_vectors(self, scope: Scope) -> tuple[np.ndarray, np.ndarray]:
        reader = search.VectorReader(scope)
        await self.db.in_thread(reader.plan, False)
        for batch in reader.batches:
            await self.db.in_thread(functools.partial(reader.read, batch=batch), False)
        return reader.result()

    async def found(self, passage_ids: Sequence[int]) -> dict[int, Found]:
        if not passage_ids:
            return {}
        return await self.db.in_thread(lambda conn: search.found(conn, passage_ids), False)

    # what answers used

    async def record_sources(self, answer_id: int, found: Sequence[Found]) -> None:
        """Recorded with the request, before the model answers: a removal from then on finds
        the answer and clears its request. The answer is marked grounded when it was given
        sources, searched but ungrounded when none."""
        await self.db.in_thread(lambda conn: writes.record_sources(conn, answer_id, found), True)

    async def mark_cited(self, answer_id: int, cited: set[int]) -> None:
        numbers = sorted(cited)
        marks = ", ".join("?" * len(numbers)) or "NULL"
        await self.db.write(
            f"UPDATE answer_sources SET cited = rank IN ({marks}) WHERE answer_id = ?",
            *numbers,
            answer_id,
        )

    async def last_sourced_answer(self, room_id: str) -> int | None:
        row = await self.db.one(
            "SELECT id FROM answers WHERE room_id = ? AND grounded = 1 AND EXISTS "
            "(SELECT 1 FROM answer_sources s WHERE s.answer_id = answers.id) "
            "ORDER BY id DESC LIMIT 1",
            room_id,
        )
        return int(row["id"]) if row is not None else None

    async def answer_sources(self, answer_id: int) -> list[Found]:
        """A source whose document was replaced since keeps its citation, without its text
        (passage_id 0); a removed document's sources are gone."""
        rows = await self.db.all(
            "SELECT COALESCE(s.passage_id, 0), COALESCE(s.document_id, 0), "
            "COALESCE(s.document_version, ''), COALESCE(s.document_name, ''), "
            "COALESCE(p.text, ''), s.page, s.section, "
            "CASE WHEN s.collection IS NULL THEN a.room_id END, s.event_id, s.collection, "
            "COALESCE(s.score, 0.0), s.lexical_rank, s.dense_rank "
            "FROM answer_sources s JOIN answers a ON a.id = s.answer_id "
            "LEFT JOIN passages p ON p.id = s.passage_id WHERE s.answer_id = ? ORDER BY s.rank",
            answer_id,
        )
        return [Found(*row) for row in rows]


def _finite(vectors: np.ndarray) -> bool:
    import numpy as np  # loaded with the first vectors: a bot without embeddings never needs it

    return bool(np.isfinite(vectors).all())
