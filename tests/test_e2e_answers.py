"""People talk with the model through the bot: DMs, mentions, replies, threads."""

from __future__ import annotations

import asyncio
import json

from tests.conftest import invite_bot
from tests.support.fake_llm import Behaviour
from tests.support.matrix_user import answer_to, final_answer, notices, originals


async def test_dm_gets_a_streamed_answer_with_html_and_mentions(make_user, start_bot, llm):
    bot = start_bot()
    alice = await make_user("alice")
    room = await invite_bot(alice, bot, direct=True)
    assert "aucune garantie" in notices(alice.events[room], bot.user_id)[0]

    llm.default = Behaviour(first_delay=2, token_delay=0.1)  # typing, then streamed edits
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
    assert bot.user_id in alice.typing[room]  # typing shown while the model thinks
    alice.typing[room].clear()
    llm.default = Behaviour()
    quick = await alice.send(room, "Et vite ?")
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, quick))
    await alice.sync(500)
    assert bot.user_id not in alice.typing[room]  # a quick answer needs no typing notice
    assert "capitale" not in bot.log()  # DEBUG logs, yet no message text without log_content

    record = (await bot.query("SELECT * FROM answers"))[0]
    assert record["question_event_id"] == question
    assert record["answer_event_id"] == answer["event_id"]
    assert json.loads(record["request_messages"]) == sent["messages"]
    assert json.loads(record["sampling"]) == {"temperature": 0.7, "top_p": 0.9, "max_tokens": 1024}
    assert record["model"] == "stand-in" and record["prompt_version"] == 0
    assert record["status"] == "complete" and record["text"] == text
    assert record["tokens"] > 1 and record["edits"] >= 1
    assert record["created_at"] <= record["started_at"] <= record["first_token_at"]
    assert record["first_token_at"] <= record["first_visible_at"] <= record["finished_at"]


async def test_with_streaming_off_an_answer_is_one_message_and_typing_lasts_until_it(
    make_user, start_bot, llm
):
    bot = start_bot(bot={"streaming": False})
    alice = await make_user("alice")
    room = await invite_bot(alice, bot, direct=True)
    words = " ".join(f"mot{n}" for n in range(15))
    llm.default = Behaviour(token_delay=0.1, text=words)  # 1.5 s of streaming from the model
    question = await alice.send(room, "Une réponse d'un bloc ?")
    text = await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, question))
    assert text == words
    await alice.sync(500)
    replies = [
        e
        for e in alice.events[room]
        if e["sender"] == bot.user_id and e["type"] == "m.room.message"
        and e["content"].get("msgtype") == "m.text"
    ]  # fmt: skip
    assert len(replies) == 1 and replies[0]["content"]["body"] == words  # no edits at all
    assert bot.user_id in alice.typing[room]  # the model spoke early, yet nothing was shown
    record = (await bot.settled("SELECT * FROM answers"))[0]
    assert record["status"] == "complete" and record["edits"] == 0
    assert record["first_visible_at"] - record["first_token_at"] >= 1000


def question_text(user, room, event_id):
    return next(e for e in user.events[room] if e["event_id"] == event_id)["content"]["body"]


async def test_group_room_answers_mentions_and_ignores_plain_messages(make_user, start_bot, llm):
    bot = start_bot()
    alice = await make_user("alice")
    bob = await make_user("bob")
    room = await alice.create_room([bot.user_id, bob.user_id])
    await bob.join(room)
    await alice.wait_for(room, lambda ev: notices(ev, bot.user_id), within=60)

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
    assert len(originals(alice.events[room], bot.user_id)) == 3  # two notices, one answer


async def test_reply_chain_reaches_the_model_without_fallbacks(make_user, start_bot, llm):
    bot = start_bot()
    alice = await make_user("alice")
    room = await invite_bot(alice, bot)
    first = await alice.send(room, "Lucie, cite un fleuve français.", mentions=[bot.user_id])
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, first))
    answer = answer_to(alice.events[room], bot.user_id, first)["event_id"]
    # an old client's reply: quoted fallback in body, <mx-reply> in HTML, no m.mentions
    follow = await alice.send(
        room,
        f"> <{bot.user_id}> Réponse à « cite un fleuve »\n\nEt sa longueur ?",
        reply_to=answer,
        extra={
            "format": "org.matrix.custom.html",
            "formatted_body": "<mx-reply><blockquote>old</blockquote></mx-reply>Et sa longueur ?",
        },
    )
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, follow))
    sent = llm.requests[-1]["body"]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[1]["content"].endswith("cite un fleuve français.")
    assert sent[2]["content"] == "Réponse à « cite un fleuve français. »"
    assert sent[3]["content"].endswith("Et sa longueur ?")
    assert ">" not in sent[3]["content"]


