"""Operations: health and metrics over HTTP, model-server failover, SIGTERM, JSON logs."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys

import httpx
from aiohttp import web

from tests.conftest import invite_bot
from tests.support.bot_process import ROOT, BotProcess
from tests.support.fake_llm import Behaviour, FakeLLM
from tests.support.matrix_user import answer_to, eventually, final_answer, originals
from tests.support.synapse import free_port

LONG = " ".join(f"mot{i}" for i in range(25))


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.get(url)


async def test_health_and_metrics_follow_what_happens(make_user, start_bot, llm):
    bot = start_bot()
    alice = await make_user("alice")
    room = await invite_bot(alice, bot, direct=True)
    question = await alice.send(room, "Bonjour ?")
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, question))
    answer = answer_to(alice.events[room], bot.user_id, question)["event_id"]
    await alice.react(room, answer, "\U0001f44d")

    health = await get(f"{bot.ops_url}/healthz")
    assert health.status_code == 200
    assert health.json()["checks"] == {
        "sync": True, "database": True, "model": True, "model_servers": [True],
    }  # fmt: skip
    assert llm.base_url not in health.text  # server addresses may carry credentials

    async def counted():
        text = (await get(f"{bot.ops_url}/metrics")).text
        return text if 'lucie_bot_votes_total{vote="up"} 1.0' in text else None

    metrics = await eventually(counted)
    assert 'lucie_bot_answers_total{status="complete"} 1.0' in metrics
    assert "lucie_bot_first_token_seconds_count 1.0" in metrics
    assert "lucie_bot_final_answer_seconds_count 1.0" in metrics
    chunks = "Réponse à « Bonjour ? »".count(" ") + 1  # the stand-in streams word by word
    assert f"lucie_bot_tokens_total {float(chunks)}" in metrics
    assert "lucie_bot_queue_length 0.0" in metrics
    assert "lucie_bot_rate_limit_waits_total 0.0" in metrics

    llm.stop()
    # health checks are cached for ops.health_cache_s (5 s): the verdict follows within that
    failing = await eventually(lambda: _health(bot, 503), within=HEALTH_WITHIN_S)
    assert failing.json()["checks"]["model"] is False
    assert failing.json()["checks"]["database"] is True
    failed = await alice.send(room, "Encore ?")
    await eventually(lambda: _contains(bot, 'lucie_bot_model_errors_total{kind="unreachable"} 1.0'))
    assert answer_to(alice.events[room], bot.user_id, failed) is None
    llm.start()
    assert await eventually(lambda: _health(bot, 200), within=HEALTH_WITHIN_S)


HEALTH_WITHIN_S = 20


async def _health(bot: BotProcess, status: int) -> httpx.Response | None:
    answer = await get(f"{bot.ops_url}/healthz")
    return answer if answer.status_code == status else None


async def _contains(bot: BotProcess, needle: str) -> bool:
    return needle in (await get(f"{bot.ops_url}/metrics")).text


async def test_failover_between_two_model_servers(make_user, start_bot, llm):
    second = FakeLLM()
    second.start()
    try:
        bot = start_bot(
            llm_settings={"base_urls": [llm.base_url, second.base_url], "chunk_timeout_s": 1}
        )
        alice = await make_user("alice")
        room = await invite_bot(alice, bot, direct=True)

        llm.stop()  # one replica down: every question still gets its answer
        for n in range(3):
            asked = await alice.send(room, f"Question {n} ?")
            assert await alice.wait_for(room, lambda ev, q=asked: final_answer(ev, bot.user_id, q))
        assert len(second.requests) == 3
        health = (await get(f"{bot.ops_url}/healthz")).json()
        assert health["checks"]["model"] is True
        assert health["checks"]["model_servers"] == [False, True]  # in the configured order
        llm.start()

        # the server answering first goes silent midway: the answer restarts on the other one
        hang = Behaviour(hang_after=3, text=LONG, once=True)
        llm.when("HANG", hang)
        second.when("HANG", hang)
        second.default = llm.default = Behaviour(text=LONG)
        asked = await alice.send(room, "HANG ?")
        text = await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, asked), 60)
        assert text == LONG
        replies = [e for e in originals(alice.events[room], bot.user_id)
                   if e["content"]["msgtype"] == "m.text"]  # fmt: skip
        assert len(replies) == 4  # the broken answer was edited, never posted twice
        rows = await bot.query("SELECT status FROM answers ORDER BY id DESC LIMIT 1")
        assert rows[0]["status"] == "complete"
        assert "restarts on another model server" in bot.log()
    finally:
        second.close()


async def test_sigterm_finishes_answers_under_way_and_json_logs(make_user, start_bot, llm):
    bot = start_bot(log_format="json")
    alice = await make_user("alice")
    room = await invite_bot(alice, bot, direct=True)
    llm.default = Behaviour(token_delay=0.2, text=LONG)
    asked = await alice.send(room, "Une réponse lente")
    await alice.wait_for(room, lambda ev: answer_to(ev, bot.user_id, asked))
    code = await asyncio.to_thread(bot.stop)
    assert code == 0
    text = await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, asked))
    assert text == LONG  # finished during the grace period, not cut
    assert (await bot.query("SELECT status FROM answers"))[0]["status"] == "complete"
    lines = [line for line in bot.log().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {"time", "level", "logger", "message"} <= set(entries[0])
    assert any("waiting up to" in entry["message"] for entry in entries)
    assert "Une réponse lente" not in bot.log()


async def test_ctrl_c_stops_quietly(make_user, start_bot):
    """A person pressing Ctrl-C sees the bot stop, not warnings from its HTTP libraries."""
    bot = start_bot(log_level="INFO")
    alice = await make_user("alice")
    room = await invite_bot(alice, bot, direct=True)
    asked = await alice.send(room, "Bonjour ?")  # the model's connection is open too
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, asked))
    assert bot.process is not None
    bot.process.send_signal(signal.SIGINT)
    assert await asyncio.to_thread(bot.process.wait, 30) == 0
    after = bot.log()
    assert "lucie-bot stopped" in after
    for noise in ("Unclosed", "Traceback", "Timed out", "ERROR", "Task was destroyed"):
        assert noise not in after, after


def test_a_taken_ops_port_is_named_in_one_line(synapse, llm, tmp_path):
    account = synapse.new_user("lucie")
    bot = BotProcess(tmp_path, synapse, account, llm)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", bot.ops_port))
        taken.listen()
        result = subprocess.run(
            [sys.executable, "-m", "bot", "run", "--config", str(bot.config_path)],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"lucie-bot: cannot serve health and metrics on 127.0.0.1:{bot.ops_port}"
    )
    assert "set ops.port" in last and "Traceback" not in result.stderr


async def test_health_is_cheap_and_names_no_model_server(make_user, start_bot, llm):
    """Many hits cost one probe of each model server per period, and the answer never shows a
    server's address, which may hold credentials."""
    probes: list[str] = []

    async def models(request: web.Request) -> web.Response:
        probes.append(request.headers.get("Authorization", ""))
        return web.json_response({"data": [{"id": "stand-in"}]})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    secret_url = f"http://lucie:s3cret-key@127.0.0.1:{port}/v1"
    try:
        bot = start_bot(llm_settings={"base_urls": [llm.base_url, secret_url]})
        alice = await make_user("alice")
        await invite_bot(alice, bot, direct=True)  # running and synced
        async with httpx.AsyncClient(timeout=30) as http:
            before = len(probes)
            url = f"{bot.ops_url}/healthz"
            answers = await asyncio.gather(*(http.get(url) for _ in range(40)))
        assert {a.status_code for a in answers} == {200}
        assert len(probes) - before <= 2  # one probe, or two if a period ended meanwhile
        assert probes and probes[-1].startswith("Basic ")  # the credentials still work
        for answer in answers:
            assert answer.json()["checks"]["model_servers"] == [True, True]
            for leaked in ("s3cret", str(port), llm.base_url, "http"):
                assert leaked not in answer.text
    finally:
        await runner.cleanup()
