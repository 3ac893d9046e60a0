"""Ten thousand generated hostile events through a real Synapse: the bot never crashes, logs no
unhandled exception, sends only HTML that Matrix clients accept, and still answers afterwards."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
import uuid
from collections import Counter
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import invite_bot
from tests.support.fake_llm import Behaviour
from tests.support.fuzz import HOSTILE_OUTPUT, Fuzzer, html_problems
from tests.support.matrix_user import final_answer, notices

SEED = int(os.environ.get("LUCIE_FUZZ_SEED", "20261124"))
EVENTS = int(os.environ.get("LUCIE_FUZZ_EVENTS", "10000"))
SENDERS_AT_ONCE = 12


async def bot_messages(http: httpx.AsyncClient, room: str, bot_id: str) -> list[dict]:
    """Everything the bot sent in the room, read back from the server."""
    found, token = [], None
    room_filter = json.dumps({"senders": [bot_id], "types": ["m.room.message"]})
    while True:
        params = {"dir": "b", "limit": "1000", "filter": room_filter}
        if token:
            params["from"] = token
        page = (await http.get(f"/rooms/{quote(room)}/messages", params=params)).json()
        found += page["chunk"]
        token = page.get("end")
        if not page["chunk"] or not token:
            return found


@pytest.mark.slow
async def test_ten_thousand_hostile_events(make_user, start_bot, llm, synapse):
    # the backlog need not finish at the end; the flood is about parsing, not about fair use
    bot = start_bot(
        bot={"shutdown_grace_s": 2, "questions_per_person": 0},
        guard={"quotas": {"enabled": False}},
    )
    llm.when("HOSTILE_OUTPUT", Behaviour(text=HOSTILE_OUTPUT))
    people = [await make_user(name) for name in ("alice", "bob", "carol")]
    alice = people[0]
    room = await invite_bot(alice, bot)
    for person in people[1:]:
        await alice.client.room_invite(room, person.user_id)
        await person.join(room)
    elsewhere = await alice.create_room([])
    fuzzer = Fuzzer(SEED, bot.user_id, "Lucie")
    fuzzer.foreign_events = [await alice.send(elsewhere, "ailleurs") for _ in range(3)]
    fuzzer.known_events = [await alice.send(room, "premier message")]

    pick = random.Random(SEED)
    accepted, refused = 0, 0
    refusals: Counter[str] = Counter()
    base = f"{synapse.url}/_matrix/client/v3"

    async def sender(http: httpx.AsyncClient) -> None:
        nonlocal accepted, refused
        while accepted < EVENTS:
            event_type, content = fuzzer.event()
            token = pick.choice(people).client.access_token
            url = f"/rooms/{quote(room)}/send/{quote(event_type)}/{uuid.uuid4().hex}"
            if event_type == "m.room.redaction":  # redactions have their own endpoint
                target = quote(str(content.get("redacts")), safe="")
                url = f"/rooms/{quote(room)}/redact/{target}/{uuid.uuid4().hex}"
                content = {"reason": content.get("reason")}
            try:
                response = await http.put(
                    url, json=content, headers={"Authorization": f"Bearer {token}"}
                )
            except httpx.HTTPError:
                refused += 1
                continue
            if response.status_code == 200:
                accepted += 1
                fuzzer.known_events.append(response.json()["event_id"])
            else:
                refused += 1  # Synapse itself refused it (too large, malformed)
                refusals[f"{event_type} {response.status_code}"] += 1

    started = time.monotonic()
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        await asyncio.gather(*(sender(http) for _ in range(SENDERS_AT_ONCE)))
    sent_in = time.monotonic() - started
    assert accepted >= EVENTS, (accepted, refused)

    # afterwards, an ordinary question still gets its answer
    question = await alice.send(room, "Lucie, une question normale ?", mentions=[bot.user_id])
    text = await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, question), 300)
    assert text.endswith("une question normale ? »")
    assert bot.process.poll() is None, "the bot stopped"
    log = bot.log()
    assert "Traceback" not in log
    assert " ERROR " not in log

    async with httpx.AsyncClient(
        base_url=base, timeout=60, headers={"Authorization": f"Bearer {alice.client.access_token}"}
    ) as http:
        sent = await bot_messages(http, room, bot.user_id)
    checked, hostile = 0, 0
    for event in sent:
        content = event.get("content", {})
        for part in (content, content.get("m.new_content") or {}):
            html = part.get("formatted_body")
            if isinstance(html, str):
                checked += 1
                assert html_problems(html) == [], (html_problems(html), html[:500])
                hostile += "clic" in html and "cadre" in html
    answered = sum(1 for r in llm.requests if "HOSTILE_OUTPUT" in json.dumps(r["body"]))
    assert answered >= 20 and hostile >= 20, (answered, hostile)  # the hostile output got through
    assert checked >= 200
    assert len(notices(alice.events[room], bot.user_id)) >= 2
    print(f"fuzz: {accepted} events accepted, {refused} refused, sent in {sent_in:.0f} s, "
          f"{checked} HTML bodies checked, seed {SEED}; refusals: {dict(refusals)}")  # fmt: skip
