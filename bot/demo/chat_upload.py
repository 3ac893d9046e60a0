"""`/upload PATH` in the terminal chat: a file shared as an m.file message, encrypted for an
encrypted room as the Matrix spec has it."""

from __future__ import annotations

import asyncio
import io
import mimetypes
import stat
from pathlib import Path
from typing import Any

from nio import AsyncClient, RoomSendResponse, UploadError, UploadResponse
from nio.crypto import encrypt_attachment

from bot.demo.chat_texts import hint

MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # the bot refuses smaller files already; this bounds memory
UPLOAD_TIMEOUT_S = 300


async def send_message(
    client: AsyncClient, room_id: str, content: dict[str, Any], lang: str = "fr"
) -> str:
    """Send (encrypted in an encrypted room, to every device of its members); "" or why not."""
    response = await client.room_send(
        room_id, "m.room.message", content, ignore_unverified_devices=True
    )
    if isinstance(response, RoomSendResponse):
        return ""
    return hint(lang, "message_refused", why=response)


async def upload_file(client: AsyncClient, room_id: str, path: Path, lang: str = "fr") -> str:
    """Upload to the homeserver (encrypted, as the Matrix spec has it, for an encrypted room)
    and share it as an m.file message; a line saying how it went."""
    try:
        path = await asyncio.to_thread(path.expanduser)
        status = await asyncio.to_thread(path.stat)
    except (OSError, RuntimeError) as exc:  # RuntimeError: an unknown ~user
        why = getattr(exc, "strerror", None) or exc
        return hint(lang, "upload_unreadable", path=path, why=why)
    size = status.st_size
    if not stat.S_ISREG(status.st_mode) or size > MAX_UPLOAD_BYTES:
        return hint(lang, "upload_not_file", path=path, mb=MAX_UPLOAD_BYTES // 2**20)
    room = client.rooms.get(room_id)
    encrypted = bool(room and room.encrypted)
    mimetype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    try:
        async with asyncio.timeout(UPLOAD_TIMEOUT_S):
            response, keys = await _upload(client, path, mimetype, size, encrypted)
    except (TimeoutError, OSError) as exc:
        return hint(lang, "upload_failed", name=path.name, why=type(exc).__name__)
    if not isinstance(response, UploadResponse):
        return hint(lang, "upload_refused", name=path.name, why=response)
    content = file_content(path.name, mimetype, size, response, keys)
    if refused := await send_message(client, room_id, content, lang):
        return refused
    secret = hint(lang, "upload_encrypted") if encrypted else ""
    return hint(lang, "upload_shared", name=path.name, size=size, encrypted=secret)


async def _upload(
    client: AsyncClient, path: Path, mimetype: str, size: int, encrypted: bool
) -> tuple[UploadResponse | UploadError, dict[str, Any] | None]:
    """A plain file is streamed from disk. An encrypted one is encrypted here (AES-CTR, its key,
    iv and SHA-256 returned) rather than by nio while it streams: nio learns the key only once
    its generator is read to the end, which the HTTP client does not always do."""
    if not encrypted:
        return await client.upload(
            lambda _limited, _timeouts: path,  # read lazily, off the event loop
            content_type=mimetype,
            filename=path.name,
            filesize=size,
        )
    data = await asyncio.to_thread(path.read_bytes)
    ciphertext, keys = await asyncio.to_thread(encrypt_attachment, data)
    response, _ = await client.upload(
        lambda _limited, _timeouts: io.BytesIO(ciphertext),
        content_type="application/octet-stream",  # the type is in the event, not in the clear
        filename=None,  # and so is the name, which often says what the file holds
        filesize=len(ciphertext),
    )
    return response, keys


def file_content(
    name: str, mimetype: str, size: int, upload: UploadResponse, keys: dict[str, Any] | None
) -> dict[str, Any]:
    """An m.file message: the plain mxc URL, or in an encrypted room the EncryptedFile (URL,
    key, iv, hashes) that lets members decrypt it."""
    content: dict[str, Any] = {
        "msgtype": "m.file",
        "body": name,
        "filename": name,
        "info": {"mimetype": mimetype, "size": size},
        "m.mentions": {},
    }
    if keys is None:
        content["url"] = upload.content_uri
    else:
        content["file"] = {**keys, "url": upload.content_uri}
    return content
