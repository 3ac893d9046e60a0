"""What a receiver gets: one JSON object per feedback event, with pseudonyms of the webhook's own
(stable, but not those of exports: a receiver cannot match a person it sees react at a given
minute to their rows in a published dataset), signed with the webhook's secret over the
timestamp and the exact bytes sent."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bot.core.feedback_events import FeedbackEvent
from bot.export.privacy import Pseudonyms, scrub
from bot.guard.pii import mask_personal_data

PAYLOAD_VERSION = 1
SIGNATURE_HEADER = "X-Lucie-Signature"
TIMESTAMP_HEADER = "X-Lucie-Timestamp"
# the webhook's pseudonyms are keyed by HMAC(data.pseudonym_secret, this): a new secret would
# need one more setting to keep, this needs none, and neither key gives the other
WEBHOOK_KEY_LABEL = b"lucie-bot webhook pseudonyms v1"


def webhook_pseudonyms(pseudonym_secret: str) -> Pseudonyms:
    key = hmac.digest(pseudonym_secret.encode("utf-8"), WEBHOOK_KEY_LABEL, "sha256")
    return Pseudonyms(key.hex())


def masked(text: str, names: Callable[[str], str]) -> str:
    """As exports mask a text (bot.export.formats.RowMaker), with scrubbing always on: the
    identifiers a text was stored with (masked again: it may have been stored while
    guard.mask_personal_data was off), then people's names, then e-mails, phones, Matrix ids
    and URLs."""
    return scrub(names(mask_personal_data(text).text))


def payload(
    event: FeedbackEvent,
    ids: Pseudonyms,
    include_text: bool,
    names: Callable[[str], str] = lambda text: text,
) -> dict[str, Any]:
    text = None
    if event.text is not None and include_text:
        text = masked(event.text, names)
    forgotten = event.kind == "person_forgotten"  # about a person only: no room, no answer
    source = event.sender if forgotten else f"{event.room_id}\x00{event.source_event_id}"
    minute = event.ts // 60_000 * 60  # to the minute: the second would single a reaction out
    return {
        # the same feedback always has the same id: a receiver drops a second delivery by it
        "id": ids.of("event", f"{event.kind}\x00{source}"),
        "version": PAYLOAD_VERSION,
        "kind": event.kind,
        "value": event.value,
        "emoji": event.emoji,
        "text": text,
        "person": ids.of("user", event.sender),
        "room": None if forgotten else ids.of("room", event.room_id),
        "answer": None if forgotten else ids.of("msg", event.answer_event_id),
        "model": event.model,
        "prompt_version": event.prompt_version,
        "created_at": datetime.fromtimestamp(minute, UTC).isoformat(timespec="seconds"),
    }


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """sha256=<hex HMAC-SHA256 of "timestamp.body">: the timestamp is signed too, so that a
    receiver refusing old timestamps refuses replays."""
    digest = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def signed_headers(secret: bytes, timestamp: str, body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "lucie-bot",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }
