"""`!lucie stats` attaches its chart, end to end against Synapse: an m.image after the text whose
media is a PNG; in an encrypted room the event is encrypted and so is the file (AES-CTR, its key,
iv and hash in the event's `file`), the homeserver holding ciphertext only."""

from __future__ import annotations

import struct
import urllib.parse
from typing import Any

import httpx
from nio.crypto import decrypt_attachment

from tests.conftest import invite_bot
from tests.support.matrix_user import answer_to, eventually, final_answer, originals

PNG = b"\x89PNG\r\n\x1a\n"


async def voted(alice: Any, bot: Any, room: str) -> str:
    """One answer with a 👍 the bot has counted; the answer's id."""
    asked = await alice.send(room, "Lucie, une question ?", mentions=[bot.user_id])
    await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, asked), 60)
    answer = answer_to(alice.events[room], bot.user_id, asked)["event_id"]
    await alice.react(room, answer, "\U0001f44d")

    async def counted() -> bool:
        return bool(await bot.query("SELECT 1 FROM votes WHERE answer_event_id = ?", answer))

    assert await eventually(counted)
    return answer


async def voted_then_stats(alice: Any, bot: Any, room: str) -> tuple[str, list[dict[str, Any]]]:
    """One answer with a 👍, then `!lucie stats`; the command's id and the bot's messages after
    it, once the chart has arrived."""
    await voted(alice, bot, room)
    command = await alice.send(room, "!lucie stats")

    def after_command(events: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        ids = [e.get("event_id") for e in events]
        if command not in ids:
            return None
        later = originals(events[ids.index(command) :], bot.user_id)
        kinds = [e["content"].get("msgtype") for e in later]
        return later if "m.image" in kinds else None

    return command, await alice.wait_for(room, after_command, within=60)


def checked_png(data: bytes, info: dict[str, Any]) -> None:
    assert data.startswith(PNG)
    assert struct.unpack(">II", data[16:24]) == (info["w"], info["h"])  # IHDR width, height
    assert info["mimetype"] == "image/png" and info["size"] == len(data)


async def download(homeserver: str, token: str, mxc: str) -> httpx.Response:
    server, media = mxc.removeprefix("mxc://").split("/", 1)
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{homeserver}/_matrix/client/v1/media/download/{server}/{media}",
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 200, response.text
    return response


async def test_stats_in_a_plain_room_posts_the_chart_after_the_text(
    make_user, start_bot, llm, synapse
):
    bot = start_bot()
    alice = await make_user("alice")
    room = await invite_bot(alice, bot)
    command, said = await voted_then_stats(alice, bot, room)
    text, image = said[0]["content"], said[-1]["content"]
    assert text["msgtype"] == "m.notice" and "Statistiques" in text["body"]  # the text first
    assert image["msgtype"] == "m.image" and image["body"] == "approbation-par-version.png"
    assert image["m.relates_to"] == {"m.in_reply_to": {"event_id": command}}
    stored = await download(synapse.url, alice.client.access_token, image["url"])
    assert stored.headers["content-type"] == "image/png"
    checked_png(stored.content, image["info"])


async def test_stats_in_an_encrypted_room_sends_an_encrypted_chart(
    make_user, start_bot, llm, synapse
):
    bot = start_bot()
    alice = await make_user("alice", encryption=True)
    room = await invite_bot(alice, bot, encrypted=True)
    _, said = await voted_then_stats(alice, bot, room)
    event = said[-1]
    image = event["content"]
    assert image["msgtype"] == "m.image" and "url" not in image
    raw = synapse.request(
        "GET",
        f"/_matrix/client/v3/rooms/{urllib.parse.quote(room)}/event/"
        f"{urllib.parse.quote(event['event_id'])}",
        token=alice.client.access_token,
    )
    assert raw["type"] == "m.room.encrypted" and "file" not in raw["content"]
    secret = image["file"]
    assert secret["key"]["alg"] == "A256CTR" and secret["v"] == "v2"
    stored = await download(synapse.url, alice.client.access_token, secret["url"])
    # what the homeserver holds tells nothing: neither the type nor the picture
    assert stored.headers["content-type"] == "application/octet-stream"
    assert not stored.content.startswith(PNG)
    plain = decrypt_attachment(
        stored.content, secret["key"]["k"], secret["hashes"]["sha256"], secret["iv"]
    )
    checked_png(plain, image["info"])
    assert alice.undecrypted == 0
