"""Sending a message, with the homeserver's answer sorted into what the relay acts on: sent,
rate limited (wait), refused for good (never retry) or failed (maybe retry)."""

from __future__ import annotations

from typing import Any

from nio import AsyncClient, RoomSendError, RoomSendResponse

from bot.core.ports import RateLimited, SendFailed, SendRefused


async def send_message(
    client: AsyncClient, room_id: str, content: dict[str, Any], txn_id: str
) -> str:
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
    status = getattr(getattr(response, "transport_response", None), "status", None)
    reason = f"{getattr(response, 'status_code', None)} {getattr(response, 'message', '')}"
    # nio's status_code is the errcode; the HTTP status tells a refusal (the same event
    # can only be refused again) from a passing failure. 401: the sync loop logs in again;
    # 408 and 429: the server asks for a later try.
    if isinstance(status, int) and 400 <= status < 500 and status not in (401, 408, 429):
        raise SendRefused(f"{reason} (HTTP {status})")
    raise SendFailed(f"{reason} (HTTP {status})" if status else reason)
