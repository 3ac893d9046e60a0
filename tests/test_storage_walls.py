"""Rooms are walls in the database: every lookup by event id is scoped to its room, erasure
matches ids exactly, one vote per person per answer, and erased text never comes back."""

from __future__ import annotations

import shutil

import pytest

from bot.core.records import MessageRow
from bot.storage import database
from bot.storage.connection import Database
from bot.storage.database import migrations, open_database, schema_version
from bot.storage.store import Store


def message(event_id: str, room_id: str, sender: str = "@p:x", from_bot: bool = False):
    return MessageRow(
        event_id=event_id,
        room_id=room_id,
        sender=sender,
        sender_name=None,
        body=f"text of {event_id} in {room_id}",
        ts=1,
        reply_to=None,
        thread_root=None,
        from_bot=from_bot,
    )


@pytest.fixture
async def store(tmp_path):
    opened = await Store.open(tmp_path / "bot.sqlite3")
    yield opened
    await opened.close()


async def answered(store: Store, room_id: str, question: str, answer: str, context: list[str]):
    row = await store.conversations.queue_answer(room_id, question, 1, None, 1)
    assert row is not None
    await store.conversations.update_answer(
        row.id,
        answer_event_id=answer,
        status="complete",
        text=f"answer {answer}",
        context_event_ids=context,
        request_messages=[{"role": "user", "content": "x"}],
    )
    return row


async def test_lookups_by_event_id_never_cross_rooms(store):
    await store.conversations.save_message(message("$q", "!secret"))
    await answered(store, "!secret", "$q", "$a", ["$q"])
    assert await store.conversations.message("!secret", "$q") is not None
    assert await store.conversations.message("!attacker", "$q") is None
    assert await store.conversations.answer_by_event("!attacker", "$a") is None
    assert await store.conversations.answer_for_question("!attacker", "$q") is None
    assert (await store.conversations.answer_by_event("!secret", "$a")).question_event_id == "$q"
    # the same id named in two rooms is two records (old room versions let servers pick ids)
    await store.conversations.save_message(message("$q", "!attacker", sender="@evil:x"))
    assert (await store.conversations.message("!secret", "$q")).sender == "@p:x"
    assert await store.conversations.queue_answer("!attacker", "$q", 1, None, 1) is not None


async def test_erasure_is_exact_and_stays_in_its_room(store):
    for room in ("!one", "!two"):
        await store.conversations.save_message(message("$q", room))
        await answered(store, room, "$q", f"$a{room}", ["$q"])
    await store.conversations.save_message(message("$other", "!one"))
    await answered(store, "!one", "$other", "$b", ["$other"])

    await store.erasure.erase_event("!one", "$%", 5)  # a LIKE pattern once matched every answer
    await store.erasure.erase_event("!one", '"', 5)
    for room, answer in (("!one", "$a!one"), ("!two", "$a!two"), ("!one", "$b")):
        assert (await store.conversations.answer_by_event(room, answer)).text is not None

    await store.erasure.erase_event("!two", "$q", 6)
    assert (await store.conversations.answer_by_event("!two", "$a!two")).text is None
    assert await store.conversations.message("!two", "$q") is None
    assert (await store.conversations.answer_by_event("!one", "$a!one")).text == "answer $a!one"
    assert await store.conversations.message("!one", "$q") is not None


async def test_erased_answers_are_not_rewritten_by_a_finishing_stream(store):
    await store.conversations.save_message(message("$q", "!r"))
    row = await store.conversations.queue_answer("!r", "$q", 1, None, 1)
    await store.conversations.update_answer(
        row.id, status="streaming", request_messages=[{"c": "x"}]
    )
    await store.conversations.update_answer(row.id, answer_event_id="$a")
    await store.erasure.erase_event("!r", "$q", 5)  # redacted while the model was still writing
    await store.conversations.update_answer(row.id, status="complete", text="late words", tokens=3)
    await store.conversations.save_message(message("$a", "!r", sender="@bot:x", from_bot=True))
    after = await store.conversations.answer_by_event("!r", "$a")
    assert after.status == "complete" and after.text is None  # how it went stays, not what
    assert await store.conversations.message("!r", "$a") is None
    rows = await store.db.conn.execute_fetchall(
        "SELECT request_messages, tokens FROM answers WHERE id = ?", (row.id,)
    )
    assert tuple(rows[0]) == (None, 3)


async def test_one_vote_per_person_per_answer(store):
    await answered(store, "!r", "$q", "$a", ["$q"])
    keys = ["👍", "👍️", "👍🏽", "+1", "👍️️"]
    for n, key in enumerate(keys):
        await store.feedback.add_vote(f"$v{n}", "$a", "!r", "@p:x", "up", key, n)
    await store.feedback.add_vote("$w", "$a", "!r", "@other:x", "up", "👍", 9)

    async def current() -> list[tuple[str, str]]:
        rows = await store.db.conn.execute_fetchall(
            "SELECT sender, vote FROM current_votes WHERE room_id = '!r' ORDER BY sender"
        )
        return [tuple(row) for row in rows]

    assert await current() == [("@other:x", "up"), ("@p:x", "up")]
    stats = await store.feedback.stats("!r")
    assert (stats[0]["up"], stats[0]["down"]) == (2, 0)

    await store.feedback.add_vote(
        "$down", "$a", "!r", "@p:x", "down", "👎", 10
    )  # changes their mind
    assert await current() == [("@other:x", "up"), ("@p:x", "down")]
    await store.feedback.withdraw_reaction(
        "!elsewhere", "$down", 11
    )  # named from another room: nothing
    assert await current() == [("@other:x", "up"), ("@p:x", "down")]
    for reaction in ["$down"] + [f"$v{n}" for n in range(len(keys))]:
        await store.feedback.withdraw_reaction("!r", reaction, 12)
    assert await current() == [("@other:x", "up")]  # the last one withdrawn: no vote at all


