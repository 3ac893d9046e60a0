"""What the conversation logic needs from a Matrix connection; bot.matrix provides it."""

from __future__ import annotations

from typing import Any, Protocol

from bot.core.events import TextMessage


class RateLimited(Exception):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"rate limited for {retry_after_s:.1f} s")
        self.retry_after_s = retry_after_s


class SendFailed(Exception):
    """The homeserver refused or could not be reached; the caller decides whether to retry."""


class ChatPort(Protocol):
    user_id: str

    async def send(self, room_id: str, content: dict[str, Any]) -> str:
        """Send an m.room.message; return its event id. Raises RateLimited or SendFailed."""
        ...

    async def typing(self, room_id: str, active: bool) -> None: ...

    async def power_levels(self, room_id: str) -> dict[str, Any] | None:
        """The room's m.room.power_levels content read fresh from the homeserver."""
        ...

    async def fetch_message(self, room_id: str, event_id: str) -> TextMessage | None: ...

    def display_name(self, room_id: str, user_id: str) -> str | None: ...
