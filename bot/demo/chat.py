"""A terminal chat as the demo person: a real Matrix client, reading questions from stdin, and
sharing files with `/upload PATH`."""

from __future__ import annotations

import asyncio
import io
import mimetypes
import stat
import sys
from pathlib import Path
from typing import Any

from nio import (
    AsyncClient,
    AsyncClientConfig,
    RoomSendResponse,
    SyncResponse,
    UploadError,
    UploadResponse,
)
from nio.crypto import ENCRYPTION_ENABLED, encrypt_attachment

from bot.core.render import LIVE_MARKER
from bot.demo.homeserver import Account
from bot.matrix.nio_client import exchange_keys

MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # the bot refuses smaller files already; this bounds memory
UPLOAD_TIMEOUT_S = 300
HELP = """Commandes :
  /upload CHEMIN   partager un fichier (PDF, DOCX, ODT, HTML, Markdown, texte) : en message
                   direct, Lucie le lit et s'en sert pour répondre ; `!lucie sources` montre
                   les passages utilisés
  /help            cette aide
Tout autre texte est envoyé à Lucie (Ctrl-C pour quitter)."""


class Transcript:
    """Prints each answer of the bot once, when its streaming has ended."""

    def __init__(self, bot_id: str) -> None:
        self.bot_id = bot_id
        self.printed: set[str] = set()

    def show(self, event: dict[str, Any]) -> None:
        content = event.get("content", {})
        if event.get("sender") != self.bot_id or not isinstance(content, dict):
            return
        relation = content.get("m.relates_to", {})
        if relation.get("rel_type") == "m.replace":
            target, content = relation.get("event_id"), content.get("m.new_content", {})
        else:
            target = event.get("event_id")
        if LIVE_MARKER in content or target in self.printed or "body" not in content:
            return
        self.printed.add(target)
        speaker = "Lucie (notice)" if content.get("msgtype") == "m.notice" else "Lucie"
        print(f"\n{speaker}: {content['body']}\n", flush=True)


def chat_client(homeserver: str, person: Account, store: Path) -> AsyncClient:
    """The person's client; with end-to-end encryption (its keys kept in `store`) when olm is
    installed, so that it can also talk in a room someone turned encryption on for."""
    store.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = AsyncClientConfig(
        max_timeouts=3, encryption_enabled=ENCRYPTION_ENABLED, store_sync_tokens=False
    )
    client = AsyncClient(
        homeserver, person.user_id, device_id=person.device_id, store_path=str(store), config=config
    )
    client.restore_login(person.user_id, person.device_id, person.access_token)
    return client


async def sync_once(client: AsyncClient, timeout_ms: int) -> SyncResponse | None:
    """One sync, then the key exchanges encryption needs (new devices, one-time keys)."""
    response = await client.sync(timeout=timeout_ms)
    if client.olm:
        await exchange_keys(client)
    return response if isinstance(response, SyncResponse) else None


async def terminal_chat(
    homeserver: str, person: Account, room_id: str, bot_id: str, store: Path
) -> None:
    client = chat_client(homeserver, person, store)
    transcript = Transcript(bot_id)
    try:
        await sync_once(client, 0)  # start from now: earlier messages are not replayed
        follower = asyncio.create_task(_follow(client, room_id, transcript))
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        print("Écrivez votre question puis Entrée (/help pour l'aide, Ctrl-C pour quitter).")
        while line := (await reader.readline()).decode("utf-8", errors="replace"):
            if reply := await handle_line(client, room_id, line.strip()):
                print(reply, flush=True)
        follower.cancel()
    finally:
        await client.close()


async def handle_line(client: AsyncClient, room_id: str, line: str) -> str:
    """Send a question, or run a /command; what to print, if anything."""
    if not line:
        return ""
    if line == "/help":
        return HELP
    if line == "/upload" or line.startswith("/upload "):
        target = line.removeprefix("/upload").strip().strip("'\"")
        if not target:
            return "Indiquez le fichier : /upload CHEMIN"
        return await upload_file(client, room_id, Path(target))
    if line.startswith("/") and not line.startswith("//"):
        return f"Commande inconnue : {line.split()[0]}\n{HELP}"
    body = line[1:] if line.startswith("//") else line  # "//x" sends "/x"
    return await _send(client, room_id, {"msgtype": "m.text", "body": body, "m.mentions": {}})


async def _send(client: AsyncClient, room_id: str, content: dict[str, Any]) -> str:
    """Send (encrypted in an encrypted room, to every device of its members); "" or why not."""
    response = await client.room_send(
        room_id, "m.room.message", content, ignore_unverified_devices=True
    )
    return "" if isinstance(response, RoomSendResponse) else f"Message refusé : {response}"


async def upload_file(client: AsyncClient, room_id: str, path: Path) -> str:
    """Upload to the homeserver (encrypted, as the Matrix spec has it, for an encrypted room)
    and share it as an m.file message; a line saying how it went."""
    try:
        path = await asyncio.to_thread(path.expanduser)
        status = await asyncio.to_thread(path.stat)
    except (OSError, RuntimeError) as exc:  # RuntimeError: an unknown ~user
        return f"Impossible de lire {path} : {getattr(exc, 'strerror', None) or exc}"
    size = status.st_size
    if not stat.S_ISREG(status.st_mode) or size > MAX_UPLOAD_BYTES:
        return f"{path} n'est pas un fichier de moins de {MAX_UPLOAD_BYTES // 2**20} Mo"
    room = client.rooms.get(room_id)
    encrypted = bool(room and room.encrypted)
    mimetype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    try:
        async with asyncio.timeout(UPLOAD_TIMEOUT_S):
            response, keys = await _upload(client, path, mimetype, size, encrypted)
    except (TimeoutError, OSError) as exc:
        return f"Envoi de {path.name} impossible : {type(exc).__name__}"
    if not isinstance(response, UploadResponse):
        return f"Envoi de {path.name} refusé par le serveur : {response}"
    content = file_content(path.name, mimetype, size, response, keys)
    if refused := await _send(client, room_id, content):
        return refused
    return f"{path.name} partagé ({size} octets{', chiffré' if encrypted else ''})."


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
        filename=path.name,
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


async def _follow(client: AsyncClient, room_id: str, transcript: Transcript) -> None:
    while True:
        response = await sync_once(client, 10_000)
        if response is not None and room_id in response.rooms.join:
            for event in response.rooms.join[room_id].timeline.events:
                transcript.show(event.source)
