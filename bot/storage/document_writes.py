"""The writes of the document store that take several statements, run in one trip to
aiosqlite's thread inside one transaction (see `Database.in_thread`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bot.rag.documents import Found, PreparedPassage
from bot.storage import document_search as search

if TYPE_CHECKING:
    import numpy as np


def add_passages(
    conn: sqlite3.Connection,
    document_id: int,
    passages: Sequence[PreparedPassage],
    vectors: np.ndarray | None,
) -> None:
    doc = conn.execute(
        "SELECT room_id, collection, status FROM documents WHERE id = ?", (document_id,)
    ).fetchone()
    if doc is None or doc["status"] != "indexing":
        raise LookupError(f"document {document_id} is not being indexed")
    owner = search.owner_token(doc["room_id"], doc["collection"])
    ids = []
    for prepared in passages:
        passage = prepared.passage
        cursor = conn.execute(
            "INSERT INTO passages (document_id, ordinal, page, section, text) "
            "VALUES (?, ?, ?, ?, ?)",
            (document_id, passage.ordinal, passage.page, passage.section, passage.text),
        )
        ids.append(cursor.lastrowid)
    conn.executemany(
        "INSERT INTO passage_terms (rowid, terms, owner) VALUES (?, ?, ?)",
        [(pid, prepared.terms, owner) for pid, prepared in zip(ids, passages, strict=True)],
    )
    if vectors is not None:
        import numpy as np  # only with vectors: a bot without embeddings never needs it

        rows = np.ascontiguousarray(vectors, dtype="<f4")
        conn.executemany(
            "INSERT INTO passage_vectors (passage_id, vector) VALUES (?, ?)",
            [(pid, rows[i].tobytes()) for i, pid in enumerate(ids)],
        )
    conn.execute(
        "UPDATE documents SET passages = passages + ? WHERE id = ?", (len(ids), document_id)
    )


def finish(conn: sqlite3.Connection, document_id: int, pages: int | None) -> None:
    doc = conn.execute(
        "SELECT room_id, event_id, collection, path, passages FROM documents "
        "WHERE id = ? AND status = 'indexing'",
        (document_id,),
    ).fetchone()
    if doc is None:
        return  # discarded or removed meanwhile: nothing to make searchable
    (vectors,) = conn.execute(
        "SELECT COUNT(*) FROM passages p JOIN passage_vectors v ON v.passage_id = p.id "
        "WHERE p.document_id = ?",
        (document_id,),
    ).fetchone()
    embedded = doc["passages"] > 0 and vectors == doc["passages"]
    conn.execute(
        "UPDATE documents SET status = 'ready', pages = ?, embedded = ? WHERE id = ?",
        (pages, int(embedded), document_id),
    )
    # earlier versions of the same file; answers that cited them keep their citation fields
    if doc["collection"] is not None and doc["path"] is not None:
        where, args = "collection = ? AND path = ?", (doc["collection"], doc["path"])
    elif doc["room_id"] is not None and doc["event_id"] is not None:
        where, args = "room_id = ? AND event_id = ?", (doc["room_id"], doc["event_id"])
    else:
        return
    conn.execute(
        f"DELETE FROM documents WHERE {where} AND id <> ? AND status = 'ready'",
        (*args, document_id),
    )


def remove(conn: sqlite3.Connection, where: str, args: Sequence[Any]) -> int:
    """Remove the documents and everything drawn from them: passages, terms, vectors (by the
    trigger on passages), the answers' records of them and the recorded requests that quoted
    them."""
    ids = [row[0] for row in conn.execute(f"SELECT id FROM documents WHERE {where}", args)]
    for part in search.chunks(ids):
        marks = ", ".join("?" * len(part))
        # the requests recorded for answers hold the passages the model read: they go too
        conn.execute(
            "UPDATE answers SET request_messages = NULL WHERE id IN (SELECT answer_id FROM "
            f"answer_sources WHERE document_id IN ({marks}))",
            part,
        )
        conn.execute(f"DELETE FROM answer_sources WHERE document_id IN ({marks})", part)
        conn.execute(f"DELETE FROM documents WHERE id IN ({marks})", part)
    return len(ids)


def record_sources(conn: sqlite3.Connection, answer_id: int, found: Sequence[Found]) -> None:
    conn.execute("DELETE FROM answer_sources WHERE answer_id = ?", (answer_id,))
    conn.executemany(
        "INSERT INTO answer_sources (answer_id, rank, passage_id, document_id, "
        "document_version, document_name, page, section, collection, event_id, score, "
        "lexical_rank, dense_rank) VALUES (?, ?, (SELECT id FROM passages WHERE id = ?), "
        "?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (answer_id, rank, f.passage_id, f.document_id, f.document_version, f.document_name,
             f.page, f.section, f.collection, f.event_id, f.score, f.lexical_rank, f.dense_rank)
            for rank, f in enumerate(found, start=1)
        ],
    )  # fmt: skip
    conn.execute("UPDATE answers SET grounded = ? WHERE id = ?", (int(bool(found)), answer_id))
    # A document removed between the search and now: its passages are in the request just
    # recorded, which a removal reaches only through these rows. They go, and the request too.
    gone = "document_id NOT IN (SELECT id FROM documents)"
    if conn.execute(
        f"SELECT 1 FROM answer_sources WHERE answer_id = ? AND {gone}", (answer_id,)
    ).fetchone():
        conn.execute("UPDATE answers SET request_messages = NULL WHERE id = ?", (answer_id,))
        conn.execute(f"DELETE FROM answer_sources WHERE answer_id = ? AND {gone}", (answer_id,))
