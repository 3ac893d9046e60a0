"""Edits (`m.replace`) of people's messages: an edited question keeps its new text for exports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.core.events import MAX_BODY_CHARS


@dataclass(frozen=True)
class Edit:
    room_id: str
    sender: str
    target: str  # the edited message, in the same room
    body: str


def parse_edit(room_id: str, event: dict[str, Any]) -> Edit | None:
    if event.get("type") != "m.room.message":
        return None
    content = event.get("content")
    if not isinstance(content, dict):
        return None
    relates, new = content.get("m.relates_to"), content.get("m.new_content")
    if not (isinstance(relates, dict) and isinstance(new, dict)):
        return None
    target, sender, body = relates.get("event_id"), event.get("sender"), new.get("body")
    if relates.get("rel_type") != "m.replace":
        return None
    if not (isinstance(target, str) and isinstance(sender, str) and isinstance(body, str)):
        return None
    if not (target and sender and body.strip()):
        return None
    return Edit(room_id, sender, target, body[:MAX_BODY_CHARS])
