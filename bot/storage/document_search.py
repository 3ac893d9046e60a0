"""Searching documents' passages, as functions run on the shared connection inside aiosqlite's
thread, each sent there in one trip by `Database.in_thread`: the full-text query, the vectors
of a scope and the passages to cite.

Every query names its scope in SQL (the room's own documents, the collections it uses, ready
only). The full-text query also names it inside the FTS5 index: each passage carries one token
for its room or collection in the `owner` column, so a room's question intersects its own few
passages in the index instead of ranking the whole corpus and filtering afterwards.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from bot.rag.documents import Found, Scope

if TYPE_CHECKING:
    import numpy as np

# Postings (passage, term) one search may score: about a microsecond each on one core. When the
# scope is larger, the most common terms are left out (their BM25 weight is small anyway),
# keeping at least the rarest, so a question made of common words stays within ~50 ms.
POSTINGS_BUDGET = 15_000
CHUNK = 500  # ids per IN (...) list, well under SQLite's bound on parameters
MAX_VECTOR_BYTES = 8192 * 4  # the largest embeddings models give 4,096 floats
MAX_SCOPE_VECTOR_BYTES = 1024**3  # what one scope's matrix may take in memory, at most
VECTORS_PER_TRIP = 8192  # about 12 MB of 384-float vectors, some 100 ms of the thread
_FTS_ATTEMPTS = 3
T = TypeVar("T")


def owner_token(room_id: str | None, collection: str | None) -> str:
    """The index token naming a passage's room or collection (hex: unicode61 keeps it whole)."""
    kind, name = ("c", collection) if collection is not None else ("r", room_id or "")
    return kind + hashlib.blake2b(name.encode("utf-8", "replace"), digest_size=10).hexdigest()


def owner_key(room_id: str | None, collection: str | None) -> str:
    """The key of a room's or a collection's generation in `document_generations`."""
    return f"collection:{collection}" if collection is not None else f"room:{room_id}"


def scope_owners(scope: Scope) -> list[tuple[str | None, str | None]]:
    owners: list[tuple[str | None, str | None]] = [(None, name) for name in scope.collections]
    return ([(scope.room_id, None)] if scope.room_id is not None else []) + owners


def scope_condition(scope: Scope, alias: str = "d") -> tuple[str, list[Any]]:
    """SQL keeping the ready documents of the scope, with its arguments. Each part is written
    only when the scope has it, so that the planner reads the room's and the collections'
    indexes; `+` keeps it off the status index, which would read every room's documents."""
    parts, args = [], []
    if scope.room_id is not None:
        parts.append(f"{alias}.room_id = ?")
        args.append(scope.room_id)
    if scope.collections:
        parts.append(f"{alias}.collection IN ({', '.join('?' * len(scope.collections))})")
        args += scope.collections
    return f"+{alias}.status = 'ready' AND ({' OR '.join(parts) or '0'})", args


def chunks(items: Sequence[T]) -> list[Sequence[T]]:
    return [items[start : start + CHUNK] for start in range(0, len(items), CHUNK)]


