"""Encrypted rooms (every Tchap DM and private room) work like plain ones."""

from __future__ import annotations

import os
import stat

from tests.conftest import invite_bot
from tests.support.fake_llm import Behaviour
from tests.support.matrix_user import answer_to, edits_of, eventually, final_answer, notices


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


async def test_encrypted_group_room_keeps_streaming_votes_redactions_and_commands(
    make_user, start_bot, llm, synapse
):
    bot = start_bot()
    alice = await make_user("alice", encryption=True)
    bob = await make_user("bob", encryption=True)
    room = await invite_bot(alice, bot, encrypted=True)
    await alice.client.room_invite(room, bob.user_id)
    await bob.join(room)
    await bob.send(room, "Bonjour à tous")  # not for the bot: ignored in mention mode
    llm.default = Behaviour(token_delay=0.05, text=" ".join(f"mot{i}" for i in range(40)))

    asked = await alice.send(room, "Lucie, une longue réponse ?", mentions=[bot.user_id])
    text = await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, asked), 60)
    assert text == " ".join(f"mot{i}" for i in range(40))
    answer = answer_to(alice.events[room], bot.user_id, asked)["event_id"]
    assert len(edits_of(alice.events[room], answer)) >= 2  # streamed, every edit readable
    assert alice.undecrypted == 0
    asked_model = [r["body"]["messages"][-1]["content"] for r in llm.requests]
    assert len(asked_model) == 1 and asked_model[0].endswith("une longue réponse ?")

    plain = await alice.react(room, answer, "\U0001f44d")  # reactions as Element sends them
    sealed = await bob.react_encrypted(room, answer, "\U0001f44e")  # and as others may

    async def votes():
        rows = await bot.query("SELECT reaction_event_id, sender, vote, withdrawn_at FROM votes")
        return rows if len(rows) == 2 else None

    rows = {r["reaction_event_id"]: r for r in await eventually(votes)}
    assert (rows[plain]["vote"], rows[plain]["sender"]) == ("up", alice.user_id)
    assert (rows[sealed]["vote"], rows[sealed]["sender"]) == ("down", bob.user_id)
    await bob.redact(room, sealed)

    async def withdrawn():
        rows = await bot.query("SELECT withdrawn_at FROM votes WHERE reaction_event_id = ?", sealed)
        return rows[0]["withdrawn_at"]

    assert await eventually(withdrawn)

    command = await alice.send(room, "!lucie mode all")
    reply = await alice.wait_for(
        room,
        lambda ev: [n for n in notices(ev, bot.user_id) if n.startswith("Mode du salon")],
    )
    assert reply == ["Mode du salon : all."]
    assert (await bot.query("SELECT mode FROM rooms WHERE room_id = ?", room))[0]["mode"] == "all"
    unmentioned = await bob.send(room, "Et sans mention ?")
    assert await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, unmentioned), 60)
    raw = synapse.request(
        "GET",
        f"/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100",
        token=alice.client.access_token,
    )["chunk"]
    sent = {e["type"] for e in raw if e["sender"] == bot.user_id and "state_key" not in e}
    assert sent == {"m.room.encrypted"}, sent  # answers, edits and notices alike
    assert command and alice.undecrypted == 0
