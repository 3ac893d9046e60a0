"""Encrypted rooms (every Tchap DM and private room) work like plain ones."""

from __future__ import annotations

import os
import stat

from tests.conftest import invite_bot
from tests.support.matrix_user import answer_to, final_answer


async def test_encrypted_dm_round_trip_and_device_reused_after_restart(
    make_user, start_bot, llm, synapse
):
    bot = start_bot()
    alice = await make_user("alice", encryption=True)
    room = await invite_bot(alice, bot, direct=True, encrypted=True)
    question = await alice.send(room, "Message chiffré : bonjour ?")
    text = await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, question), 60)
    assert text == "Réponse à « Message chiffré : bonjour ? »"
    assert llm.requests[-1]["body"]["messages"][-1]["content"] == "Message chiffré : bonjour ?"
    assert alice.undecrypted == 0  # every event of the bot was readable
    raw = synapse.request(
        "GET",
        f"/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50",
        token=alice.client.access_token,
    )["chunk"]
    from_bot = [e["type"] for e in raw if e["sender"] == bot.user_id and "state_key" not in e]
    assert from_bot and set(from_bot) == {"m.room.encrypted"}  # the server never saw plain text

    credentials = bot.data_dir / "credentials.json"
    assert stat.S_IMODE(os.stat(credentials).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(bot.data_dir / "crypto.key").st_mode) == 0o600
    device_before = credentials.read_text()
    bot.stop()
    bot.start()
    again = await alice.send(room, "Toujours là après redémarrage ?")
    assert await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, again), 60)
    assert credentials.read_text() == device_before  # same device, same token
    answer = answer_to(alice.events[room], bot.user_id, again)
    assert answer["content"]["m.mentions"] == {"user_ids": [alice.user_id]}
    assert "logged in as" in bot.log() and bot.log().count("logged in as") == 1
