"""Matrix events as plain data, parsed defensively: hostile events yield None, not errors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Literal tags only: a search for a fixed string is linear, where "<mx-reply>.*?</mx-reply>"
# rescans to the end from every unclosed tag (seconds of CPU for one 65 kB event).
_MX_REPLY_OPEN = re.compile(re.escape("<mx-reply>"), re.IGNORECASE)
_MX_REPLY_CLOSE = re.compile(re.escape("</mx-reply>"), re.IGNORECASE)
MAX_BODY_CHARS = 20_000
# No homeserver sends a larger event, so honest bodies are never cut by this; anything else is
# cut before any scan, whatever produced it.
MAX_INPUT_CHARS = 65_536


@dataclass(frozen=True)
class TextMessage:
    room_id: str
    event_id: str
    sender: str
    ts: int
    msgtype: str
    body: str  # reply fallback removed
    formatted_body: str | None  # reply fallback removed
    reply_to: str | None
    thread_root: str | None
    mentioned_user_ids: tuple[str, ...] | None  # None: the sender's client sent no m.mentions
    is_edit: bool


@dataclass(frozen=True)
class Reaction:
    room_id: str
    event_id: str
    sender: str
    ts: int
    target: str
    key: str


@dataclass(frozen=True)
class Redaction:
    room_id: str
    event_id: str
    sender: str
    redacts: str


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def strip_reply_fallback(body: str) -> str:
    """Remove the '> ' quote lines old clients put before a reply's own text."""
    lines = body.split("\n")
    if not lines or not lines[0].startswith(">"):
        return body
    index = 0
    while index < len(lines) and lines[index].startswith(">"):
        index += 1
    if index < len(lines) and lines[index] == "":
        index += 1
    return "\n".join(lines[index:])


def strip_mx_reply(html: str) -> str:
    """Remove each <mx-reply>…</mx-reply> (the fallback a reply quotes), nearest close first,
    in one pass; an opening tag never closed, and what follows it, are left as they are."""
    kept: list[str] = []
    position = 0
    while True:
        opening = _MX_REPLY_OPEN.search(html, position)
        if opening is None:
            break
        closing = _MX_REPLY_CLOSE.search(html, opening.end())
        if closing is None:
            break  # no later opening can close either: stop instead of rescanning
        kept.append(html[position : opening.start()])
        position = closing.end()
    kept.append(html[position:])
    return "".join(kept)


def parse_message(room_id: str, event: dict[str, Any]) -> TextMessage | None:
    if event.get("type") != "m.room.message":
        return None
    content = _dict(event.get("content"))
    event_id, sender = _str(event.get("event_id")), _str(event.get("sender"))
    ts = event.get("origin_server_ts")
    body, msgtype = content.get("body"), _str(content.get("msgtype"))
    if not (event_id and sender and isinstance(ts, int) and isinstance(body, str) and msgtype):
        return None
    body = body[:MAX_INPUT_CHARS]
    relates = _dict(content.get("m.relates_to"))
    reply_to = _str(_dict(relates.get("m.in_reply_to")).get("event_id"))
    thread_root = None
    if relates.get("rel_type") == "m.thread":
        thread_root = _str(relates.get("event_id"))
        if relates.get("is_falling_back") is True:
            # a plain thread message: the in-reply-to is only there for clients without threads
            reply_to = None
    formatted = content.get("formatted_body")
    formatted = formatted[:MAX_INPUT_CHARS] if isinstance(formatted, str) else None
    if reply_to or thread_root:
        body = strip_reply_fallback(body)
        if formatted:
            formatted = strip_mx_reply(formatted)
    mentions = content.get("m.mentions")
    mentioned: tuple[str, ...] | None = None
    if isinstance(mentions, dict):
        ids = mentions.get("user_ids")
        mentioned = tuple(u for u in ids if isinstance(u, str)) if isinstance(ids, list) else ()
    return TextMessage(
        room_id=room_id,
        event_id=event_id,
        sender=sender,
        ts=ts,
        msgtype=msgtype,
        body=body[:MAX_BODY_CHARS],
        formatted_body=formatted[:MAX_BODY_CHARS] if formatted else None,
        reply_to=reply_to,
        thread_root=thread_root,
        mentioned_user_ids=mentioned,
        is_edit=relates.get("rel_type") == "m.replace" or "m.new_content" in content,
    )


def parse_reaction(room_id: str, event: dict[str, Any]) -> Reaction | None:
    if event.get("type") != "m.reaction":
        return None
    relates = _dict(_dict(event.get("content")).get("m.relates_to"))
    event_id, sender = _str(event.get("event_id")), _str(event.get("sender"))
    target, key = _str(relates.get("event_id")), _str(relates.get("key"))
    ts = event.get("origin_server_ts")
    if relates.get("rel_type") != "m.annotation" or not (event_id and sender and target and key):
        return None
    if not isinstance(ts, int):
        return None
    return Reaction(room_id, event_id, sender, ts, target, key[:64])


def parse_redaction(room_id: str, event: dict[str, Any]) -> Redaction | None:
    if event.get("type") != "m.room.redaction":
        return None
    # room v11 moved "redacts" into the content
    redacts = _str(event.get("redacts")) or _str(_dict(event.get("content")).get("redacts"))
    event_id, sender = _str(event.get("event_id")), _str(event.get("sender"))
    if not (redacts and event_id and sender):
        return None
    return Redaction(room_id, event_id, sender, redacts)


@dataclass(frozen=True)
class SharedFile:
    """A file shared by an m.file message: where to fetch it and, in encrypted rooms, the key
    the sender put in the event (the homeserver only ever holds the ciphertext)."""

    room_id: str
    event_id: str
    sender: str
    ts: int
    name: str
    mimetype: str | None
    size: int | None  # as the sender claims it; downloads are capped whatever it says
    url: str  # mxc://server/media-id
    encryption: dict[str, Any] | None  # the event's "file" object, for encrypted attachments
    thread_root: str | None


MAX_FILE_NAME = 200


def _file_name(content: dict[str, Any]) -> str:
    name = _str(content.get("filename")) or _str(content.get("body")) or "document"
    # a name is shown in notices and sources: no paths, no line breaks, no markup tricks
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch not in "<>`*_[]|")
    return name.strip()[:MAX_FILE_NAME] or "document"


def parse_file(room_id: str, event: dict[str, Any]) -> SharedFile | None:
    """An m.file message, or None for anything else or anything malformed."""
    if event.get("type") != "m.room.message":
        return None
    content = _dict(event.get("content"))
    if content.get("msgtype") != "m.file" or "m.new_content" in content:
        return None
    event_id, sender = _str(event.get("event_id")), _str(event.get("sender"))
    ts = event.get("origin_server_ts")
    if not (event_id and sender and isinstance(ts, int)):
        return None
    encryption = content.get("file")
    if isinstance(encryption, dict):
        url = _str(encryption.get("url"))
    else:
        encryption, url = None, _str(content.get("url"))
    if url is None or not url.startswith("mxc://"):
        return None
    info = _dict(content.get("info"))
    size = info.get("size")
    relates = _dict(content.get("m.relates_to"))
    thread_root = _str(relates.get("event_id")) if relates.get("rel_type") == "m.thread" else None
    return SharedFile(
        room_id=room_id,
        event_id=event_id,
        sender=sender,
        ts=ts,
        name=_file_name(content),
        mimetype=_str(info.get("mimetype")),
        size=size if isinstance(size, int) and size >= 0 else None,
        url=url,
        encryption=encryption,
        thread_root=thread_root,
    )
