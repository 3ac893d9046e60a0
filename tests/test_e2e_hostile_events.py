"""What one room member can do to the bot through a real Synapse, and must not get away with:
encrypted "redactions" that erase records, floods of unreadable events that stall it or make
it spend its send budget, and a group room the bot takes for a DM after a restart."""

from __future__ import annotations

import asyncio
import time

from nio import RoomKeyRequest

from tests.conftest import invite_bot
from tests.support.matrix_user import answer_to, final_answer, notices, originals

LOCK = "\U0001f512"  # 🔒, in the "could not read your message" notice


async def test_only_the_homeserver_redacts(make_user, start_bot, llm):
    bot = start_bot()
    alice = await make_user("alice", encryption=True)
    bob = await make_user("bob", encryption=True)
    room = await invite_bot(alice, bot, encrypted=True)
    await alice.client.room_invite(room, bob.user_id)
    await bob.join(room)
    first = await alice.send(room, "Lucie, première question ?", mentions=[bot.user_id])
    assert await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, first), 60)
    answer = answer_to(alice.events[room], bot.user_id, first)["event_id"]

    # any member can encrypt any inner type: "redactions" of the answer, of the question, and
    # of "$%" (a LIKE pattern matching every id), both with top-level and v11 content redacts;
    # then a forged membership and state event of the same kind
    for target in (answer, first, "$%"):
        await bob.send_encrypted(room, "m.room.redaction", {"redacts": target}, redacts=target)
    await bob.send_encrypted(
        room, "m.room.member", {"membership": "leave"}, state_key=alice.user_id
    )
    await bob.send_encrypted(room, "m.room.redaction", {"redacts": answer}, state_key="")
    # handled after those: once it is answered, the forged events have been seen; and had nio
    # applied the forged "leave", the bot would have stopped sharing its keys with alice, who
    # could not read this answer
    probe = await alice.send(room, "Lucie, deuxième question ?", mentions=[bot.user_id])
    assert await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, probe), 60)

    rows = await bot.settled("SELECT question_event_id, text, erased_at FROM answers")
    assert len(rows) == 2
    assert all(row["text"] and row["erased_at"] is None for row in rows), rows
    kept = await bot.query("SELECT body FROM messages WHERE event_id = ?", first)
    assert kept and kept[0]["body"], "the question's text was erased"

    # the homeserver's own redaction still erases the question and the answer built on it
    await alice.redact(room, first)

    async def erased():
        rows = await bot.query(
            "SELECT text, erased_at FROM answers WHERE question_event_id = ?", first
        )
        return rows and rows[0]["text"] is None and rows[0]["erased_at"]

    deadline = time.monotonic() + 20
    while not await erased():
        assert time.monotonic() < deadline, "a real redaction did not erase the answer"
        await asyncio.sleep(0.2)
    assert "Traceback" not in bot.log()


async def test_a_flood_of_unreadable_events_neither_stalls_nor_spends_the_send_budget(
    make_user, start_bot, llm
):
    # Synapse's default message rate limit: every notice the flood provokes is one less answer
    bot = start_bot(rate_limited=True, matrix={"key_wait_s": 1})
    alice = await make_user("alice", encryption=True)
    bob = await make_user("bob", encryption=True)
    room = await invite_bot(alice, bot, encrypted=True)
    await alice.client.room_invite(room, bob.user_id)
    await bob.join(room)
    await bob.sync(0)

    junk = await bob.send_junk_encrypted(room, 100)
    await asyncio.sleep(4)  # past the key wait: every notice the bot means to send is due
    asked = await alice.send(room, "Lucie, une question normale ?", mentions=[bot.user_id])
    started = time.monotonic()
    text = await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, asked), 30)
    assert text.endswith("une question normale ? »")
    print(f"answered {time.monotonic() - started:.1f} s after the question")

    await asyncio.sleep(3)  # anything still queued would show by now
    await alice.sync(0)
    locks = [n for n in notices(alice.events[room], bot.user_id) if LOCK in n]
    assert len(locks) <= 2, len(locks)
    sent = originals(alice.events[room], bot.user_id)
    assert len(sent) <= 6, [e["content"]["body"][:40] for e in sent]

    await bob.sync(0)
    junk_sessions = {e["content"]["session_id"] for e in await events_named(bob, room, junk)}
    requests = [
        e
        for e in bob.to_device
        if isinstance(e, RoomKeyRequest)
        and e.sender == bot.user_id  # alice's own nio asks too, without bound: not the bot
        and e.session_id in junk_sessions
    ]
    assert len(requests) <= 10, len(requests)
    kept = await bot.query("SELECT COUNT(*) AS n FROM undecrypted WHERE sender = ?", bob.user_id)
    assert kept[0]["n"] <= 25, kept
    assert "Traceback" not in bot.log()


async def events_named(user, room: str, event_ids: list[str]) -> list[dict]:
    wanted = set(event_ids)
    return [e for e in await user.history(room) if e.get("event_id") in wanted]


async def test_a_busy_group_room_is_no_dm_after_a_restart(make_user, start_bot, llm):
    bot = start_bot()
    alice, bob, carol = [await make_user(name) for name in ("alice", "bob", "carol")]
    room = await invite_bot(alice, bot)
    for person in (bob, carol):
        await alice.client.room_invite(room, person.user_id)
        await person.join(room)
    dm = await invite_bot(alice, bot, direct=True)
    for i in range(60):  # more than one sync's timeline: the members' joins scroll out of it
        await (bob if i % 2 else carol).send(room, f"bavardage {i}")
    before = await alice.send(room, "Sans mention, avant le redémarrage")
    asked = await alice.send(room, "Lucie, avec mention ?", mentions=[bot.user_id])
    assert await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, asked), 60)
    assert not await bot.query("SELECT 1 FROM answers WHERE question_event_id = ?", before)

    assert bot.stop() == 0
    bot.start()
    quiet = await alice.send(room, "Sans mention, après le redémarrage")
    private = await alice.send(dm, "En privé, sans mention")
    again = await alice.send(room, "Lucie, encore là ?", mentions=[bot.user_id])
    assert await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, again), 60)
    assert await alice.wait_for(dm, lambda ev: final_answer(ev, bot.user_id, private), 60)
    answered = await bot.query("SELECT 1 FROM answers WHERE question_event_id = ?", quiet)
    assert not answered, "the group room was taken for a DM after the restart"
    assert answer_to(alice.events[room], bot.user_id, quiet) is None
