"""People talk with the model through the bot: DMs, mentions, replies, threads."""

from __future__ import annotations

import asyncio

from tests.conftest import invite_bot
from tests.support.matrix_user import answer_to, final_answer, notices, originals


async def test_dm_gets_a_streamed_answer_with_html_and_mentions(make_user, start_bot, llm):
    bot = start_bot()
    alice = await make_user("alice")
    room = await invite_bot(alice, bot, direct=True)
    assert "aucune garantie" in notices(alice.events[room], bot.user_id)[0]

    question = await alice.send(room, "Quelle est la capitale de la **France** ?")
    text = await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, question))
    assert text == "Réponse à « Quelle est la capitale de la **France** ? »"
    answer = answer_to(alice.events[room], bot.user_id, question)
    assert answer["content"]["msgtype"] == "m.text"
    assert answer["content"]["m.mentions"] == {"user_ids": [alice.user_id]}
    assert "<strong>France</strong>" in answer["content"]["formatted_body"] or any(
        "<strong>France</strong>" in e["content"].get("m.new_content", {}).get("formatted_body", "")
        for e in alice.events[room]
    )
    sent = llm.requests[-1]["body"]
    assert sent["messages"][0]["role"] == "system"
    assert "Lucie" in sent["messages"][0]["content"]
    assert sent["messages"][-1] == {"role": "user", "content": question_text(alice, room, question)}
    assert sent["stream"] is True


def question_text(user, room, event_id):
    return next(e for e in user.events[room] if e["event_id"] == event_id)["content"]["body"]


async def test_group_room_answers_mentions_and_ignores_plain_messages(
    make_user, start_bot, llm
):
    bot = start_bot()
    alice = await make_user("alice")
    bob = await make_user("bob")
    room = await alice.create_room([bot.user_id, bob.user_id])
    await bob.join(room)
    await alice.wait_for(room, lambda ev: notices(ev, bot.user_id), timeout=60)

    plain = await alice.send(room, "Bob, on déjeune à midi ?")
    asked = await bob.send(room, f"{bot.user_id} combien font 2 et 2 ?", mentions=[bot.user_id])
    text = await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, asked))
    assert "combien font 2 et 2" in text
    await asyncio.sleep(1.5)
    await alice.sync()
    assert answer_to(alice.events[room], bot.user_id, plain) is None
    assert len(llm.requests) == 1
    user_turn = llm.requests[0]["body"]["messages"][-1]["content"]
    # in group rooms the model is told who speaks; the bot's own name is taken out
    bob_name = bob.user_id[1:].split(":")[0]  # Synapse's default display name
    assert user_turn == f"{bob_name}: combien font 2 et 2 ?"
    assert len(originals(alice.events[room], bot.user_id)) == 2  # notice + one answer
