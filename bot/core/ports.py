"""What the conversation logic needs from a Matrix connection; bot.matrix provides it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bot.core.events import SharedFile, TextMessage


class RateLimited(Exception):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"rate limited for {retry_after_s:.1f} s")
        self.retry_after_s = retry_after_s


class SendFailed(Exception):
    """The homeserver refused or could not be reached; the caller decides whether to retry."""


class SendRefused(SendFailed):
    """The homeserver refused this event for good (a 4xx such as M_TOO_LARGE, M_FORBIDDEN or a
    relation to an event of another room): sending it again can only be refused again."""


class DownloadFailed(Exception):
    """A shared file could not be fetched: too_big, unavailable or corrupt (its hash or key
    does not match what the sender put in the event)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Image:
    """A picture the bot shows in a room (a PNG chart): its bytes and what clients need to lay
    it out before they have fetched it."""

    data: bytes
    name: str  # the message's body and file name, e.g. approbation-par-version.png
    width: int
    height: int
    mimetype: str = "image/png"


@dataclass(frozen=True)
class RoomAuthority:
    """Who rules a room: its power levels, and its creators where the room version makes them
    all-powerful (room version 12 and later, where creators are absent from power levels)."""

    power_levels: dict[str, Any]
    privileged_creators: frozenset[str] = frozenset()


class ChatPort(Protocol):
    user_id: str

    async def send(self, room_id: str, content: dict[str, Any], txn_id: str) -> str:
        """Send an m.room.message; return its event id. Raises RateLimited, SendRefused (never
        worth retrying) or SendFailed.

        Retries of one message reuse its txn_id, so the homeserver never stores it twice."""
        ...

    async def upload(self, room_id: str, image: Image) -> dict[str, Any]:
        """Put the image in the homeserver's media repository, encrypted (AES-CTR) when the room
        is; return how an event refers to it: {"url": mxc} or {"file": EncryptedFile}. Raises
        SendRefused (too large, forbidden) or SendFailed (timeout, unreachable, rate limited)."""
        ...

    async def typing(self, room_id: str, active: bool) -> None: ...

    async def room_authority(self, room_id: str) -> RoomAuthority | None:
        """Power levels read fresh from the homeserver (None if they cannot be read)."""
        ...

    async def fetch_message(self, room_id: str, event_id: str) -> TextMessage | None: ...

    async def fetch_file(self, room_id: str, event_id: str) -> SharedFile | None:
        """The m.file message with that id in that room (decrypted when it was encrypted)."""
        ...

    async def download(self, file: SharedFile, dest: Path, max_bytes: int) -> None:
        """Write the file's plain bytes to dest (decrypted and checked against the event's
        hash for encrypted attachments). Raises DownloadFailed."""
        ...

    def display_name(self, room_id: str, user_id: str) -> str | None: ...

    def is_dm(self, room_id: str) -> bool: ...


class RoomEvents(Protocol):
    """What the Matrix transport hands the core: room events to route, and the questions it
    asks about rooms (bot.core.relay.Relay is the one implementation)."""

    def accepts_invite(self, inviter: str) -> bool: ...

    async def joined(self, room_id: str) -> None: ...

    def introduce(self, room_id: str) -> None: ...

    async def awaits_key(self, room_id: str, sender: str, ts: int) -> bool: ...

    async def unreadable(self, room_id: str, event_id: str) -> None: ...

    async def resume(self, dm_rooms: set[str], rooms: set[str] | None = None) -> None: ...

    async def on_message(self, room_id: str, event: dict[str, Any], is_dm: bool) -> None: ...

    async def on_reaction(self, room_id: str, event: dict[str, Any]) -> None: ...

    async def on_redaction(self, room_id: str, event: dict[str, Any]) -> None: ...
