"""Fault drills: the bot killed at random moments, the model server and the homeserver dying
under load, Synapse's default rate limits in many rooms, an unwritable database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
from collections import Counter
from pathlib import Path

import aiosqlite
import httpx
import pytest

from tests.conftest import invite_bot
from tests.support.bot_process import BotProcess
from tests.support.fake_llm import Behaviour
from tests.support.matrix_user import (
    answer_to,
    eventually,
    final_answer,
    notices,
    originals,
)

SEED = 20261124


def answers_per_question(events: list[dict], bot_id: str) -> Counter[str]:
    """How many answers (not edits, not notices) the bot gave to each event, from history."""
    counted: Counter[str] = Counter()
    for event in originals(events, bot_id):
        content = event["content"]
        reply = content.get("m.relates_to", {}).get("m.in_reply_to", {})
        if content.get("msgtype") == "m.text" and reply.get("event_id"):
            counted[reply["event_id"]] += 1
    return counted


@pytest.mark.slow
async def test_sigkill_at_random_moments_under_load_answers_every_question_once(
    make_user, start_bot, llm
):
    # 80 questions from one person in a few minutes: the drill is about crashes, not fair use
    bot = start_bot(guard={"quotas": {"enabled": False}})
    alice = await make_user("alice")
    rooms = [await invite_bot(alice, bot, direct=True) for _ in range(4)]
    llm.default = Behaviour(first_delay=0.2, token_delay=0.04)  # about 1.3 s an answer
    chance = random.Random(SEED)
    questions: dict[str, tuple[str, str]] = {}
    for cycle in range(20):
        for index, room in enumerate(rooms):
            text = f"Question {cycle}-{index} : " + " ".join(f"mot{k}" for k in range(25))
            questions[await alice.send(room, text)] = (room, text)
        await asyncio.sleep(chance.uniform(0, 2.5))
        bot.crash()  # SIGKILL: no chance to tidy up
        bot.start()

    for question, (room, text) in questions.items():
        answer = await alice.wait_for(
            room, lambda ev, q=question: final_answer(ev, bot.user_id, q), within=180
        )
        # questions still unanswered when this one was asked share its turn; it comes last
        assert answer.startswith("Réponse à « ") and answer.endswith(f"{text} »")
    await asyncio.sleep(2)  # anything late, such as a duplicate, would show up now
    for room in rooms:
        counted = answers_per_question(await alice.history(room), bot.user_id)
        asked = [q for q, (r, _) in questions.items() if r == room]
        assert {q: counted[q] for q in asked} == {q: 1 for q in asked}
        assert set(counted) <= set(asked)  # nothing answered that was not asked
    resumed = await bot.query("SELECT id FROM answers WHERE attempts > 1")
    assert len(resumed) >= 5  # the kills did land in the middle of answers
    assert "Traceback" not in bot.log()


LONG = " ".join(f"mot{k}" for k in range(60))


async def test_model_server_killed_mid_answer_then_restarted(make_user, start_bot, llm):
    bot = start_bot()
    alice = await make_user("alice")
    rooms = [await invite_bot(alice, bot, direct=True) for _ in range(3)]
    llm.default = Behaviour(token_delay=0.1, text=LONG)  # 6 s an answer
    asked = [await alice.send(room, "Une longue réponse ?") for room in rooms]
    for room, question in zip(rooms, asked, strict=True):
        await alice.wait_for(room, lambda ev, q=question: answer_to(ev, bot.user_id, q))
    llm.stop()  # the model server dies with three answers under way
    while_down = await alice.send(rooms[0], "Et maintenant ?")
    for room, question in zip(rooms, asked, strict=True):
        text = await alice.wait_for(
            room, lambda ev, q=question: final_answer(ev, bot.user_id, q), within=60
        )
        assert text.startswith("mot0") and text.endswith("_(réponse incomplète)_")
        await alice.wait_for(room, lambda ev: [n for n in notices(ev, bot.user_id) if "⚠️" in n])
    await alice.wait_for(
        rooms[0],
        lambda ev: [n for n in notices(ev, bot.user_id) if "injoignable" in n],
        within=60,
    )
    assert answer_to(alice.events[rooms[0]], bot.user_id, while_down) is None  # a notice only
    llm.start()
    llm.default = Behaviour()
    for room in rooms:
        later = await alice.send(room, "Le modèle est revenu ?")
        text = await alice.wait_for(room, lambda ev, q=later: final_answer(ev, bot.user_id, q), 60)
        assert text.endswith("Le modèle est revenu ? »")
    rows = await bot.settled("SELECT status FROM answers ORDER BY id")
    statuses = Counter(r["status"] for r in rows)
    assert statuses == {"cut": 3, "error": 1, "complete": 3}, statuses
    assert bot.process.poll() is None and "Traceback" not in bot.log()


async def test_synapse_restarted_under_load_no_duplicate_no_crash(
    make_user, start_bot, llm, synapse
):
    bot = start_bot()
    alice = await make_user("alice")
    rooms = [await invite_bot(alice, bot, direct=True) for _ in range(3)]
    llm.default = Behaviour(first_delay=0.3, token_delay=0.05, text=LONG)  # about 3 s an answer
    asked = {}
    for room in rooms:
        for n in range(2):
            asked[await alice.send(room, f"Avant le redémarrage {n}")] = room
    await asyncio.sleep(1.5)  # answers streaming
    synapse.stop()
    await asyncio.sleep(3)
    synapse.start()
    for room in rooms:
        asked[await alice.send(room, "Après le redémarrage")] = room
    for question, room in asked.items():
        text = await alice.wait_for(
            room, lambda ev, q=question: final_answer(ev, bot.user_id, q), within=120
        )
        assert text.startswith("mot0")
    await asyncio.sleep(2)
    for room in rooms:
        counted = answers_per_question(await alice.history(room), bot.user_id)
        mine = [q for q, r in asked.items() if r == room]
        assert {q: counted[q] for q in mine} == {q: 1 for q in mine}
    assert bot.process.poll() is None and "Traceback" not in bot.log()


@pytest.mark.slow
async def test_default_rate_limits_streaming_in_ten_rooms_at_once(make_user, start_bot, llm):
    bot = start_bot(rate_limited=True, data={"collection": "off"})  # Synapse's 0.2/s, burst 10
    alice = await make_user("alice")
    rooms = [await invite_bot(alice, bot, direct=True) for _ in range(10)]
    llm.default = Behaviour(token_delay=1 / 30, text=LONG)  # 30 tokens a second
    asked = {await alice.send(room, f"Question du salon {i}"): room for i, room in enumerate(rooms)}
    for question, room in asked.items():
        text = await alice.wait_for(
            room, lambda ev, q=question: final_answer(ev, bot.user_id, q), within=240
        )
        assert text == LONG
    assert "rate limited in" in bot.log()  # the limit was hit and honoured
    rows = await bot.settled("SELECT status, text FROM answers")
    assert len(rows) == 10 and all(r == {"status": "complete", "text": LONG} for r in rows)


async def test_locked_database_is_said_and_nothing_is_lost(make_user, start_bot, llm):
    bot = start_bot()
    alice = await make_user("alice")
    room = await invite_bot(alice, bot, direct=True)
    async with aiosqlite.connect(bot.data_dir / "lucie-bot.sqlite3") as other:
        await other.execute("BEGIN EXCLUSIVE")  # another process holds the database
        question = await alice.send(room, "Une question pendant le verrou")
        async with httpx.AsyncClient(timeout=30) as http:
            health = await http.get(f"{bot.ops_url}/healthz")
        assert health.status_code == 503 and health.json()["checks"]["database"] is False
        await eventually(lambda: _logged(bot, "database unavailable (database is locked)"), 30)
        assert answer_to(alice.events[room], bot.user_id, question) is None
        await other.rollback()
    text = await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, question), 60)
    assert text.endswith("Une question pendant le verrou »")
    await _intact_and_answered_once(bot, alice, room, question)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root")
async def test_full_disk_is_said_and_the_bot_resumes_when_space_returns(
    make_user, synapse, llm, tmp_path
):
    account = synapse.new_user("lucie", exempt=True)
    bot = BotProcess(tmp_path / "bot", synapse, account, llm)
    bot.data_dir.mkdir(parents=True)
    mount_small_disk(bot.data_dir)
    filler = bot.data_dir / "filler"
    try:
        bot.start()
        alice = await make_user("alice")
        room = await invite_bot(alice, bot, direct=True)
        fill(filler)
        question = await alice.send(room, "Une question sur un disque plein")
        await eventually(
            lambda: _logged(bot, "database unavailable (database or disk is full)"), 60
        )
        assert answer_to(alice.events[room], bot.user_id, question) is None
        filler.unlink()  # space is back
        text = await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, question), 60)
        assert text.endswith("Une question sur un disque plein »")
        await _intact_and_answered_once(bot, alice, room, question)
    finally:
        bot.stop()
        unmount(bot.data_dir)


def mount_small_disk(path: Path) -> None:
    command = ["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(path)]
    subprocess.run(command, check=True, timeout=30)


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=False, timeout=30)


def fill(path: Path) -> None:
    """Write until the filesystem has no space left."""
    with open(path, "wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()


async def _logged(bot, text: str) -> bool:
    return text in bot.log()


async def _intact_and_answered_once(bot, alice, room: str, question: str) -> None:
    rows = await bot.query("PRAGMA integrity_check")
    assert [next(iter(r.values())) for r in rows] == ["ok"]
    counted = answers_per_question(await alice.history(room), bot.user_id)
    assert counted[question] == 1
    assert bot.process.poll() is None and "Traceback" not in bot.log()
    assert len(await bot.query("SELECT * FROM answers WHERE question_event_id = ?", question)) == 1
