"""The bot keeps its word when the model server, the homeserver or the bot itself fails."""

from __future__ import annotations

import asyncio

from tests.conftest import invite_bot
from tests.support.fake_llm import Behaviour
from tests.support.matrix_user import (
    answer_to,
    edits_of,
    eventually,
    final_answer,
    notices,
    originals,
)

LONG = " ".join(f"mot{i}" for i in range(60))


async def test_model_server_down_then_back(make_user, start_bot, llm):
    bot = start_bot()
    alice = await make_user("alice")
    room = await invite_bot(alice, bot, direct=True)
    llm.stop()
    seen = len(notices(alice.events[room], bot.user_id))
    down = await alice.send(room, "Tu es là ?")
    text = await alice.wait_for(
        room, lambda ev: [n for n in notices(ev, bot.user_id)[seen:] if "injoignable" in n]
    )
    assert text[0].startswith("⚠️")
    assert answer_to(alice.events[room], bot.user_id, down) is None
    rows = await bot.settled("SELECT status, error FROM answers")
    assert rows[0]["status"] == "error" and rows[0]["error"].startswith("unreachable")

    llm.start()
    back = await alice.send(room, "Et maintenant ?")
    assert await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, back))


async def test_server_errors_broken_stream_and_context_too_long_notices(make_user, start_bot, llm):
    bot = start_bot()
    alice = await make_user("alice")
    room = await invite_bot(alice, bot, direct=True)
    llm.when("PANNE", Behaviour(status=500))
    llm.when("CASSE", Behaviour(broken_after=3, text=LONG))
    llm.when(
        "LONG",
        Behaviour(
            status=400,
            error_body='{"error": {"message": '
            '"This model\'s maximum context length is 4096 tokens"}}',
        ),
    )

    def notice_with(word, after):
        return lambda ev: [n for n in notices(ev, bot.user_id)[after:] if word in n]

    seen = len(notices(alice.events[room], bot.user_id))
    await alice.send(room, "PANNE ?")
    await alice.wait_for(room, notice_with("renvoyé une erreur", seen))
    broken = await alice.send(room, "CASSE ?")
    await alice.wait_for(room, notice_with("illisible", seen))
    text = await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, broken))
    assert text.startswith("mot0 mot1 mot2") and text.endswith("_(réponse incomplète)_")
    await alice.send(room, "LONG ?")
    await alice.wait_for(room, notice_with("trop longue", seen))
    llm.when("TRONQUE", Behaviour(text="début de réponse", finish_reason="length"))
    cut = await alice.send(room, "TRONQUE ?")
    text = await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, cut))
    assert text == "début de réponse\n\n_(réponse incomplète)_"

    async def statuses():
        found = [r["status"] for r in await bot.query("SELECT status FROM answers ORDER BY id")]
        return found if "streaming" not in found else None

    assert await eventually(statuses) == ["error", "cut", "error", "cut"]

    fine = await alice.send(room, "Tout va bien ?")  # the bot carries on
    assert await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, fine))


async def test_restart_no_duplicate_no_history_and_catch_up(make_user, start_bot, llm):
    # a 9 s catch-up window; a production-length long poll that SIGTERM must cut short
    bot = start_bot(bot={"catch_up_minutes": 0.15}, matrix={"sync_timeout_ms": 60_000})
    alice = await make_user("alice")
    room = await invite_bot(alice, bot, direct=True)
    before = await alice.send(room, "Première question")
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, before))
    assert bot.stop() == 0  # a clean exit, not the SIGKILL that follows a 20 s wait

    too_old = await alice.send(room, "Question posée il y a longtemps")
    await asyncio.sleep(10)  # now older than the catch-up window
    missed = await alice.send(room, "Question posée pendant la panne")
    requests_before = len(llm.requests)
    bot.start()
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, missed), within=60)
    await asyncio.sleep(2)
    await alice.sync()
    events = alice.events[room]
    assert answer_to(events, bot.user_id, too_old) is None
    answers = [e for e in originals(events, bot.user_id) if e["content"]["msgtype"] == "m.text"]
    assert len(answers) == 2  # one for the first question, one for the missed one
    assert len(llm.requests) == requests_before + 1
    assert len(notices(events, bot.user_id)) == 2  # join and consent notices, not repeated


