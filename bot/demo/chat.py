"""A terminal chat as the demo person: a real Matrix client, reading questions from stdin."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from nio import AsyncClient, AsyncClientConfig, SyncResponse

from bot.core.render import LIVE_MARKER
from bot.demo.homeserver import Account


class Transcript:
    """Prints each answer of the bot once, when its streaming has ended."""

    def __init__(self, bot_id: str) -> None:
        self.bot_id = bot_id
        self.printed: set[str] = set()

    def show(self, event: dict[str, Any]) -> None:
        content = event.get("content", {})
        if event.get("sender") != self.bot_id or not isinstance(content, dict):
            return
        relation = content.get("m.relates_to", {})
        if relation.get("rel_type") == "m.replace":
            target, content = relation.get("event_id"), content.get("m.new_content", {})
        else:
            target = event.get("event_id")
        if LIVE_MARKER in content or target in self.printed or "body" not in content:
            return
        self.printed.add(target)
        speaker = "Lucie (notice)" if content.get("msgtype") == "m.notice" else "Lucie"
        print(f"\n{speaker}: {content['body']}\n", flush=True)


async def terminal_chat(homeserver: str, person: Account, room_id: str, bot_id: str) -> None:
    client = AsyncClient(homeserver, person.user_id, config=AsyncClientConfig(max_timeouts=3))
    client.restore_login(person.user_id, person.device_id, person.access_token)
    transcript = Transcript(bot_id)
    try:
        await client.sync(timeout=0)  # start from now: earlier messages are not replayed
        follower = asyncio.create_task(_follow(client, room_id, transcript))
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        print("Écrivez votre question puis Entrée (Ctrl-C pour quitter).", flush=True)
        while line := (await reader.readline()).decode("utf-8", errors="replace"):
            if line.strip():
                await client.room_send(
                    room_id,
                    "m.room.message",
                    {"msgtype": "m.text", "body": line.strip(), "m.mentions": {}},
                )
        follower.cancel()
    finally:
        await client.close()


async def _follow(client: AsyncClient, room_id: str, transcript: Transcript) -> None:
    while True:
        response = await client.sync(timeout=10_000)
        if isinstance(response, SyncResponse) and room_id in response.rooms.join:
            for event in response.rooms.join[room_id].timeline.events:
                transcript.show(event.source)