def _quoted(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def _plan(conn: sqlite3.Connection, terms: Sequence[str], scope: Scope) -> tuple[list[str], bool]:
    """The terms worth searching, and whether the index should intersect the scope's owners.

    Terms not in the index are left out; in a large scope, so are the most common until the
    postings to score fit the budget. Intersecting the owners pays when the scope is a small
    part of the index (a room's few files); over most of it, it only adds postings to read."""
    unique = list(dict.fromkeys(terms))
    marks = ", ".join("?" * len(unique))
    counts = dict(
        conn.execute(
            f"SELECT term, doc FROM passage_vocab WHERE col = 'terms' AND term IN ({marks})",
            unique,
        ).fetchall()
    )
    present = sorted((term for term in unique if counts.get(term)), key=lambda t: counts[t])
    condition, args = scope_condition(scope)
    size, total = conn.execute(
        f"SELECT COALESCE(SUM(CASE WHEN {condition} THEN passages END), 0), "
        "COALESCE(SUM(passages), 0) FROM documents d WHERE status = 'ready'",
        args,
    ).fetchone()
    narrow = size * 2 < total
    if size <= POSTINGS_BUDGET:
        return present, narrow
    kept: list[str] = []
    postings = 0
    for term in present:
        if kept and postings + counts[term] > POSTINGS_BUDGET:
            break
        kept.append(term)
        postings += counts[term]
    return kept, narrow


def lexical(conn: sqlite3.Connection, terms: Sequence[str], scope: Scope, limit: int) -> list[int]:
    """Passage ids of the scope matching any of the terms, best BM25 first."""
    owners = [owner_token(room_id, name) for room_id, name in scope_owners(scope)]
    if not terms or not owners or limit <= 0:
        return []
    kept, narrow = _plan(conn, terms, scope)
    if not kept:
        return []
    match = "{terms}: (" + " OR ".join(_quoted(term) for term in kept) + ")"
    if narrow:
        match += " AND {owner}: (" + " OR ".join(owners) + ")"
    condition, args = scope_condition(scope)
    # the index's best are checked against the documents table: they may belong to a file
    # still being indexed, or to other owners; when those crowd the best out, look further
    sql = (
        f"SELECT f.id, d.id IS NOT NULL AND {condition} FROM (SELECT rowid AS id, rank "
        "FROM passage_terms WHERE passage_terms MATCH ? AND rank MATCH 'bm25(1.0, 0.0)' "
        "ORDER BY rank LIMIT ?) f LEFT JOIN passages p ON p.id = f.id "
        "LEFT JOIN documents d ON d.id = p.document_id ORDER BY f.rank, f.id"
    )
    window, ids = limit * 2, []
    for attempt in range(_FTS_ATTEMPTS):
        if attempt == _FTS_ATTEMPTS - 1:
            window = -1  # no limit
        rows = conn.execute(sql, [*args, match, window]).fetchall()
        ids = [row[0] for row in rows if row[1]]
        if len(ids) >= limit or len(rows) < window:
            break
        window *= 8
    return ids[:limit]


def _zeros(shape: int | tuple[int, int], dtype: str) -> np.ndarray:
    # numpy is loaded with the first vectors: a bot without embeddings never needs it
    import numpy as np

    return np.zeros(shape, dtype=dtype)


@dataclass
class VectorReader:
    """Reads a scope's vectors in several trips to the database's thread, a few thousand at a
    time, so that reading a large collection never holds up the bot's other statements long.
    Only fully embedded documents count, with vectors of the size of the newest one's (vectors
    of a former model, before `kb rebuild`, cannot be compared)."""

    scope: Scope
    batches: list[list[int]] = field(default_factory=list)  # document ids, trip by trip
    rows: int = 0
    size: int = 0  # bytes per vector
    ids: np.ndarray = field(default_factory=lambda: _zeros(0, "int64"))
    matrix: np.ndarray = field(default_factory=lambda: _zeros((0, 0), "float32"))
    filled: int = 0

    def plan(self, conn: sqlite3.Connection) -> None:
        if not scope_owners(self.scope):
            return
        condition, args = scope_condition(self.scope)
        documents = conn.execute(
            f"SELECT id, passages FROM documents d WHERE {condition} AND d.embedded = 1 "
            "ORDER BY id",
            args,
        ).fetchall()
        if not documents:
            return
        newest = conn.execute(
            "SELECT length(v.vector) FROM passages p JOIN passage_vectors v "
            "ON v.passage_id = p.id WHERE p.document_id = ? LIMIT 1",
            (documents[-1][0],),
        ).fetchone()
        self.size = int(newest[0]) if newest and newest[0] and newest[0] % 4 == 0 else 0
        total = sum(passages for _, passages in documents)
        if not 0 < self.size <= MAX_VECTOR_BYTES or total * self.size > MAX_SCOPE_VECTOR_BYTES:
            # vectors a hostile or misconfigured embeddings server made too large to hold:
            # this scope is searched by full text alone
            self.size = 0
            return
        batch: list[int] = []
        held = 0
        for document_id, passages in documents:
            if batch and (held + passages > VECTORS_PER_TRIP or len(batch) >= CHUNK):
                self.batches.append(batch)
                batch, held = [], 0
            batch.append(document_id)
            held += passages
            self.rows += passages
        self.batches.append(batch)
        self.ids = _zeros(self.rows, "int64")
        self.matrix = _zeros((self.rows, self.size // 4), "float32")

    def read(self, conn: sqlite3.Connection, batch: list[int]) -> None:
        rows = conn.execute(
            "SELECT v.passage_id, v.vector FROM passages p JOIN passage_vectors v "
            f"ON v.passage_id = p.id WHERE p.document_id IN ({', '.join('?' * len(batch))}) "
            "AND length(v.vector) = ?",
            [*batch, self.size],
        ).fetchall()
        # a ready document never grows, but the buffer's bound is kept whatever happens
        rows = rows[: self.rows - self.filled]
        if not rows:
            return
        import numpy as np

        end = self.filled + len(rows)
        self.ids[self.filled : end] = [row[0] for row in rows]
        self.matrix[self.filled : end] = np.frombuffer(
            b"".join(row[1] for row in rows), "<f4"
        ).reshape(len(rows), -1)
        self.filled = end

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.ids[: self.filled], self.matrix[: self.filled]


def found(conn: sqlite3.Connection, passage_ids: Sequence[int]) -> dict[int, Found]:
    """The passages of ready documents, with what to cite (score 0)."""
    result: dict[int, Found] = {}
    unique = list(dict.fromkeys(int(i) for i in passage_ids))
    for part in chunks(unique):
        rows = conn.execute(
            "SELECT p.id, p.document_id, d.version, d.name, p.text, p.page, p.section, "
            "d.room_id, d.event_id, d.collection FROM passages p "
            "CROSS JOIN documents d ON d.id = p.document_id "
            f"WHERE p.id IN ({', '.join('?' * len(part))}) AND +d.status = 'ready'",
            list(part),
        ).fetchall()
        for pid, doc, version, name, text, page, section, room, event, collection in rows:
            result[pid] = Found(
                pid, doc, version, name, text, page, section, room, event, collection, score=0.0
            )
    return result
