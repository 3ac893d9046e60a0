"""Shared files, fetched from the homeserver's media repository to a local file: streamed to
disk under a size cap, and for encrypted rooms decrypted with the key the sender put in the
event, after checking the ciphertext against the hash the event names."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from Crypto.Cipher import AES

from bot.core.events import SharedFile
from bot.core.ports import DownloadFailed
from bot.tls import tls_context

if TYPE_CHECKING:
    import httpx

# mxc://<server name>/<media id>: the media id is opaque but made of these characters, which is
# also what keeps a hostile URL from walking the homeserver's paths
MXC = re.compile(r"^mxc://([A-Za-z0-9.\-:\[\]]{1,255})/([A-Za-z0-9_\-]{1,255})$")
AUTHENTICATED = "/_matrix/client/v1/media/download/{server}/{media}"
LEGACY = "/_matrix/media/v3/download/{server}/{media}"


def _b64(value: Any) -> bytes:
    if not isinstance(value, str) or len(value) > 1024:
        raise DownloadFailed("corrupt")
    try:
        return base64.b64decode(value.replace("-", "+").replace("_", "/") + "==")
    except (binascii.Error, ValueError):
        raise DownloadFailed("corrupt") from None


class Decryption:
    """AES-256-CTR as Matrix encrypted attachments use it, with the ciphertext's SHA-256."""

    def __init__(self, file: dict[str, Any]) -> None:
        key, hashes = file.get("key"), file.get("hashes")
        if not isinstance(key, dict) or not isinstance(hashes, dict):
            raise DownloadFailed("corrupt")
        if key.get("alg") != "A256CTR" or file.get("v") not in ("v2", None):
            raise DownloadFailed("corrupt")
        secret, iv = _b64(key.get("k")), _b64(file.get("iv"))
        self.expected = _b64(hashes.get("sha256"))
        if len(secret) != 32 or len(iv) != 16 or len(self.expected) != 32:
            raise DownloadFailed("corrupt")
        # the 16-byte IV is the whole initial counter block (no fixed nonce part), incremented as
        # one 128-bit big-endian number; senders zero its low 64 bits, so 64-bit counters agree
        self.cipher = AES.new(secret, AES.MODE_CTR, nonce=b"", initial_value=iv)
        self.digest = hashlib.sha256()

    def update(self, chunk: bytes) -> bytes:
        self.digest.update(chunk)
        return self.cipher.decrypt(chunk)

    def check(self) -> None:
        if not hmac.compare_digest(self.digest.digest(), self.expected):
            raise DownloadFailed("corrupt")


def _private_file(path: Path) -> BinaryIO:
    """A new file only the bot reads: the plain text of an encrypted room's attachment."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


class Media:
    def __init__(self, homeserver: str, timeout_s: float) -> None:
        self.homeserver = homeserver.rstrip("/")
        self.timeout_s = timeout_s
        self._http: httpx.AsyncClient | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        """Made with the first file: a bot nobody sends files never loads httpx."""
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_s),
                follow_redirects=True,
                max_redirects=3,
                verify=tls_context(),
            )
        return self._http

    async def download(
        self, file: SharedFile, dest: Path, max_bytes: int, access_token: str | None
    ) -> None:
        match = MXC.match(file.url)
        if match is None or set(match.group(1)) <= {"."}:  # "..": another API path
            raise DownloadFailed("unavailable")
        if file.size is not None and file.size > max_bytes:
            raise DownloadFailed("too_big")
        decryption = Decryption(file.encryption) if file.encryption is not None else None
        server, media = match.groups()
        headers = {"Authorization": f"Bearer {access_token}"} if access_token else {}
        for template in (AUTHENTICATED, LEGACY):
            url = self.homeserver + template.format(server=server, media=media)
            if await self._fetch(url, headers, dest, max_bytes, decryption):
                break
        else:
            raise DownloadFailed("unavailable")
        if decryption is not None:
            decryption.check()

    async def _fetch(
        self,
        url: str,
        headers: dict[str, str],
        dest: Path,
        max_bytes: int,
        decryption: Decryption | None,
    ) -> bool:
        """Whether this endpoint had the file (False: try the older one)."""
        import httpx

        try:
            async with asyncio.timeout(self.timeout_s * 4):
                async with self.http.stream("GET", url, headers=headers) as response:
                    if response.status_code in (400, 404, 405):
                        return False
                    if response.status_code != 200:
                        raise DownloadFailed("unavailable")
                    output = await asyncio.to_thread(_private_file, dest)
                    try:
                        await self._copy(response, output, max_bytes, decryption)
                    finally:
                        await asyncio.to_thread(output.close)
        except (httpx.HTTPError, TimeoutError):
            raise DownloadFailed("unavailable") from None
        return True

    async def _copy(
        self,
        response: httpx.Response,
        output: BinaryIO,
        max_bytes: int,
        decryption: Decryption | None,
    ) -> None:
        size = 0
        async for chunk in response.aiter_bytes(1 << 16):
            size += len(chunk)
            if size > max_bytes:
                raise DownloadFailed("too_big")
            plain = decryption.update(chunk) if decryption is not None else chunk
            await asyncio.to_thread(output.write, plain)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
