"""Who may invite the bot, who counts as a room admin, and what a vote key means."""

from __future__ import annotations

import logging
from fnmatch import fnmatchcase
from typing import Any, Protocol

from bot.core.events import Redaction
from bot.core.ports import RoomAuthority

log = logging.getLogger(__name__)

_VARIATION_SELECTORS = {"\ufe0e", "\ufe0f"}
_SKIN_TONES = {chr(code) for code in range(0x1F3FB, 0x1F400)}
# the emoji, and the shortcodes some clients and bridges send as the key
VOTE_KEYS = {
    "\U0001f44d": "up",
    "\U0001f44e": "down",
    "+1": "up",
    "-1": "down",
    ":+1:": "up",
    ":-1:": "down",
    ":thumbsup:": "up",
    ":thumbsdown:": "down",
    ":thumbs_up:": "up",
    ":thumbs_down:": "down",
}


def inviter_allowed(user_id: str, patterns: list[str], operators: list[str]) -> bool:
    """Patterns starting with @ match whole user ids; others match the user's server."""
    if user_id in operators:
        return True
    server = user_id.split(":", 1)[1] if ":" in user_id else ""
    for pattern in patterns:
        target = user_id if pattern.startswith("@") else server
        if fnmatchcase(target, pattern):
            return True
    return False


def _level(value: Any, default: int) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)  # old rooms may carry levels as strings
    return default


def may_change_power_levels(levels: dict[str, Any], user_id: str) -> bool:
    """A room admin: allowed to send m.room.power_levels (Tchap admin 100, Twake Chat admin 80)."""
    users, events = levels.get("users"), levels.get("events")
    users = users if isinstance(users, dict) else {}
    events = events if isinstance(events, dict) else {}
    user_level = _level(users.get(user_id), _level(levels.get("users_default"), 0))
    state_default = _level(levels.get("state_default"), 50)
    needed = _level(events.get("m.room.power_levels"), state_default)
    return user_level >= needed


def may_redact_others(authority: RoomAuthority, user_id: str) -> bool:
    """A moderator: allowed to redact other people's events (the `redact` level, 50 by
    default), or a privileged creator."""
    if user_id in authority.privileged_creators:
        return True
    levels = authority.power_levels
    users = levels.get("users")
    users = users if isinstance(users, dict) else {}
    user_level = _level(users.get(user_id), _level(levels.get("users_default"), 0))
    return user_level >= _level(levels.get("redact"), 50)


def server_of(user_id: str) -> str:
    return user_id.split(":", 1)[1] if ":" in user_id else ""


def is_room_admin(authority: RoomAuthority, user_id: str) -> bool:
    if user_id in authority.privileged_creators:
        return True
    return may_change_power_levels(authority.power_levels, user_id)


def creators_are_privileged(room_version: str) -> bool:
    """Room versions with MSC4289 creator power: 12 onwards."""
    return room_version == "org.matrix.hydra.11" or (
        room_version.isdigit() and int(room_version) >= 12
    )


def bare_emoji(key: str) -> str:
    """Clients differ in variation selectors and skin tones: 👍️, 👍🏽 and 👍 are one key."""
    return "".join(
        ch for ch in key if ch not in _VARIATION_SELECTORS and ch not in _SKIN_TONES
    ).strip()


def normalise_vote(key: str) -> str | None:
    """'up', 'down' or None."""
    return VOTE_KEYS.get(bare_emoji(key).lower())


class Authority(Protocol):
    async def room_authority(self, room_id: str) -> RoomAuthority | None: ...


async def redaction_honoured(
    redaction: Redaction, author: str | None, authority: Authority
) -> bool:
    """Whether the homeserver would apply this redaction: by the event's own sender, their
    server, or a moderator. Another server's member may send any redaction; Synapse passes it
    on without applying it, and so must the bot, or anyone could withdraw other people's votes,
    consent and documents."""
    if author is None:
        return False  # nothing of it is kept
    if author == redaction.sender or server_of(author) == server_of(redaction.sender):
        return True
    rules = await authority.room_authority(redaction.room_id)
    allowed = rules is not None and may_redact_others(rules, redaction.sender)
    if not allowed:
        log.info("ignored a redaction in %s by someone who may not redact it", redaction.room_id)
    return allowed
