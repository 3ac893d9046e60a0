"""Database trips an answer costs: what does not change is not read or written again, and what
belongs together goes in one trip; nothing stale is ever read back."""

from __future__ import annotations

from typing import Any

from nio import MatrixRoom
from nio.rooms import RoomSummary

from bot.core.records import MessageRow
from bot.matrix.direct import DirectRooms
from bot.storage.store import Store


async def traced(store: Store) -> list[str]:
    statements: list[str] = []
    await store.db.conn.set_trace_callback(statements.append)
    return statements


async def test_a_room_is_read_once_and_read_again_after_a_change(tmp_path):
    store = await Store.open(tmp_path / "bot.sqlite3")
    try:
        await store.rooms.add_room("!r", 1)
        statements = await traced(store)
        first = await store.rooms.room("!r")
        again = await store.rooms.room("!r")
        assert first == again and first is not None and first.lang is None
        assert sum("FROM rooms" in s for s in statements) == 1
        await store.rooms.set_room("!r", lang="en")
        changed = await store.rooms.room("!r")
        assert changed is not None and changed.lang == "en"
        assert await store.rooms.room("!other") is None  # nothing is made up for other rooms
    finally:
        await store.db.close()


async def test_an_answer_and_its_message_are_written_in_one_transaction(tmp_path):
    store = await Store.open(tmp_path / "bot.sqlite3")
    conversations = store.conversations
    try:
        question = MessageRow("$q", "!r", "@a:x", "A", "Bonjour ?", 1, None, None, False)
        await conversations.save_message(question)
        row = await conversations.queue_answer("!r", "$q", 1, None, 1)
        assert row is not None
        statements = await traced(store)
        reply = MessageRow("$a", "!r", "@bot:x", None, "Bonjour.", 2, "$q", None, True)
        await conversations.answer_message(row.id, reply, answer_event_id="$a", status="complete")
        assert [s.split()[0] for s in statements] == ["BEGIN", "UPDATE", "INSERT", "COMMIT"]
        kept = await conversations.message("!r", "$a")
        assert kept is not None and kept.body == "Bonjour." and kept.from_bot
        answers = await store.db.all("SELECT answer_event_id, status FROM answers")
        assert [tuple(a) for a in answers] == [("$a", "complete")]
    finally:
        await store.db.close()


class CountingRooms:
    def __init__(self) -> None:
        self.writes: list[dict[str, Any]] = []

    async def room(self, room_id: str) -> None:
        return None

    async def set_room(self, room_id: str, **fields: Any) -> None:
        self.writes.append(fields)


async def test_a_dm_summary_repeated_by_every_sync_is_written_once():
    room = MatrixRoom("!r", "@bot:x")
    room.summary = RoomSummary(joined_member_count=2, invited_member_count=0)
    client = type("Client", (), {"rooms": {"!r": room}})()
    rooms = CountingRooms()
    direct = DirectRooms(client, rooms)  # type: ignore[arg-type]
    for _ in range(5):  # Synapse sends the summary with most syncs
        await direct.learn("!r", fresh_summary=True, must_know=True)
    assert rooms.writes == [{"direct": 1}] and direct.is_dm("!r")
    room.summary = RoomSummary(joined_member_count=3, invited_member_count=0)
    await direct.learn("!r", fresh_summary=True, must_know=True)
    assert rooms.writes == [{"direct": 1}, {"direct": 0}] and not direct.is_dm("!r")
