"""The demo's room and what the terminal chat reads from it at start, on a real Synapse: the
room is encrypted (an older plain one is made so, once), and the chat takes the room's language
from the bot's latest confirmation in the room's history."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.parse
from typing import Any

import pytest

from bot.demo import run
from bot.demo.chat import Chat, ChatOptions, chat_client, sync_once
from bot.demo.chat_view import Transcript
from bot.texts import say

MEGOLM = {"algorithm": "m.megolm.v1.aes-sha2"}


def encryption(synapse: Any, room_id: str, token: str) -> dict[str, Any]:
    path = f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/state/m.room.encryption/"
    return synapse.request("GET", path, token=token)


def encryption_events(synapse: Any, room_id: str, token: str) -> int:
    query = urllib.parse.urlencode({"dir": "b", "limit": 100})
    path = f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/messages?{query}"
    events = synapse.request("GET", path, token=token)["chunk"]
    return sum(1 for event in events if event["type"] == "m.room.encryption")


async def test_the_demo_room_is_encrypted_and_an_older_plain_one_is_made_so_once(
    synapse, tmp_path, monkeypatch
):
    bot = synapse.new_user("lucie")
    monkeypatch.setattr(run, "BOT", bot.user_id.split(":")[0].removeprefix("@"))
    person = synapse.new_user("demo")
    state_path = tmp_path / "accounts.json"
    state: dict[str, Any] = {}
    room = await run._room(synapse, person, state, state_path)
    assert encryption(synapse, room, person.access_token) == MEGOLM
    assert json.loads(state_path.read_text()) == {"room_id": room, "encrypted": True}

    # what an older demo made: a DM in the clear, its state file without the mark
    plain = synapse.request(
        "POST",
        "/_matrix/client/v3/createRoom",
        {"invite": [bot.user_id], "is_direct": True, "preset": "trusted_private_chat"},
        person.access_token,
    )["room_id"]
    with pytest.raises(urllib.error.HTTPError) as missing:
        encryption(synapse, plain, person.access_token)
    assert missing.value.code == 404
    old = {"room_id": plain}
    assert await run._room(synapse, person, old, state_path) == plain
    assert encryption(synapse, plain, person.access_token) == MEGOLM
    assert old["encrypted"] is True
    # once: neither the mark nor its loss sends it again
    await run._room(synapse, person, old, state_path)
    await run._room(synapse, person, {"room_id": plain}, state_path)
    assert encryption_events(synapse, plain, person.access_token) == 1


async def test_the_chat_starts_in_the_language_the_bot_last_confirmed(synapse, make_user, tmp_path):
    bot = await make_user("lucie")
    person = synapse.new_user("demo", exempt=True)
    room = await bot.create_room([person.user_id])
    client = chat_client(synapse.url, person, tmp_path / "chat-store")
    try:
        await client.join(room)
        await sync_once(client, 0)

        async def started() -> str:
            transcript = Transcript(bot.user_id, io.StringIO(), terminal=False, lang="fr")
            chat = Chat(client, room, ChatOptions(bot.user_id), transcript)
            await chat.learn_language()
            return chat.lang

        assert await started() == "fr"  # nothing said yet: the configured default
        for lang in ("en", "fr", "en"):
            notice = {"msgtype": "m.notice", "body": say(lang, "cmd.lang.set")}
            await bot.send_raw(room, "m.room.message", notice)
        await bot.send(room, say("fr", "cmd.lang.set"))  # not a notice: not the bot's word
        assert await started() == "en"
    finally:
        await client.close()
