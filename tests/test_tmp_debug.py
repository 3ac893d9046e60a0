from __future__ import annotations
import asyncio, json, random
from tests.conftest import invite_bot
from tests.support.fake_llm import Behaviour
from tests.support.matrix_user import final_answer, answer_to, current_content, edits_of

SEED = 20261124

async def test_debug(make_user, start_bot, llm):
    bot = start_bot(guard={"quotas": {"enabled": False}})
    alice = await make_user("alice")
    rooms = [await invite_bot(alice, bot, direct=True) for _ in range(4)]
    llm.default = Behaviour(first_delay=0.2, token_delay=0.04)
    chance = random.Random(SEED)
    questions = {}
    for cycle in range(20):
        for index, room in enumerate(rooms):
            text = f"Question {cycle}-{index} : " + " ".join(f"mot{k}" for k in range(25))
            questions[await alice.send(room, text)] = (room, text)
        await asyncio.sleep(chance.uniform(0, 2.5))
        bot.crash()
        bot.start()
    await asyncio.sleep(20)
    for _ in range(5):
        await alice.sync(1000)
    bad = []
    for question, (room, text) in questions.items():
        if not final_answer(alice.events[room], bot.user_id, question):
            ans = answer_to(alice.events[room], bot.user_id, question)
            info = {"q": question, "text": text[:20], "answer": ans and ans["event_id"]}
            if ans:
                info["current"] = current_content(alice.events[room], ans["event_id"])
                info["edits"] = [(e["event_id"], "org.matrix.msc4357.live" in e["content"]["m.new_content"], e["content"]["m.new_content"]["body"][-30:]) for e in edits_of(alice.events[room], ans["event_id"])]
            bad.append(info)
    rows = await bot.query("SELECT question_event_id, answer_event_id, status, attempts, edits FROM answers")
    print("BAD", len(bad), "of", len(questions), [b["text"] for b in bad][:80])
    for room in rooms:
        evs = alice.events[room]
        print("ROOM", room[:8], len(evs), sum(1 for e in evs if e["sender"] == bot.user_id))
        from collections import Counter
        kinds = Counter((e["type"], e["content"].get("msgtype"), (e["content"].get("m.relates_to") or {}).get("rel_type"), "m.in_reply_to" in (e["content"].get("m.relates_to") or {}), e["content"].get("body", "")[:25]) for e in evs if e["sender"] == bot.user_id)
        print(kinds.most_common(12))
    print("DB", [ (dict(r)["status"], dict(r)["attempts"]) for r in rows][:80])
    assert not bad
