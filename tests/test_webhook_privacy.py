"""What the webhook may no longer send, and must still send: consent withdrawn, a redaction and
"forget me" take back what waits; a removal goes only for what had left, consent or not; texts
leave masked as in exports; one event cannot hold the queue; trimming reads no more than it
drops."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from bot.config import ConfigError, load_settings
from bot.core.clock import now_ms
from bot.storage.outbox_store import Pending, SqliteOutbox
from bot.storage.store import Store
from bot.webhook.delivery import Outcome, Verdict, Webhook
from bot.webhook.payload import webhook_pseudonyms
from tests.support.fake_llm import FakeLLM
from tests.test_export_pii import IBAN, NIR
from tests.test_relay_units import ROOM, Room
from tests.test_webhook import (
    DOWN,
    HOOK_SECRET,
    PSEUDONYM_SECRET,
    UP,
    Receiver,
    answered,
    arrived,
    bots,
    outcome,
    settings_for,
)

IDS = webhook_pseudonyms(PSEUDONYM_SECRET)


@pytest.fixture
async def bot(tmp_path: Path, llm: FakeLLM):
    async with bots(tmp_path, llm) as make:
        yield make


def redaction(room: Room, sender: str, target: str) -> dict[str, Any]:
    room.count += 1
    return {"type": "m.room.redaction", "sender": sender, "event_id": f"$x{room.count}",
            "redacts": target, "origin_server_ts": now_ms(), "content": {}}  # fmt: skip


async def redact(room: Room, sender: str, target: str) -> None:
    await room.relay.on_redaction(ROOM, redaction(room, sender, target))


async def react(room: Room, sender: str, target: str, key: str) -> str:
    await room.react(sender, target, key)
    return f"$r{room.count}"


async def test_consent_withdrawn_or_a_redaction_takes_back_what_waits(tmp_path, bot, llm):
    """The receiver is down while erin corrects then withdraws, and frank corrects then redacts:
    after the restart, none of it leaves, nor any removal of what never left."""
    receiver = Receiver()  # down for now
    room, store, hook, _ = await bot(receiver.url)
    # no try meanwhile: one under way when feedback is taken back may have arrived, and then
    # its removal goes (tested below)
    await hook.stop(flush_s=0)
    for person in ("@erin:x", "@frank:x", "@alice:x"):
        await room.say(person, "!lucie consent yes")
    answer = await answered(room, store)
    erin = await room.say("@erin:x", "!lucie correct Le mot juste d'erin.", answer)
    await react(room, "@erin:x", answer, UP)
    await room.say("@erin:x", "!lucie consent no")
    await redact(room, "@erin:x", erin)
    frank = await room.say("@frank:x", "!lucie correct Le mot juste de frank.", answer)
    await redact(room, "@frank:x", frank)
    assert await store.db.all("SELECT 1 FROM corrections") == []
    await react(room, "@alice:x", answer, DOWN)  # a marker: what comes before it has gone by

    again = Webhook.build(settings_for(tmp_path, llm, receiver.url), store.db, CollectorRegistry())
    assert again is not None
    await receiver.start()
    again.start()
    try:
        await arrived(receiver, 1)
    finally:
        await again.stop()
        await receiver.stop()
    assert [(e["kind"], e["person"]) for e in receiver.requests] == [
        ("vote", IDS.of("user", "@alice:x"))
    ]


async def test_removals_of_what_left_go_after_consent_or_collection_stopped(bot, llm):
    receiver = await Receiver().start()
    try:
        room, store, _, _ = await bot(receiver.url)
        await room.say("@erin:x", "!lucie consent yes")
        answer = await answered(room, store)
        up = await react(room, "@erin:x", answer, UP)
        corrected = await room.say("@erin:x", "!lucie correct Mieux dit.", answer)
        await arrived(receiver, 2)
        await room.say("@erin:x", "!lucie consent no")
        await store.rooms.set_room(ROOM, collection=0)
        await redact(room, "@erin:x", up)
        await redact(room, "@erin:x", corrected)
        events = await arrived(receiver, 4)
    finally:
        await receiver.stop()
    assert [(e["kind"], e["value"]) for e in events] == [
        ("vote", "up"),
        ("correction", None),
        ("vote_removed", "up"),
        ("correction_removed", None),
    ]
    assert {e["person"] for e in events} == {IDS.of("user", "@erin:x")}


async def test_a_vote_made_before_consent_is_not_revealed_by_its_removal(bot, llm):
    receiver = await Receiver().start()
    try:
        room, store, _, _ = await bot(receiver.url)
        answer = await answered(room, store, "@carol:x")
        up = await react(room, "@carol:x", answer, UP)  # no consent yet: never left
        await room.say("@carol:x", "!lucie consent yes")
        await redact(room, "@carol:x", up)
        await react(room, "@carol:x", answer, DOWN)  # the marker, which may go
        await arrived(receiver, 1)
        await asyncio.sleep(0.2)
    finally:
        await receiver.stop()
    assert [(e["kind"], e["value"]) for e in receiver.requests] == [("vote", "down")]


async def test_forget_me_tells_the_receiver_by_pseudonym_only_when_something_left(bot, llm):
    receiver = await Receiver().start()
    try:
        room, store, _, _ = await bot(receiver.url)
        for person in ("@alice:x", "@bob:x", "@carol:x"):
            await room.say(person, "!lucie consent yes")
        answer = await answered(room, store)
        await react(room, "@alice:x", answer, UP)
        await arrived(receiver, 1)
        await room.say("@alice:x", "!lucie forget me")
        await room.say("@bob:x", "!lucie forget me")  # nothing of bob's ever left
        await react(room, "@carol:x", answer, DOWN)  # the marker
        events = await arrived(receiver, 3)
        await room.say("@alice:x", "!lucie forget me")  # all was forgotten already
        await asyncio.sleep(0.3)
    finally:
        await receiver.stop()
    assert [(e["kind"], e["person"]) for e in receiver.requests] == [
        ("vote", IDS.of("user", "@alice:x")),
        ("person_forgotten", IDS.of("user", "@alice:x")),
        ("vote", IDS.of("user", "@carol:x")),
    ]
    forgotten = events[1]
    assert forgotten["room"] is forgotten["answer"] is forgotten["value"] is None
    assert forgotten["text"] is forgotten["model"] is None
    for table in ("webhook_forwarded", "webhook_people"):
        rows = await store.db.all(f"SELECT person FROM {table}")
        assert len(rows) == 1, table  # carol's only


async def test_forget_me_drops_what_waits_even_when_the_erasure_fails(bot, llm, monkeypatch):
    receiver = Receiver()  # down: alice's vote waits
    room, store, hook, _ = await bot(receiver.url)
    await hook.stop(flush_s=0)  # and is never tried: nothing of hers has left
    await room.say("@alice:x", "!lucie consent yes")
    answer = await answered(room, store)
    await react(room, "@alice:x", answer, UP)
    assert await store.db.all("SELECT 1 FROM webhook_outbox")

    async def broken(user_id: str, now: int) -> None:
        raise RuntimeError("disk")

    monkeypatch.setattr(store.erasure, "forget", broken)
    with contextlib.suppress(RuntimeError):
        await room.say("@alice:x", "!lucie forget me")
    assert await store.db.all("SELECT 1 FROM webhook_outbox") == []


async def test_a_correction_leaves_masked_as_exports_mask_it(bot, llm):
    """Identifiers stored unmasked (guard.mask_personal_data off) and the names of people the
    bot heard, a person who never consented among them, leave masked."""
    receiver = await Receiver().start()
    try:
        room, store, _, _ = await bot(receiver.url, guard={"mask_personal_data": False})
        room.port.names["@rdupont:x"] = "Robert Dupont [Intérieur]"
        await answered(room, store, "@rdupont:x")  # never consents; his name is known
        await room.say("@alice:x", "!lucie consent yes")
        answer = await answered(room, store)
        said = f"!lucie correct Robert Dupont a raison : NIR {NIR}, IBAN {IBAN}."
        await room.say("@alice:x", said, answer)
        stored = await store.db.one("SELECT text FROM corrections")
        assert stored is not None and NIR in stored["text"]  # as the settings asked
        (event,) = await arrived(receiver, 1)
    finally:
        await receiver.stop()
    assert event["text"] == "<NAME> a raison : NIR [NIR], IBAN [IBAN]."


async def test_an_event_the_receiver_breaks_on_is_given_up_and_the_next_goes(bot, llm):
    receiver = await Receiver().start()
    receiver.reset = {"label"}  # the connection closes unanswered, every time
    try:
        room, store, _, metrics = await bot(receiver.url, max_attempts=2)
        await room.say("@alice:x", "!lucie consent yes")
        answer = await answered(room, store)
        await react(room, "@alice:x", answer, UP)
        await arrived(receiver, 1)  # it answers
        await react(room, "@alice:x", answer, "\u274c")
        await react(room, "@alice:x", answer, DOWN)
        events = await arrived(receiver, 2)
    finally:
        await receiver.stop()
    assert [e["value"] for e in events] == ["up", "down"]
    assert [e["kind"] for e in receiver.requests].count("label") == 2  # max_attempts
    assert outcome(metrics, "failed") == 1


async def test_a_receiver_down_is_waited_for_without_using_attempts(bot, llm):
    receiver = Receiver()  # never answered, nothing listens
    room, store, hook, metrics = await bot(receiver.url, max_attempts=1)
    await room.say("@alice:x", "!lucie consent yes")
    answer = await answered(room, store)
    await react(room, "@alice:x", answer, UP)
    await asyncio.sleep(0.5)  # several tries
    assert outcome(metrics, "failed") == 0 and await hook.outbox.waiting() == 1
    # none reached it: the vote is not counted as having left, nor would its removal go
    assert await store.db.all("SELECT 1 FROM webhook_forwarded") == []
    assert await store.db.all("SELECT 1 FROM webhook_people") == []


async def test_retry_after_zero_waits_the_backoff_at_least(tmp_path, llm):
    store = await Store.open(tmp_path / "lucie-bot.sqlite3")
    try:
        settings = settings_for(tmp_path, llm, "http://127.0.0.1:9/hook", max_backoff_s=60)
        hook = Webhook.build(settings, store.db, CollectorRegistry())
        assert hook is not None
        too_many = Verdict(Outcome.UNAVAILABLE, "HTTP 429", retry_after_s=0.0)
        for failures in (1, 4):
            wait_s = await hook._settle(Pending(1, b"{}", 0), too_many, failures)
            assert wait_s is not None and wait_s >= 2**failures / 2
        later = Verdict(Outcome.UNAVAILABLE, "HTTP 429", retry_after_s=30.0)
        assert await hook._settle(Pending(1, b"{}", 0), later, 0) == 30.0  # longer: honoured
    finally:
        await store.close()


async def test_trimming_the_outbox_reads_no_more_than_it_drops(tmp_path):
    store = await Store.open(tmp_path / "lucie-bot.sqlite3")
    try:
        outbox = SqliteOutbox(store.db, 3)
        statements: list[str] = []
        await store.db.conn.set_trace_callback(statements.append)
        dropped = [await outbox.put(None, b"{}", n) for n in range(5)]
        await store.db.conn.set_trace_callback(None)
        assert dropped == [0, 0, 0, 1, 1] and await outbox.waiting() == 3
        deletes = [sql for sql in statements if sql.lstrip().upper().startswith("DELETE")]
        assert deletes
        for sql in deletes:
            plan = await store.db.all(f"EXPLAIN QUERY PLAN {sql}")
            steps = [row["detail"] for row in plan]
            assert not [step for step in steps if step.startswith("SCAN")], (sql, steps)
    finally:
        await store.close()


def test_the_webhook_secret_may_not_be_the_pseudonym_secret(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(
        '[matrix]\nhomeserver = "http://h"\nuser_id = "@a:b"\npassword = "p"\n'
        f'[data]\npseudonym_secret = "{HOOK_SECRET}"\n'
        f'[webhook]\nurl = "https://hooks.example.org/x"\nsecret = "{HOOK_SECRET}"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as refused:
        load_settings(config)
    message = str(refused.value)
    assert "webhook.secret" in message and "data.pseudonym_secret" in message
    assert "\n" not in message and HOOK_SECRET not in message
