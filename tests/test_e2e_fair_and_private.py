"""A first fair-use limit, and data protection that holds through the real Synapse: collection
switched off per answer, edited questions, consent asked again for a new notice, and erasure
that a finishing answer cannot undo."""

from __future__ import annotations

import tomllib

import tomli_w

from tests.conftest import invite_bot
from tests.support.fake_llm import Behaviour
from tests.support.matrix_user import answer_to, eventually, final_answer, notices

CONSENT_TITLE = "Données d'entraînement"


async def test_one_person_cannot_take_every_answer(make_user, start_bot):
    bot = start_bot(bot={"questions_per_person": 2, "max_answers_per_question": 2})
    alice = await make_user("alice")
    dm = await invite_bot(alice, bot, direct=True)
    asked = [await alice.send(dm, f"Question {n} ?") for n in range(4)]
    for question in asked[:2]:
        await alice.wait_for(dm, lambda ev, q=question: final_answer(ev, bot.user_id, q))
    told = await alice.wait_for(
        dm, lambda ev: [t for t in notices(ev, bot.user_id) if "réessayez dans" in t]
    )
    assert len(told) == 1  # one notice for the two refused, not one each
    rows = await bot.settled("SELECT question_event_id FROM answers")
    assert sorted(r["question_event_id"] for r in rows) == sorted(asked[:2])

    first = answer_to(alice.events[dm], bot.user_id, asked[0])["event_id"]
    await alice.react(dm, first, "\U0001f501")  # a second answer: allowed
    await eventually(lambda: siblings(bot, asked[0], 2))
    await alice.react(dm, first, "\U0001f501\ufe0f")  # a third: over the cap
    capped = await alice.wait_for(
        dm, lambda ev: [t for t in notices(ev, bot.user_id) if "déjà eu 2 réponses" in t]
    )
    assert capped
    assert await siblings(bot, asked[0], 2)


async def siblings(bot, question: str, expected: int) -> bool:
    rows = await bot.settled(
        "SELECT COUNT(*) AS n FROM answers WHERE question_event_id = ?", question
    )
    return rows[0]["n"] == expected


async def test_collection_off_is_recorded_per_answer_and_consent_says_so(make_user, start_bot):
    bot = start_bot()
    alice = await make_user("alice")
    room = await invite_bot(alice, bot)
    before = await alice.send(room, "Lucie, avant ?")
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, before))
    await alice.send(room, "!lucie collect off")
    await alice.wait_for(room, lambda ev: [t for t in notices(ev, bot.user_id) if ": off" in t])
    during = await alice.send(room, "Lucie, pendant ?")
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, during))
    consent_notices = len(
        [t for t in notices(alice.events[room], bot.user_id) if CONSENT_TITLE in t]
    )
    await alice.send(room, "!lucie consent")
    await alice.wait_for(
        room, lambda ev: [t for t in notices(ev, bot.user_id) if "collecte de données est" in t]
    )
    assert consent_notices == len(
        [t for t in notices(alice.events[room], bot.user_id) if CONSENT_TITLE in t]
    )
    await alice.send(room, "!lucie collect on")
    await alice.wait_for(room, lambda ev: [t for t in notices(ev, bot.user_id) if ": on" in t])
    after = await alice.send(room, "Lucie, après ?")
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, after))
    rows = await bot.settled("SELECT question_event_id, collected FROM answers")
    collected = {r["question_event_id"]: r["collected"] for r in rows}
    assert collected == {before: 1, during: 0, after: 1}


async def test_an_edited_question_keeps_its_new_text(make_user, start_bot):
    bot = start_bot()
    alice = await make_user("alice")
    bob = await make_user("bob")
    room = await invite_bot(alice, bot)
    await alice.client.room_invite(room, bob.user_id)
    await bob.join(room)
    asked = await alice.send(room, "Lucie, quelle est la capitale de la Belgique ?")
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, asked))

    def edit(body: str) -> dict:
        return {
            "msgtype": "m.text",
            "body": f"* {body}",
            "m.new_content": {"msgtype": "m.text", "body": body},
            "m.relates_to": {"rel_type": "m.replace", "event_id": asked},
        }

    await bob.send_raw(room, "m.room.message", edit("forged by someone else"))
    await alice.send_raw(room, "m.room.message", edit("Lucie, quelle est la capitale du Chili ?"))

    async def edited():
        async with bot.store() as store:
            kept = await store.conversations.message(room, asked)
        return kept is not None and "Chili" in kept.body and kept.body

    assert await eventually(edited) == "Lucie, quelle est la capitale du Chili ?"


async def test_a_raised_notice_version_asks_consent_again(make_user, start_bot):
    bot = start_bot()
    alice = await make_user("alice")
    room = await invite_bot(alice, bot)
    await alice.wait_for(
        room, lambda ev: [t for t in notices(ev, bot.user_id) if CONSENT_TITLE in t]
    )
    await alice.send(room, "!lucie consent yes")
    await alice.wait_for(room, lambda ev: [t for t in notices(ev, bot.user_id) if "Merci" in t])
    bot.stop()
    config = tomllib.loads(bot.config_path.read_text(encoding="utf-8"))
    config["data"]["notice_version"] = 2
    bot.config_path.write_text(tomli_w.dumps(config), encoding="utf-8")
    bot.start()
    again = await alice.wait_for(
        room,
        lambda ev: (
            (found := [t for t in notices(ev, bot.user_id) if CONSENT_TITLE in t])
            and len(found) >= 2
            and found
        ),
        within=60,
    )
    assert len(again) == 2
    await alice.send(room, "!lucie consent status")
    status = await alice.wait_for(
        room, lambda ev: [t for t in notices(ev, bot.user_id) if "ne compte plus" in t]
    )
    assert "version 1" in status[0]
    async with bot.store() as store:
        assert (await store.rooms.room(room)).consent_notice_version == 2


async def test_forget_me_while_an_answer_streams_stays_forgotten(make_user, start_bot, llm):
    bot = start_bot()
    alice = await make_user("alice")
    dm = await invite_bot(alice, bot, direct=True)
    llm.when("confidentiel", Behaviour(token_delay=0.3, text="mot " * 20))
    asked = await alice.send(dm, "Mon projet confidentiel ?")

    async def streaming():
        rows = await bot.query("SELECT status FROM answers WHERE question_event_id = ?", asked)
        return rows and rows[0]["status"] == "streaming"

    await eventually(streaming)
    await alice.send(dm, "!lucie forget me")
    await alice.wait_for(dm, lambda ev: final_answer(ev, bot.user_id, asked), within=60)
    rows = await bot.settled(
        "SELECT status, text, request_messages, erased_at FROM answers WHERE question_event_id = ?",
        asked,
    )
    assert rows[0]["erased_at"] is not None
    assert (rows[0]["text"], rows[0]["request_messages"]) == (None, None)
    kept = await bot.query("SELECT body FROM messages WHERE body LIKE '%mot%'")
    assert kept == []  # the finished answer's text did not come back