async def test_thread_answers_stay_in_the_thread_and_follow_ups_need_no_mention(
    make_user, start_bot, llm
):
    bot = start_bot()
    alice = await make_user("alice")
    room = await invite_bot(alice, bot)
    root = await alice.send(room, "Sujet : les volcans d'Auvergne")
    asked = await alice.send(
        room, "Lucie, lequel est le plus haut ?", mentions=[bot.user_id], thread_root=root
    )
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, asked))
    answer = answer_to(alice.events[room], bot.user_id, asked)
    relation = answer["content"]["m.relates_to"]
    assert relation["rel_type"] == "m.thread" and relation["event_id"] == root

    follow = await alice.send(room, "Et le plus récent ?", thread_root=root)
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, follow))
    sent = [m["content"] for m in llm.requests[-1]["body"]["messages"][1:]]
    assert "les volcans d'Auvergne" in sent[0]
    assert sent[-1].endswith("Et le plus récent ?")
    assert len(sent) == 3  # root and first question merged as one user turn, answer, follow-up


async def test_dm_keeps_the_recent_exchange_until_reset_or_a_pause(make_user, start_bot, llm):
    bot = start_bot(bot={"dm_idle_minutes": 0.05})  # a 3 s pause starts a new conversation
    alice = await make_user("alice")
    room = await invite_bot(alice, bot, direct=True)
    one = await alice.send(room, "Je m'appelle Alice.")
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, one))
    two = await alice.send(room, "Comment je m'appelle ?")
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, two))
    assert len(llm.requests[-1]["body"]["messages"]) == 4

    await alice.send(room, "!lucie reset")
    await alice.wait_for(room, lambda ev: any("vierge" in n for n in notices(ev, bot.user_id)))
    three = await alice.send(room, "Et maintenant ?")
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, three))
    messages = llm.requests[-1]["body"]["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"] == "Et maintenant ?"
    four = await alice.send(room, "Tu te souviens ?")
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, four))
    assert len(llm.requests[-1]["body"]["messages"]) == 4
    await asyncio.sleep(3.5)
    five = await alice.send(room, "Après une pause ?")
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, five))
    assert [m["content"] for m in llm.requests[-1]["body"]["messages"][1:]] == ["Après une pause ?"]


async def test_hostile_and_odd_events_never_stop_the_bot(make_user, start_bot, llm):
    bot = start_bot()
    alice = await make_user("alice")
    room = await invite_bot(alice, bot, direct=True)
    odd = [
        ("m.room.message", {"msgtype": "m.text", "body": 42}),
        ("m.room.message", {"msgtype": "m.text", "body": "x", "m.relates_to": "garbage"}),
        (
            "m.room.message",
            {
                "msgtype": "m.text",
                "body": "x",
                "m.relates_to": {"m.in_reply_to": {"event_id": "$nope"}},
            },
        ),
        ("m.room.message", {"msgtype": "m.text", "body": "y", "m.mentions": {"user_ids": 5}}),
        ("m.room.message", {"msgtype": "m.notice", "body": "a notice is never answered"}),
        ("m.room.message", {"msgtype": "m.text", "body": "!lucie " + "x" * 5000}),
        ("m.reaction", {"m.relates_to": {"rel_type": "m.annotation", "event_id": 3}}),
        ("m.room.redaction", {"redacts": ["not", "an", "id"]}),
        ("org.example.custom", {"anything": [1, 2, 3]}),
    ]
    accepted = 0
    for event_type, content in odd:
        try:
            await alice.send_raw(room, event_type, content)
            accepted += 1
        except AssertionError:
            pass  # Synapse itself refused this one
    assert accepted >= 6
    edit_of = await alice.send(room, "une vraie question")
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, edit_of))
    requests = len(llm.requests)
    await alice.send_raw(
        room,
        "m.room.message",
        {
            "msgtype": "m.text",
            "body": "* corrigée",
            "m.new_content": {"msgtype": "m.text", "body": "corrigée"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": edit_of},
        },
    )
    last = await alice.send(room, "toujours là ?")
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, last))
    assert len(llm.requests) == requests + 1  # the edit was not answered
    assert bot.process.poll() is None
    assert "Traceback" not in bot.log()
    # the unknown reply target did not break the answer to the "x" message
    rows = await bot.settled("SELECT status FROM answers")
    assert {r["status"] for r in rows} == {"complete"}
