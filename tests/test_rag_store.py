"""Documents in the bot's SQLite database: the schema upgrade, indexing that is all or nothing,
rooms kept apart, removal that leaves nothing of a document, and what answers used."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from bot.rag.analysis import index_terms, query_terms
from bot.rag.documents import Found, Passage, PreparedPassage, Scope
from bot.rag.ports import NewDocument
from bot.storage import database, document_search
from bot.storage.database import migrations, open_database, schema_version
from bot.storage.store import Store

DIM = 8


def prepared(texts: list[str], page: int | None = None) -> list[PreparedPassage]:
    return [
        PreparedPassage(Passage(i, text, page, "Section"), index_terms(text))
        for i, text in enumerate(texts)
    ]


def unit_vectors(count: int, seed: int = 0) -> np.ndarray:
    matrix = np.random.default_rng(seed).normal(size=(count, DIM)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


async def add(
    store: Store,
    texts: list[str],
    *,
    room: str | None = None,
    event: str | None = None,
    sharer: str | None = None,
    collection: str | None = None,
    path: str | None = None,
    version: str = "v1",
    vectors: bool = True,
    finish: bool = True,
) -> int:
    doc = NewDocument(
        f"{path or event}.txt", version, "text", 100, room, event, sharer, collection, path
    )
    document_id = await store.documents.begin_document(doc, now=1000)
    matrix = unit_vectors(len(texts), seed=document_id) if vectors else None
    await store.documents.add_passages(document_id, prepared(texts, page=3), matrix)
    if finish:
        await store.documents.finish_document(document_id, pages=3)
    return document_id


async def search(store: Store, query: str, scope: Scope) -> list[int]:
    return await store.documents.lexical(query_terms(query), scope, 10)


async def count(store: Store, table: str) -> int:
    row = await store.db.one(f"SELECT COUNT(*) AS n FROM {table}")
    assert row is not None
    return int(row["n"])


async def new_answer(store: Store, room: str, question: str) -> int:
    row = await store.db.returning(
        "INSERT INTO answers (room_id, question_event_id, question_ts, created_at) "
        "VALUES (?, ?, 1, 1) RETURNING id",
        room,
        question,
    )
    return int(row["id"])


@pytest.fixture
async def store(tmp_path: Path):
    opened = await Store.open(tmp_path / "bot.sqlite3")
    yield opened
    await opened.close()


async def test_upgrade_from_schema_6_keeps_data_and_adds_documents(tmp_path, monkeypatch):
    previous = tmp_path / "previous"
    previous.mkdir()
    for migration in migrations()[:6]:
        shutil.copy(migration.path, previous / migration.path.name)
    monkeypatch.setattr(database, "MIGRATIONS_DIR", previous)
    path = tmp_path / "bot.sqlite3"
    conn = await open_database(path)
    assert await schema_version(conn) == 6
    await conn.execute(
        "INSERT INTO answers (room_id, question_event_id, question_ts, created_at, status, text) "
        "VALUES ('!r', '$q', 1, 2, 'complete', 'ok')"
    )
    await conn.close()
    monkeypatch.undo()

    store = await Store.open(path)
    try:
        assert await schema_version(store.db.conn) >= 7
        row = await store.db.one("SELECT id, text, grounded FROM answers")
        assert row is not None and row["text"] == "ok" and row["grounded"] is None
        await add(store, ["Les allocations familiales"], room="!r", event="$file")
        found = await store.documents.found(await search(store, "allocation", Scope("!r")))
        await store.documents.record_sources(row["id"], list(found.values()))
        await store.documents.mark_cited(row["id"], {1})
        grounded = await store.db.one("SELECT grounded FROM answers WHERE id = ?", row["id"])
        assert grounded is not None and grounded["grounded"] == 1
    finally:
        await store.close()


async def test_a_document_being_indexed_is_never_found(store):
    document_id = await add(store, ["Le congé parental"], room="!r", event="$e", finish=False)
    scope = Scope("!r")
    assert await search(store, "congé parental", scope) == []
    ids, matrix = await store.documents.scope_vectors(scope)
    assert len(ids) == 0 and matrix.size == 0
    passage_id = (await store.db.returning("SELECT id FROM passages"))["id"]
    assert await store.documents.found([passage_id]) == {}
    assert await store.documents.room_documents("!r") == []
    stamp = await store.documents.scope_stamp(scope)

    await store.documents.finish_document(document_id, pages=1)
    assert await search(store, "congé parental", scope) == [passage_id]
    assert await store.documents.scope_stamp(scope) != stamp
    [row] = await store.documents.room_documents("!r")
    assert (row.passages, row.pages, row.embedded, row.name) == (1, 1, True, "$e.txt")


async def test_rooms_are_kept_apart_and_collections_must_be_used(store):
    await store.documents.ensure_collection("guides", exportable=False, now=1)
    await add(store, ["Allocation logement de la chambre A"], room="!a", event="$1")
    await add(store, ["Allocation logement de la chambre B"], room="!b", event="$2")
    await add(store, ["Allocation logement du guide"], collection="guides", path="g.txt")

    def texts(found: dict[int, Found]) -> set[str]:
        return {f.text for f in found.values()}

    only_a = await store.documents.found(await search(store, "allocation", Scope("!a")))
    assert texts(only_a) == {"Allocation logement de la chambre A"}
    with_guides = await store.documents.found(
        await search(store, "allocation", Scope("!a", ("guides",)))
    )
    assert texts(with_guides) == {
        "Allocation logement de la chambre A",
        "Allocation logement du guide",
    }
    assert await search(store, "allocation", Scope("!c")) == []
    assert await search(store, "allocation", Scope("!c", ("other",))) == []
    ids, _ = await store.documents.scope_vectors(Scope("!a"))
    assert set(ids.tolist()) == set(only_a)
    ids, _ = await store.documents.scope_vectors(Scope(None, ("guides",)))
    assert texts(await store.documents.found(ids.tolist())) == {"Allocation logement du guide"}


async def test_default_collections_and_a_rooms_opt_out(store):
    for name in ("guides", "faq", "droit"):
        await store.documents.ensure_collection(name, exportable=False, now=1)
    defaults = ["guides", "faq", "missing"]
    assert await store.documents.room_collections("!r", defaults) == ["guides", "faq"]
    await store.documents.use_collection("!r", "faq", used=False)
    await store.documents.use_collection("!r", "droit", used=True)
    assert await store.documents.room_collections("!r", defaults) == ["guides", "droit"]
    assert await store.documents.room_collections("!other", defaults) == ["guides", "faq"]
    await store.documents.use_collection("!r", "faq", used=True)
    assert await store.documents.room_collections("!r", defaults) == ["guides", "faq", "droit"]


async def test_auto_index_is_per_room(store):
    assert not await store.documents.auto_index("!r")
    await store.documents.set_auto_index("!r", True)
    assert await store.documents.auto_index("!r") and not await store.documents.auto_index("!s")
    await store.documents.set_auto_index("!r", False)
    assert not await store.documents.auto_index("!r")


async def assert_nothing_left_of(store: Store, word: str, answer_id: int) -> None:
    assert await count(store, "passages") == 0
    assert await count(store, "passage_terms") == 0
    assert await count(store, "passage_vectors") == 0
    assert await count(store, "documents") == 0
    # the terms are gone from the index's own segments too, not only from its content table
    lingering = "SELECT id FROM passage_terms_data WHERE instr(block, CAST(? AS BLOB)) > 0"
    assert await store.db.all(lingering, word) == []
    assert await store.documents.answer_sources(answer_id) == []
    assert await count(store, "answer_sources") == 0


@pytest.mark.parametrize("how", ["event", "sharer", "document", "collection", "path", "folder"])
async def test_removal_leaves_nothing_of_the_document(store, how):
    await store.documents.ensure_collection("kb", exportable=False, now=1)
    if how in ("collection", "path", "folder"):
        await add(store, ["Quotient familial secret"], collection="kb", path="/srv/kb/a.txt")
        scope = Scope("!r", ("kb",))
    else:
        await add(store, ["Quotient familial secret"], room="!r", event="$f", sharer="@ann:x")
        scope = Scope("!r")
    answer_id = await new_answer(store, "!r", "$q")
    found = await store.documents.found(await search(store, "quotient", scope))
    await store.documents.record_sources(answer_id, list(found.values()))
    await store.documents.mark_cited(answer_id, {1})
    assert len(await store.documents.answer_sources(answer_id)) == 1
    stamp = await store.documents.scope_stamp(scope)
    [document_id] = {f.document_id for f in found.values()}

    removed = {
        "event": lambda: store.documents.remove_shared_by_event("!r", "$f"),
        "sharer": lambda: store.documents.remove_shared_by("@ann:x"),
        "document": lambda: store.documents.remove_document(document_id),
        "collection": lambda: store.documents.remove_collection("kb"),
        "path": lambda: store.documents.remove_collection("kb", "/srv/kb/a.txt"),
        "folder": lambda: store.documents.remove_collection("kb", "/srv/kb"),
    }[how]
    assert await removed() in (1, True)
    await assert_nothing_left_of(store, "secret", answer_id)
    assert await store.documents.scope_stamp(scope) != stamp
    assert await search(store, "quotient", scope) == []
    answer = await store.db.one("SELECT grounded FROM answers WHERE id = ?", answer_id)
    assert answer is not None and answer["grounded"] == 1  # the fact stays, not the source


async def test_removal_is_scoped_to_its_room_and_folder(store):
    await store.documents.ensure_collection("kb", exportable=False, now=1)
    await add(store, ["Bourse étudiante"], room="!a", event="$same", sharer="@ann:x")
    await add(store, ["Bourse étudiante"], room="!b", event="$same", sharer="@bob:x")
    await add(store, ["Bourse étudiante"], collection="kb", path="/srv/kb2/b.txt")
    assert await store.documents.remove_shared_by_event("!a", "$same") == 1
    assert await store.documents.remove_collection("kb", "/srv/kb") == 0  # not a prefix match
    assert await store.documents.remove_shared_by("@ann:x") == 0
    assert len(await search(store, "bourse", Scope("!b", ("kb",)))) == 2


async def test_readding_a_changed_file_replaces_its_passages(store):
    await store.documents.ensure_collection("kb", exportable=True, now=1)
    first = await add(store, ["Ancienne règle", "Autre"], collection="kb", path="a.md")
    answer_id = await new_answer(store, "!r", "$q")
    scope = Scope("!r", ("kb",))
    found = await store.documents.found(await search(store, "règle", scope))
    await store.documents.record_sources(answer_id, list(found.values()))
    second = await add(store, ["Nouvelle règle"], collection="kb", path="a.md", version="v2")

    assert await store.documents.document(first) is None
    [row] = await store.documents.collection_documents("kb")
    assert (row.id, row.version, row.passages) == (second, "v2", 1)
    result = await store.documents.found(await search(store, "règle", scope))
    assert [f.text for f in result.values()] == ["Nouvelle règle"]
    assert await count(store, "passages") == 1
    assert await count(store, "passage_terms") == 1
    assert await count(store, "passage_vectors") == 1
    # the earlier answer keeps what it cited (file, version, page), not the replaced text
    [source] = await store.documents.answer_sources(answer_id)
    assert (source.document_id, source.document_version, source.page) == (first, "v1", 3)
    assert (source.passage_id, source.text, source.collection) == (0, "", "kb")
    [collection] = await store.documents.collections()
    assert (collection.name, collection.documents, collection.passages) == ("kb", 1, 1)


async def test_a_file_shared_again_by_the_same_event_is_replaced(store):
    await add(store, ["Première version"], room="!r", event="$e")
    await add(store, ["Deuxième version"], room="!r", event="$e", version="v2")
    [row] = await store.documents.room_documents("!r")
    assert row.version == "v2"


async def test_a_discarded_or_failed_document_leaves_nothing(store):
    document_id = await add(store, ["Texte à moitié lu"], room="!r", event="$e", finish=False)
    await store.documents.discard_document(document_id)
    assert await count(store, "passages") == await count(store, "passage_terms") == 0
    with pytest.raises(LookupError):
        await store.documents.add_passages(document_id, prepared(["encore"]), None)
    await store.documents.finish_document(document_id, pages=1)  # no-op, not a resurrection
    assert await store.documents.document(document_id) is None


async def test_a_batch_is_stored_whole_or_not_at_all(store):
    doc = NewDocument("f.txt", "v1", "text", 1, "!r", "$e")
    document_id = await store.documents.begin_document(doc, now=1)
    batch = prepared(["un", "deux"])
    broken = [*batch, PreparedPassage(Passage(2, None, None, None), "trois")]  # type: ignore[arg-type]
    with pytest.raises(Exception, match="NOT NULL"):
        await store.documents.add_passages(document_id, broken, None)
    assert await count(store, "passages") == await count(store, "passage_terms") == 0
    with pytest.raises(ValueError):
        await store.documents.add_passages(document_id, batch, unit_vectors(3))
    with pytest.raises(ValueError):
        await store.documents.add_passages(document_id, batch, np.full((2, DIM), np.nan))
    await store.documents.add_passages(document_id, batch, None)
    await store.documents.finish_document(document_id, None)
    row = await store.documents.document(document_id)
    assert row is not None and (row.passages, row.embedded) == (2, False)


async def test_sources_of_an_answer_are_recorded_in_rank_order(store):
    await add(store, ["Aide au logement", "Logement social"], room="!r", event="$e")
    answer_id = await new_answer(store, "!r", "$q")
    found = await store.documents.found(await search(store, "logement", Scope("!r")))
    given = [
        Found(**{**vars(f), "score": 0.5 - rank, "lexical_rank": rank + 1})
        for rank, f in enumerate(found.values())
    ]
    await store.documents.record_sources(answer_id, given)
    await store.documents.mark_cited(answer_id, {2})
    sources = await store.documents.answer_sources(answer_id)
    assert [s.passage_id for s in sources] == [f.passage_id for f in given]
    assert [s.text for s in sources] == [f.text for f in given]
    assert sources[0].room_id == "!r" and sources[0].lexical_rank == 1
    cited = await store.db.all("SELECT rank FROM answer_sources WHERE cited = 1")
    assert [row["rank"] for row in cited] == [2]
    assert await store.db.one("SELECT 1 FROM answer_sources WHERE document_name IS NULL") is None
    columns = {row["name"] for row in await store.db.all("PRAGMA table_info(answer_sources)")}
    assert "text" not in columns

    other = await new_answer(store, "!r", "$q2")
    await store.documents.record_sources(other, [])
    ungrounded = await store.db.one("SELECT grounded FROM answers WHERE id = ?", other)
    assert ungrounded is not None and ungrounded["grounded"] == 0
    assert await store.documents.last_sourced_answer("!r") == answer_id
    assert await store.documents.last_sourced_answer("!elsewhere") is None
    await store.documents.remove_shared_by_event("!r", "$e")
    assert await store.documents.last_sourced_answer("!r") is None


async def test_another_process_adding_a_document_changes_the_stamp(store, tmp_path):
    await store.documents.ensure_collection("kb", exportable=False, now=1)
    scope = Scope("!r", ("kb",))
    before = await store.documents.scope_stamp(scope)
    other = await Store.open(tmp_path / "bot.sqlite3")  # `lucie-bot kb add` while the bot runs
    try:
        await add(other, ["Carte vitale"], collection="kb", path="c.txt")
    finally:
        await other.close()
    after = await store.documents.scope_stamp(scope)
    assert after != before
    assert await store.documents.scope_stamp(Scope("!r")) == "room:!r=0"
    ids, matrix = await store.documents.scope_vectors(scope)
    assert len(ids) == 1 and matrix.shape == (1, DIM) and matrix.dtype == np.float32


async def test_vectors_are_read_in_trips_from_fully_embedded_documents_of_one_size(
    store, monkeypatch
):
    monkeypatch.setattr(document_search, "VECTORS_PER_TRIP", 2)
    await store.documents.ensure_collection("kb", exportable=False, now=1)
    kept = [await add(store, ["un", "deux"], collection="kb", path=f"{n}.txt") for n in range(3)]
    await add(store, ["sans vecteurs"], collection="kb", path="plain.txt", vectors=False)
    partial = await store.documents.begin_document(
        NewDocument("p.txt", "v1", "text", 1, collection="kb", path="p.txt"), now=1
    )
    await store.documents.add_passages(partial, prepared(["a"]), unit_vectors(1))
    await store.documents.add_passages(partial, prepared(["b"]), None)  # the server failed
    await store.documents.finish_document(partial, None)
    ids, matrix = await store.documents.scope_vectors(Scope(None, ("kb",)))
    rows = await store.db.all(
        "SELECT p.id FROM passages p WHERE p.document_id IN (?, ?, ?) ORDER BY p.id", *kept
    )
    assert ids.tolist() == [row["id"] for row in rows]
    assert np.array_equal(matrix, np.concatenate([unit_vectors(2, seed=d) for d in kept]))

    # a newer model's vectors are of another size: only those are compared
    newer = await store.documents.begin_document(
        NewDocument("n.txt", "v1", "text", 1, collection="kb", path="n.txt"), now=1
    )
    await store.documents.add_passages(newer, prepared(["c"]), np.ones((1, 3), np.float32))
    await store.documents.finish_document(newer, None)
    ids, matrix = await store.documents.scope_vectors(Scope(None, ("kb",)))
    assert matrix.shape == (1, 3) and len(ids) == 1


async def test_a_document_removed_while_its_answer_is_written_leaves_no_quote_in_the_request(
    store,
):
    await add(store, ["Le code du coffre est 4242"], room="!r", event="$f", sharer="@ann:x")
    answer_id = await new_answer(store, "!r", "$q")
    found = list((await store.documents.found(await search(store, "coffre", Scope("!r")))).values())
    # the search found it; then the file's message is redacted before the request is recorded
    assert await store.documents.remove_shared_by_event("!r", "$f") == 1
    await store.db.write(
        "UPDATE answers SET request_messages = ? WHERE id = ?", '["...4242..."]', answer_id
    )
    await store.documents.record_sources(answer_id, found)
    row = await store.db.one("SELECT request_messages FROM answers WHERE id = ?", answer_id)
    assert row is not None and row["request_messages"] is None
    assert await count(store, "answer_sources") == 0

    # recorded first, removed while the model writes: the removal finds it and clears it
    await add(store, ["Le code du coffre est 5353"], room="!r", event="$g", sharer="@ann:x")
    later = await new_answer(store, "!r", "$q2")
    found = list((await store.documents.found(await search(store, "coffre", Scope("!r")))).values())
    await store.db.write("UPDATE answers SET request_messages = '[\"5353\"]' WHERE id = ?", later)
    await store.documents.record_sources(later, found)
    await store.documents.remove_shared_by_event("!r", "$g")
    await store.documents.mark_cited(later, {1})  # the answer ends: nothing to mark, no error
    row = await store.db.one("SELECT request_messages FROM answers WHERE id = ?", later)
    assert row is not None and row["request_messages"] is None


async def test_an_erased_file_or_a_forgotten_sharers_file_is_known_as_such(store):
    await store.db.write("INSERT INTO erased_events VALUES ('!r', '$gone', 5)")
    await store.db.write("INSERT INTO erased_people VALUES ('@ann:x', 50)")
    erased = store.documents.shared_file_erased
    assert await erased("!r", "$gone", "@bob:x", 1)
    assert not await erased("!other", "$gone", "@bob:x", 1)  # that id in another room
    assert await erased("!r", "$old", "@ann:x", 40)  # shared before she was forgotten
    assert not await erased("!r", "$new", "@ann:x", 60)  # shared again since


async def test_a_stop_mid_indexing_leaves_nothing_at_the_next_start(store):
    await store.documents.ensure_collection("kb", exportable=False, now=1)
    await add(store, ["Moitié de fichier"], room="!r", event="$f", sharer="@a:x", finish=False)
    await add(store, ["Fichier de kb en cours"], collection="kb", path="/k.md", finish=False)
    await add(store, ["Fichier complet"], room="!r", event="$ok", sharer="@a:x")
    assert await store.documents.discard_unfinished_shared() == 1
    assert await count(store, "documents") == 2  # kb's own, maybe running now, stays
    assert await count(store, "passage_terms") == 2