async def test_an_edit_changes_only_its_own_senders_message(store):
    await store.conversations.save_message(message("$q", "!r"))
    edit = store.conversations.edit_question
    assert not await edit("!r", "$q", "@someone-else:x", "forged", 5)
    assert not await edit("!elsewhere", "$q", "@p:x", "forged", 5)
    assert await edit("!r", "$q", "@p:x", "edited question", 5)
    assert (await store.conversations.message("!r", "$q")).body == "edited question"


async def test_deleted_text_is_overwritten_on_disk(store):
    rows = await store.db.conn.execute_fetchall("PRAGMA secure_delete")
    assert rows[0][0] == 1


async def test_upgrade_from_schema_3_scopes_existing_rows(tmp_path, monkeypatch):
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    for migration in migrations()[:3]:
        shutil.copy(migration.path, earlier / migration.path.name)
    monkeypatch.setattr(database, "MIGRATIONS_DIR", earlier)
    path = tmp_path / "bot.sqlite3"
    conn = await open_database(path)
    assert await schema_version(conn) == 3
    await conn.executescript(
        "INSERT INTO rooms (room_id, joined_at, consent_notice_event_id) VALUES ('!r', 1, '$n');"
        "INSERT INTO messages (event_id, room_id, sender, body, ts) "
        "VALUES ('$q', '!r', '@p:x', 'question', 1);"
        "INSERT INTO answers (room_id, question_event_id, question_ts, created_at, "
        "answer_event_id, status, text, context_event_ids) "
        "VALUES ('!r', '$q', 1, 2, '$a', 'complete', 'ok', '[\"$q\"]');"
        "INSERT INTO votes (reaction_event_id, answer_event_id, room_id, sender, vote, raw_key, "
        "ts) VALUES ('$v1', '$a', '!r', '@p:x', 'up', '👍', 3), "
        "('$v2', '$a', '!r', '@p:x', 'up', '👍️', 4);"
        "INSERT INTO handled_events (event_id, ts) VALUES ('$cmd', 5);"
    )
    await conn.close()

    monkeypatch.undo()
    store = Store.over(Database(await open_database(path)))
    try:
        assert (await store.conversations.message("!r", "$q")).body == "question"
        answer = await store.conversations.answer_by_event("!r", "$a")
        assert answer.text == "ok" and answer.question_event_id == "$q"
        room = await store.rooms.room("!r")
        assert room.consent_notice_event_id == "$n" and room.consent_notice_version is None
        votes = await store.db.conn.execute_fetchall("SELECT COUNT(*) FROM current_votes")
        assert votes[0][0] == 1  # two variants by one person were two votes before
        handled = await store.db.conn.execute_fetchall("SELECT event_id FROM handled_events")
        assert [row[0] for row in handled] == ["$cmd"]
        await store.erasure.erase_event("!r", "$q", 7)
        assert (await store.conversations.answer_by_event("!r", "$a")).text is None
    finally:
        await store.close()


async def test_words_erased_while_their_answer_waited_stay_erased(store):
    for event_id in ("$q1", "$q2"):
        await store.conversations.save_message(message(event_id, "!r"))
    row = await store.conversations.queue_answer("!r", "$q2", 1, None, 1)
    # the earlier message is redacted while the answer waits for a model slot, before the
    # answer has recorded what it is built on
    await store.erasure.erase_event("!r", "$q1", 5)
    await store.conversations.update_answer(
        row.id, status="streaming", request_messages=[{"content": "text of $q1"}],
        context_event_ids=["$q1", "$q2"],
    )  # fmt: skip
    await store.conversations.update_answer(row.id, text="built on $q1", status="complete")
    kept = await store.db.all("SELECT text, request_messages, erased_at FROM answers")
    assert tuple(kept[0]) == (None, None, 5)
    # fetched again from the homeserver for a later question: still not kept
    assert not await store.conversations.save_message(message("$q1", "!r"))
    assert await store.conversations.message("!r", "$q1") is None


async def test_what_a_person_wrote_before_forget_me_is_never_kept_again(store):
    old = MessageRow("$old", "!r", "@p:x", None, "mon secret", 10, None, None, False)
    await store.conversations.save_message(old)
    await store.erasure.forget("@p:x", 20)
    assert not await store.conversations.save_message(old)  # a reply to it fetches it again
    new = MessageRow("$new", "!r", "@p:x", None, "une nouvelle question", 30, None, None, False)
    assert await store.conversations.save_message(new)  # what comes after is theirs to share
