"""Through a real Synapse: a model server that never answers or never stops holds no model slot
for long, an answer too large for one event is cut to fit, and an answer the homeserver refuses
for good ends at once and stays ended across a restart."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from nio import Api, RoomSendResponse

from tests.conftest import invite_bot
from tests.support.fake_llm import Behaviour
from tests.support.matrix_user import (
    MatrixUser,
    answer_to,
    edits_of,
    eventually,
    final_answer,
    notices,
    originals,
)

# one model slot, so that a slot never given back shows as questions no longer answered
ONE_SLOT = {
    "max_concurrent_requests": 1,
    "first_token_timeout_s": 2,
    "chunk_timeout_s": 2,
    "total_timeout_s": 30,
}
MAX_EVENT_BYTES = 65_536


def notice_with(bot_id: str, words: str, after: int):
    return lambda events: [n for n in notices(events, bot_id)[after:] if words in n]


@pytest.mark.parametrize(
    "behaviour",
    [
        Behaviour(hang_before_headers=True),
        Behaviour(stall_after_headers=True),
        Behaviour(stall_after_headers=True, status=503),
    ],
    ids=["no-headers", "headers-then-nothing", "error-body-never-comes"],
)
async def test_a_model_server_that_never_answers_gives_the_slot_back(
    make_user, start_bot, llm, behaviour
):
    bot = start_bot(llm_settings=ONE_SLOT)
    alice = await make_user("alice")
    hung_room = await invite_bot(alice, bot, direct=True)
    other_room = await invite_bot(alice, bot, direct=True)
    llm.when("BLOQUÉ", behaviour)
    seen = len(notices(alice.events[hung_room], bot.user_id))
    hung = await alice.send(hung_room, "BLOQUÉ ?")

    async def slot_taken() -> bool:
        return len(llm.requests) >= 1

    await eventually(slot_taken)
    asked = await alice.send(other_room, "Et ici, une réponse ?")
    text = await alice.wait_for(
        other_room, lambda ev: final_answer(ev, bot.user_id, asked), within=60
    )
    assert text == "Réponse à « Et ici, une réponse ? »"
    await alice.wait_for(hung_room, notice_with(bot.user_id, "trop de temps", seen), within=60)
    assert answer_to(alice.events[hung_room], bot.user_id, hung) is None
    rows = await bot.settled("SELECT question_event_id, status, error FROM answers")
    status = {r["question_event_id"]: (r["status"], r["error"]) for r in rows}
    assert status[hung][0] == "error" and status[hung][1].startswith("timeout")
    assert status[asked] == ("complete", None)

    async def connection_dropped() -> bool:
        return llm.open_streams == 0

    await eventually(connection_dropped)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
async def test_an_endless_answer_is_cut_to_one_event_and_the_slot_given_back(
    make_user, start_bot, llm, encrypted
):
    bot = start_bot(llm_settings=ONE_SLOT)
    alice = await make_user("alice", encryption=encrypted)
    room = await invite_bot(alice, bot, direct=True, encrypted=encrypted)
    llm.when("SANS FIN", Behaviour(flood=True))
    flooded = await alice.send(room, "Parle SANS FIN")
    text = await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, flooded), within=60)
    assert text.startswith("mot0 mot1 mot2") and text.endswith("_(réponse incomplète)_")
    assert len(text) > 5_000  # cut to fit, not to nothing
    answer = answer_to(alice.events[room], bot.user_id, flooded)
    last = (edits_of(alice.events[room], answer["event_id"]) or [answer])[-1]
    raw = await raw_event(alice, room, last["event_id"])  # as Synapse stored it
    assert len(json.dumps(raw, ensure_ascii=False).encode()) < MAX_EVENT_BYTES

    async def stream_closed() -> bool:
        return llm.disconnects >= 1 and llm.open_streams == 0

    await eventually(stream_closed)
    after = await alice.send(room, "Et une question courte ?")
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, after), within=60)
    rows = await bot.settled("SELECT question_event_id, status FROM answers")
    status = {r["question_event_id"]: r["status"] for r in rows}
    assert status == {flooded: "cut", after: "complete"}
    assert "M_TOO_LARGE" not in bot.log()


async def raw_event(user: MatrixUser, room_id: str, event_id: str) -> dict[str, Any]:
    response = await user.client.room_get_event(room_id, event_id)
    source = getattr(getattr(response, "event", None), "source", None)
    assert isinstance(source, dict), response
    return source


async def send_in_foreign_thread(user: MatrixUser, room_id: str, body: str, root: str) -> str:
    """A message in a thread whose root is in another room. Synapse refuses such a relation in
    the clear, so it goes inside the encrypted payload only, where no server can check it."""
    client, olm = user.client, user.client.olm
    assert olm is not None
    if not client.rooms[room_id].members_synced:
        await client.joined_members(room_id)
    session = olm.outbound_group_sessions.get(room_id)
    if session is None or not session.shared or session.expired:
        await client.share_group_session(room_id, ignore_unverified_devices=True)
    content = {
        "msgtype": "m.text",
        "body": body,
        "m.relates_to": {
            "rel_type": "m.thread",
            "event_id": root,
            "is_falling_back": True,
            "m.in_reply_to": {"event_id": root},
        },
    }
    encrypted = olm.group_encrypt(room_id, {"type": "m.room.message", "content": content})
    token = client.access_token
    txn = uuid.uuid4().hex
    method, path, data = Api.room_send(token, room_id, "m.room.encrypted", encrypted, txn)
    response = await client._send(RoomSendResponse, method, path, data, (room_id,))
    assert isinstance(response, RoomSendResponse), response
    return response.event_id


async def test_an_answer_refused_for_good_ends_at_once_and_is_never_sent_again(
    make_user, start_bot, llm
):
    bot = start_bot(llm_settings=ONE_SLOT)  # final_edit_timeout_s is 120 s in these tests
    alice = await make_user("alice", encryption=True)
    room = await invite_bot(alice, bot, direct=True, encrypted=True)
    elsewhere = await alice.create_room([])
    root = await alice.send(elsewhere, "Un message d'un autre salon")
    seen = len(notices(alice.events[room], bot.user_id))
    asked = await send_in_foreign_thread(alice, room, "Une question dans ce fil ?", root)
    await alice.wait_for(room, notice_with(bot.user_id, "a refusé ma réponse", seen), within=40)
    rows = await bot.settled("SELECT question_event_id, status, error FROM answers", within=40)
    assert rows[0]["question_event_id"] == asked
    assert rows[0]["status"] == "error" and rows[0]["error"].startswith("refused")
    assert "Relations must be in the same room" in bot.log()

    fine = await alice.send(room, "Et ici ?")  # the slot is free: the bot answers the next
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, fine), within=40)
    requests = len(llm.requests)
    assert bot.stop() == 0
    bot.start()
    later = await alice.send(room, "Toujours là ?")
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, later), within=60)
    await asyncio.sleep(2)
    await alice.sync()
    assert len(llm.requests) == requests + 1  # the refused answer was not generated again
    from_bot = originals(alice.events[room], bot.user_id)
    assert len(notices(alice.events[room], bot.user_id)) == seen + 1  # no second notice
    assert answer_to(alice.events[room], bot.user_id, asked) is None
    assert len([e for e in from_bot if e["content"].get("msgtype") == "m.text"]) == 2
