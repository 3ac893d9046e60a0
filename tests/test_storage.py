"""The SQLite database: migrations at start, WAL, private file, and the rows the relay relies on."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat

import aiosqlite
import pytest

from bot.core.records import MessageRow, UndecryptedRow
from bot.storage import database
from bot.storage.connection import Database
from bot.storage.database import (
    SchemaError,
    StorageUnavailable,
    migrations,
    open_database,
    schema_version,
)
from bot.storage.store import Store


async def test_fresh_database_is_migrated_private_and_in_wal_mode(tmp_path):
    path = tmp_path / "db" / "bot.sqlite3"
    conn = await open_database(path)
    assert await schema_version(conn) == len(migrations())
    async with conn.execute("PRAGMA journal_mode") as cursor:
        assert (await cursor.fetchone())[0] == "wal"
    assert (await conn.execute_fetchall("PRAGMA synchronous"))[0][0] == 1  # NORMAL
    await conn.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


async def test_upgrade_from_the_previous_schema_keeps_data(tmp_path, monkeypatch):
    """Open with only the earlier migrations, write rows, then open with all of them."""
    all_migrations = migrations()
    previous = tmp_path / "previous"
    previous.mkdir()
    for migration in all_migrations[:-1]:
        shutil.copy(migration.path, previous / migration.path.name)
    monkeypatch.setattr(database, "MIGRATIONS_DIR", previous)
    path = tmp_path / "bot.sqlite3"
    conn = await open_database(path)
    assert await schema_version(conn) == len(all_migrations) - 1
    if len(all_migrations) > 1:
        await conn.execute("INSERT INTO rooms (room_id, joined_at) VALUES ('!r', 1)")
        await conn.execute(
            "INSERT INTO answers (room_id, question_event_id, question_ts, created_at, "
            "answer_event_id, status, text) VALUES ('!r', '$q', 1, 2, '$a', 'complete', 'ok')"
        )
        await conn.commit()
    await conn.close()

    monkeypatch.undo()
    conn = await open_database(path)
    assert await schema_version(conn) == len(all_migrations)
    async with conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'") as cursor:
        tables = {row[0] for row in await cursor.fetchall()}
    assert {
        "rooms",
        "prompts",
        "messages",
        "answers",
        "votes",
        "sync_state",
        "handled_events",
        "undecrypted",
        "incidents",
        "usage",
        "policies",
        "pii_reminded",
        "local_keys",
    } <= tables
    if len(all_migrations) > 1:
        async with conn.execute("SELECT room_id FROM rooms") as cursor:
            assert [row[0] for row in await cursor.fetchall()] == ["!r"]
        store = Store.over(Database(conn))
        kept = await store.conversations.answer_for_question("!r", "$q")
        assert kept.answer_event_id == "$a" and kept.text == "ok" and kept.status == "complete"
        # answers from before guardrails were neither refused nor read a policy
        guarded = await store.db.one(
            "SELECT refusal, policy_sha256 FROM answers WHERE id = ?", kept.id
        )
        assert guarded is not None and tuple(guarded) == (None, None)
        sibling = await store.conversations.add_sibling(kept, 3, collected=True)
        assert sibling.question_event_id == "$q" and sibling.id != kept.id
    await conn.close()
    conn = await open_database(path)  # a second start applies nothing
    assert await database.migrate(conn) == []
    await conn.close()


async def test_a_newer_schema_is_refused_and_a_broken_migration_rolls_back(tmp_path, monkeypatch):
    path = tmp_path / "bot.sqlite3"
    async with aiosqlite.connect(path) as conn:
        await conn.execute("PRAGMA user_version = 99")
    with pytest.raises(SchemaError, match="newer"):
        await open_database(path)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "0001_ok.sql").write_text("CREATE TABLE a (x INTEGER);")
    (broken / "0002_bad.sql").write_text("CREATE TABLE b (x INTEGER); CREATE TABLE a (y);")
    monkeypatch.setattr(database, "MIGRATIONS_DIR", broken)
    other = tmp_path / "other.sqlite3"
    with pytest.raises(aiosqlite.OperationalError):
        await open_database(other)
    async with aiosqlite.connect(other) as conn:
        async with conn.execute("PRAGMA user_version") as cursor:
            assert (await cursor.fetchone())[0] == 1
        async with conn.execute("SELECT name FROM sqlite_master WHERE name = 'b'") as cursor:
            assert await cursor.fetchone() is None  # 0002 left nothing behind


async def test_answers_are_owed_once_and_prompts_versioned(tmp_path):
    store = await Store.open(tmp_path / "bot.sqlite3")
    try:
        assert await store.conversations.queue_answer("!r", "$q", 10, None, 11)
        assert not await store.conversations.queue_answer("!r", "$q", 10, None, 12)
        assert [a.question_event_id for a in await store.conversations.open_answers()] == ["$q"]
        assert await store.rooms.add_prompt("!r", "one", "@a:x", 1) == 1
        assert await store.rooms.add_prompt("!r", None, "@b:x", 2) == 2
        assert await store.rooms.add_prompt("!other", "x", "@a:x", 3) == 1
        current = await store.rooms.current_prompt("!r")
        assert current.version == 2 and current.text is None
        assert await store.sync.claim_event("!r", "$c", 1) and not await store.sync.claim_event(
            "!r", "$c", 2
        )
        await store.conversations.save_message(
            MessageRow("$m", "!r", "@a:x", "A", "hi", 5, None, None, False)
        )
        await store.conversations.save_message(
            MessageRow("$m", "!r", "@a:x", "A", "edited", 5, None, None, 0)
        )
        assert (await store.conversations.message("!r", "$m")).body == "edited"
    finally:
        await store.close()


async def test_erasure_cascades_through_answers_built_on_erased_words(tmp_path):
    store = await Store.open(tmp_path / "bot.sqlite3")
    try:
        for event_id, sender, from_bot in (("$q1", "@p:x", 0), ("$a1", "@bot:x", 1),
                                           ("$q2", "@o:x", 0), ("$a2", "@bot:x", 1)):  # fmt: skip
            await store.conversations.save_message(
                MessageRow(
                    event_id, "!r", sender, None, f"text {event_id}", 1, None, None, from_bot
                )
            )
        for question, answer, context in (("$q1", "$a1", ["$q1"]), ("$q2", "$a2", ["$a1", "$q2"])):
            await store.conversations.queue_answer("!r", question, 1, None, 1)
            row = await store.conversations.answer_for_question("!r", question)
            await store.conversations.update_answer(
                row.id, answer_event_id=answer, text="t", status="complete",
                context_event_ids=context, request_messages=[{"role": "user", "content": "x"}],
            )  # fmt: skip
        await store.feedback.add_vote("$v", "$a2", "!r", "@p:x", "up", "👍", 2)
        await store.feedback.add_consent("@p:x", "yes", 1, "!r", 1)
        await store.rooms.add_prompt("!r", "Sois brève.", "@p:x", 1)
        await store.erasure.forget("@p:x", 5)
        prompt = await store.rooms.current_prompt("!r")
        assert prompt.text == "Sois brève." and prompt.set_by == "erased"
        for question in ("$q1", "$q2"):
            row = await store.conversations.answer_for_question("!r", question)
            assert row.text is None  # $a2 never quoted $q1, but it was built on $a1
        remaining = await store.db.conn.execute_fetchall("SELECT event_id FROM messages")
        assert [r[0] for r in remaining] == ["$q2"]  # the other person's words stay
        assert not await store.db.conn.execute_fetchall("SELECT * FROM votes")
        assert await store.feedback.consent("@p:x") == ("erased", 0, 5)
    finally:
        await store.close()


async def test_undecrypted_events_kept_once_noticed_per_session_and_erased(tmp_path):
    store = await Store.open(tmp_path / "bot.sqlite3")
    source = {"type": "m.room.encrypted", "content": {"ciphertext": "AAA", "session_id": "S1"}}
    first = UndecryptedRow("$e1", "!r", "@a:x", "S1", source, received_at=10)
    assert await store.crypto.keep_undecrypted(first)
    assert not await store.crypto.keep_undecrypted(first)  # seen again after a restart: kept once
    await store.crypto.keep_undecrypted(UndecryptedRow("$e2", "!r", "@a:x", "S1", source, 11))
    await store.crypto.keep_undecrypted(UndecryptedRow("$e3", "!r", "@b:x", "S2", source, 12))
    await store.crypto.mark_session_noticed("!r", "@a:x", "S1", 50)
    rows = {row.event_id: row for row in await store.crypto.undecrypted()}
    assert rows["$e1"].source == source
    assert (rows["$e1"].noticed_at, rows["$e2"].noticed_at, rows["$e3"].noticed_at) == (
        50,
        50,
        None,
    )
    await store.erasure.erase_event("!r", "$e3", 60)  # redacted while waiting
    await store.erasure.forget("@a:x", 61)  # "forget me"
    assert await store.crypto.undecrypted() == []
    await store.close()


async def test_a_locked_database_is_unavailable_but_a_bad_statement_is_a_bug(tmp_path):
    path = tmp_path / "bot.sqlite3"
    store = await Store.open(path)
    await store.db.conn.execute("PRAGMA busy_timeout = 0")  # fail at once instead of after 5 s
    async with aiosqlite.connect(path) as other:
        await other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StorageUnavailable, match="locked"):
            await store.sync.set_sync_token("s1")
        await other.rollback()
    await store.sync.set_sync_token("s2")  # the failed transaction was undone, the next one works
    assert await store.sync.sync_token() == "s2"
    with pytest.raises(sqlite3.OperationalError):
        await store.db.one("SELECT nothing FROM nowhere")
    await store.close()


async def test_each_write_is_committed_at_once_and_backups_recorded_in_bulk(tmp_path):
    path = tmp_path / "bot.sqlite3"
    store = await Store.open(path)
    try:
        await store.sync.set_sync_token("s9")
        await store.crypto.mark_backed_up("1", ["a", "b"])
        await store.crypto.mark_backed_up("1", ["b", "c"] * 20_000)  # more than SQLite's variables
        await store.crypto.mark_backed_up("2", [])
        async with aiosqlite.connect(path) as other:  # sees only what was committed
            assert await other.execute_fetchall("SELECT next_batch FROM sync_state") == [("s9",)]
        assert await store.crypto.backed_up_sessions("1") == {"a", "b", "c"}
        assert await store.crypto.backed_up_sessions("2") == set()
    finally:
        await store.close()
