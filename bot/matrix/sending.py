"""Sending a message, with the homeserver's answer sorted into what the relay acts on: sent,
rate limited (wait), refused for good (never retry) or failed (maybe retry). And uploading an
image the bot shows, encrypted for encrypted rooms."""

from __future__ import annotations

import asyncio
import io
from typing import Any

from nio import AsyncClient, RoomSendError, RoomSendResponse, UploadResponse
from nio.crypto import encrypt_attachment

from bot.core.ports import Image, RateLimited, SendFailed, SendRefused

# nio's upload ignores the client's request timeout: a homeserver that stalls must not hold the
# command's task for ever
UPLOAD_TIMEOUT_S = 60


async def send_message(
    client: AsyncClient, room_id: str, content: dict[str, Any], txn_id: str
) -> str:
    if "url" in content and _encrypted(client, room_id) is not False:
        # a file uploaded in the clear (the room was not encrypted then), and the room has
        # turned encryption on since, or is no longer known: naming that file in an event
        # the members believe private would be a lie about where its bytes are
        raise SendRefused("a file uploaded unencrypted, for a room now encrypted or unknown")
    try:
        response = await client.room_send(
            room_id, "m.room.message", content, tx_id=txn_id, ignore_unverified_devices=True
        )
    except Exception as exc:
        raise SendFailed(f"{type(exc).__name__}: {exc}") from None
    if isinstance(response, RoomSendResponse):
        return response.event_id
    if isinstance(response, RoomSendError) and response.status_code == "M_LIMIT_EXCEEDED":
        raise RateLimited((response.retry_after_ms or 5000) / 1000)
    raise _failure(response)


def _failure(response: Any) -> SendFailed:
    status = getattr(getattr(response, "transport_response", None), "status", None)
    reason = f"{getattr(response, 'status_code', None)} {getattr(response, 'message', '')}"
    # nio's status_code is the errcode; the HTTP status tells a refusal (the same event
    # can only be refused again) from a passing failure. 401: the sync loop logs in again;
    # 408 and 429: the server asks for a later try.
    if isinstance(status, int) and 400 <= status < 500 and status not in (401, 408, 429):
        return SendRefused(f"{reason} (HTTP {status})")
    return SendFailed(f"{reason} (HTTP {status})" if status else reason)


async def upload_image(client: AsyncClient, room_id: str, image: Image) -> dict[str, Any]:
    """The image in the media repository; how an event in that room names it ({"url"} or
    {"file"}).

    In an encrypted room the bytes are encrypted here (AES-CTR, a fresh key and iv, the
    ciphertext's SHA-256: nio's encrypt_attachment) and sent as application/octet-stream, so
    that the homeserver learns neither the content nor its type; the key travels only inside
    the encrypted event. A refusal or a rate limit is not retried: the picture is a bonus."""
    # the same test nio's room_send makes before it encrypts the event that will name the file
    encrypted = _encrypted(client, room_id)
    if encrypted is None:
        # whether to encrypt cannot be told, and the event could not be sent anyway: the
        # bytes stay here rather than go to the homeserver in the clear
        raise SendRefused(f"upload: room {room_id} is not known to the client")
    data, keys = image.data, None
    if encrypted:
        data, keys = await asyncio.to_thread(encrypt_attachment, image.data)
    try:
        async with asyncio.timeout(UPLOAD_TIMEOUT_S):
            response, _ = await client.upload(
                lambda _limited, _timeouts: io.BytesIO(data),
                content_type="application/octet-stream" if encrypted else image.mimetype,
                filename=None if encrypted else image.name,  # a name says what it is
                filesize=len(data),
            )
    except Exception as exc:  # timeouts, connection errors
        raise SendFailed(f"upload: {type(exc).__name__}") from None
    if not isinstance(response, UploadResponse):
        raise _failure(response)
    if keys is None:
        return {"url": response.content_uri}
    return {"file": {**keys, "url": response.content_uri}}


def _encrypted(client: AsyncClient, room_id: str) -> bool | None:
    """Whether nio will encrypt what is sent to the room; None for a room it does not know."""
    room = client.rooms.get(room_id)
    return None if room is None else bool(room.encrypted)
