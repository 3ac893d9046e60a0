"""Encrypted messages the bot cannot read at first: history is left alone, late keys are waited
for (even across a restart), and a key that never comes gets one notice, never a departure."""

from __future__ import annotations

import asyncio
import json

import httpx
from nio import RoomKeyRequest

from tests.support.matrix_user import answer_to, eventually, final_answer, notices, originals

LOCK = "\U0001f512"  # 🔒


def device_of(bot) -> str:
    return json.loads((bot.data_dir / "credentials.json").read_text())["device_id"]


async def test_history_late_keys_restart_and_missing_key(make_user, start_bot, llm, synapse):
    bot = start_bot(matrix={"key_wait_s": 8})
    alice = await make_user("alice", encryption=True)

    # a message sent before the bot was in the room: it never had, nor will get, its key
    room = await alice.create_room([], encrypted=True)
    before = await alice.send(room, "Écrit avant l'arrivée du bot")
    await alice.client.room_invite(room, bot.user_id)
    await alice.wait_for(room, lambda events: notices(events, bot.user_id), within=60)
    after = await alice.send(room, "Écrit après son arrivée")
    assert await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, after), 60)
    assert answer_to(alice.events[room], bot.user_id, before) is None
    asked = [r["body"]["messages"][-1]["content"] for r in llm.requests]
    assert "Écrit avant l'arrivée du bot" not in asked
    assert await bot.query("SELECT * FROM undecrypted") == []
    assert f"room key of {before}" not in bot.log()  # seen, but neither kept nor asked for
    assert not any(LOCK in text for text in notices(alice.events[room], bot.user_id))

    # the key arrives late while the bot runs: it asked the sender quietly, then answers
    device = device_of(bot)
    session_id, session_key = await alice.new_session_without(room, bot.user_id, device)
    late = await alice.send(room, "Ma clé arrive en retard")

    async def key_requested() -> bool:
        await alice.sync(200)
        return any(
            isinstance(e, RoomKeyRequest) and e.session_id == session_id for e in alice.to_device
        )

    await eventually(key_requested, within=20)
    assert answer_to(alice.events[room], bot.user_id, late) is None
    await alice.send_room_key(room, session_id, session_key, bot.user_id, device)
    assert await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, late), 60)
    assert llm.requests[-1]["body"]["messages"][-1]["content"] == "Ma clé arrive en retard"

    # kept in the database, still encrypted: a restart before the key arrives loses nothing
    session_id, session_key = await alice.new_session_without(room, bot.user_id, device)
    across = await alice.send(room, "Clé livrée pendant le redémarrage")
    waiting = await eventually(lambda: bot.query("SELECT * FROM undecrypted"), within=20)
    assert [row["event_id"] for row in waiting] == [across]
    assert "Clé livrée" not in waiting[0]["source"]  # stored as received, encrypted
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{bot.ops_url}/metrics")).text
    assert "lucie_bot_messages_awaiting_keys 1.0" in metrics
    assert bot.stop() == 0
    await alice.send_room_key(room, session_id, session_key, bot.user_id, device)
    bot.start()
    assert await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, across), 60)

    # a key that never comes: one notice for the session, replying to its first message
    await alice.new_session_without(room, bot.user_id, device)
    lost = await alice.send(room, "Clé jamais envoyée")
    lost_too = await alice.send(room, "Même session, toujours sans clé")

    def lock_notices(events):
        return [
            e
            for e in originals(events, bot.user_id)
            if e["content"].get("msgtype") == "m.notice" and LOCK in e["content"]["body"]
        ]

    found = await alice.wait_for(room, lock_notices, within=40)
    assert found[0]["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == lost
    assert "Renvoyez-le" in found[0]["content"]["body"]  # French by default, says what to do
    await asyncio.sleep(4)  # more syncs: still a single notice
    await alice.sync(0)
    assert len(lock_notices(alice.events[room])) == 1
    for question in (lost, lost_too):
        assert answer_to(alice.events[room], bot.user_id, question) is None
    members = synapse.request(
        "GET", f"/_matrix/client/v3/rooms/{room}/joined_members", token=alice.client.access_token
    )["joined"]
    assert bot.user_id in members  # never leaves over a decryption error

    # once the sender shares keys with it again, the bot answers as before
    alice.share_with_all_again(room)
    back = await alice.send(room, "Et maintenant ?")
    assert await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, back), 60)
    assert "Traceback" not in bot.log()