async def test_answer_cut_by_a_crash_is_completed_in_the_same_reply(make_user, start_bot, llm):
    bot = start_bot()
    alice = await make_user("alice")
    room = await invite_bot(alice, bot, direct=True)
    llm.default = Behaviour(token_delay=0.25, text=LONG)
    question = await alice.send(room, "Raconte une longue histoire")
    first = await alice.wait_for(room, lambda ev: answer_to(ev, bot.user_id, question))
    bot.crash()  # SIGKILL while streaming
    assert "org.matrix.msc4357.live" in first["content"]
    llm.default = Behaviour(text=LONG)
    bot.start()
    text = await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, question), within=60)
    assert text == LONG
    await asyncio.sleep(1)
    await alice.sync()
    events = alice.events[room]
    replies = [e for e in originals(events, bot.user_id) if e["content"]["msgtype"] == "m.text"]
    assert [e["event_id"] for e in replies] == [first["event_id"]]
    rows = await bot.settled("SELECT status, attempts, answer_event_id FROM answers")
    assert rows == [{"status": "complete", "attempts": 2, "answer_event_id": first["event_id"]}]


async def test_streaming_under_default_rate_limits_lands_the_full_text(make_user, start_bot, llm):
    bot = start_bot(rate_limited=True, bot={"edit_interval_s": 0.1, "max_edits_per_answer": 40})
    alice = await make_user("alice")
    room = await invite_bot(alice, bot, direct=True)
    llm.default = Behaviour(token_delay=0.05, text=LONG)
    question = await alice.send(room, "Un long texte, s'il te plaît")
    text = await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, question), within=90)
    assert text == LONG
    answer = answer_to(alice.events[room], bot.user_id, question)
    assert len(edits_of(alice.events[room], answer["event_id"])) < 40
    assert "rate limited in" in bot.log()  # Synapse's 0.2/s, burst 10 was hit and honoured

    async def recorded():  # the record follows the final edit by a moment
        rows = await bot.query("SELECT status, text FROM answers")
        return rows if rows and rows[0]["status"] != "streaming" else None

    assert await eventually(recorded) == [{"status": "complete", "text": LONG}]


async def test_a_slow_answer_in_one_room_does_not_delay_another(make_user, start_bot, llm):
    bot = start_bot()
    alice = await make_user("alice")
    slow_room = await invite_bot(alice, bot, direct=True)
    fast_room = await invite_bot(alice, bot, direct=True)
    llm.when("LENTEMENT", Behaviour(first_delay=12))
    slow = await alice.send(slow_room, "Réponds LENTEMENT")

    async def slow_request_sent():
        return len(llm.requests) == 1

    await eventually(slow_request_sent)
    fast = await alice.send(fast_room, "Réponds vite")
    await alice.wait_for(fast_room, lambda ev: final_answer(ev, bot.user_id, fast))
    assert final_answer(alice.events[slow_room], bot.user_id, slow) is None
    await alice.wait_for(slow_room, lambda ev: final_answer(ev, bot.user_id, slow), within=40)

    async def recorded():  # the records follow the final edits by a moment
        rows = await bot.query("SELECT question_event_id, first_token_at, finished_at FROM answers")
        return rows if len(rows) == 2 and all(r["finished_at"] for r in rows) else None

    rows = {r["question_event_id"]: r for r in await eventually(recorded)}
    # the fast room's answer was complete before the slow room's model even started answering
    assert rows[fast]["finished_at"] < rows[slow]["first_token_at"]
