"""One in-memory ChatPort for unit tests: the Matrix side as the core sees it, recording what
the bot sends, and able to be slow, failing, refusing or rate-limited on demand."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bot.core.ports import RateLimited, RoomAuthority, SendFailed, SendRefused


class MemoryPort:
    user_id = "@bot:x"

    def __init__(self, send_delay: float = 0.001, dm: bool = True) -> None:
        self.send_delay = send_delay
        self.dm = dm
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.refused: list[dict[str, Any]] = []
        self.typing_calls: list[bool] = []
        self.failing: set[str] = set()  # rooms whose sends fail for now (a passing outage)
        self.refuse: Callable[[dict[str, Any]], bool] = lambda content: False
        self.rate_limited: int = 0  # the next sends answered with 429
        self.power_levels: dict[str, Any] | None = None
        self.names: dict[str, str] = {}

    async def send(self, room_id: str, content: dict[str, Any], txn_id: str) -> str:
        await asyncio.sleep(self.send_delay)
        if room_id in self.failing:
            raise SendFailed("homeserver unavailable")
        if self.rate_limited:
            self.rate_limited -= 1
            raise RateLimited(0.05)
        if self.refuse(content):
            self.refused.append(content)
            raise SendRefused("M_UNKNOWN: Relations must be in the same room (HTTP 400)")
        self.sent.append((room_id, content))
        return f"$answer{len(self.sent)}"

    async def typing(self, room_id: str, active: bool) -> None:
        self.typing_calls.append(active)

    async def room_authority(self, room_id: str) -> RoomAuthority | None:
        return RoomAuthority(self.power_levels) if self.power_levels is not None else None

    async def fetch_message(self, room_id: str, event_id: str) -> None:
        return None

    def display_name(self, room_id: str, user_id: str) -> str | None:
        return self.names.get(user_id)

    def is_dm(self, room_id: str) -> bool:
        return self.dm

    def bodies(self, room_id: str | None = None, msgtype: str | None = None) -> list[str]:
        """Bodies of the messages sent (edits excluded), in order."""
        return [
            content["body"]
            for room, content in self.sent
            if (room_id is None or room == room_id)
            and "m.new_content" not in content
            and (msgtype is None or content.get("msgtype") == msgtype)
        ]

    def texts(self, room_id: str) -> list[str]:
        """What a client shows in the room: the last text of each message."""
        shown: dict[str, str] = {}
        for index, (room, content) in enumerate(self.sent, start=1):
            if room != room_id:
                continue
            relation = content.get("m.relates_to") or {}
            if relation.get("rel_type") == "m.replace":
                shown[relation["event_id"]] = content["m.new_content"]["body"]
            else:
                shown[f"$answer{index}"] = content["body"]
        return list(shown.values())
