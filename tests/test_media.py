"""Shared files fetched from a media repository over real HTTP: decrypted with the event's key
only when the ciphertext matches its hash, capped in size, written privately, and never a
request to another API path."""

from __future__ import annotations

import os
import stat

import pytest
from aiohttp import web
from nio.crypto.attachments import encrypt_attachment

from bot.core.events import SharedFile
from bot.core.ports import DownloadFailed
from bot.matrix.media import Media
from tests.support.synapse import free_port

PLAIN = "Le délai de recours est de deux mois.\n".encode() * 50


def shared(url: str, encryption: dict | None = None, size: int | None = None) -> SharedFile:
    return SharedFile(
        "!room:x", "$file", "@ann:x", 1, "note.txt", "text/plain", size, url, encryption, None
    )


@pytest.fixture
async def media_server():
    """A media repository that serves whatever the test puts in `files`, and records paths."""
    files: dict[str, bytes] = {}
    asked: list[str] = []

    async def download(request: web.Request) -> web.Response:
        asked.append(request.path)
        body = files.get(request.match_info["media"])
        return web.Response(body=body) if body is not None else web.Response(status=404)

    async def anything(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.Response(text="not media")

    app = web.Application()
    app.router.add_get("/_matrix/client/v1/media/download/{server}/{media}", download)
    app.router.add_get("/{tail:.*}", anything)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    media = Media(f"http://127.0.0.1:{port}", timeout_s=5)
    try:
        yield media, files, asked
    finally:
        await media.close()
        await runner.cleanup()


async def test_an_encrypted_attachment_is_decrypted_and_written_privately(media_server, tmp_path):
    media, files, _ = media_server
    ciphertext, keys = encrypt_attachment(PLAIN)
    files["abc"] = ciphertext
    dest = tmp_path / "out"
    await media.download(shared("mxc://x/abc", {"url": "mxc://x/abc", **keys}), dest, 1 << 20, "t")
    assert dest.read_bytes() == PLAIN
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600


async def test_a_ciphertext_that_does_not_match_its_hash_is_refused(media_server, tmp_path):
    media, files, _ = media_server
    ciphertext, keys = encrypt_attachment(PLAIN)
    files["abc"] = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]  # the server changed a byte
    with pytest.raises(DownloadFailed) as failed:
        await media.download(
            shared("mxc://x/abc", {"url": "mxc://x/abc", **keys}), tmp_path / "o", 1 << 20, "t"
        )
    assert failed.value.reason == "corrupt"


async def test_sizes_are_capped_whatever_the_event_claims(media_server, tmp_path):
    media, files, _ = media_server
    files["big"] = b"x" * 200_000
    with pytest.raises(DownloadFailed) as failed:
        await media.download(shared("mxc://x/big", size=10), tmp_path / "o", 100_000, "t")
    assert failed.value.reason == "too_big"
    with pytest.raises(DownloadFailed):
        await media.download(shared("mxc://x/big", size=10**9), tmp_path / "p", 100_000, "t")


@pytest.mark.parametrize(
    "url", ["mxc://../config", "mxc://./x", "mxc://x/../../admin", "mxc://x/a?b", "https://x/y"]
)
async def test_an_mxc_url_never_reaches_another_api_path(media_server, tmp_path, url):
    media, _, asked = media_server
    with pytest.raises(DownloadFailed):
        await media.download(shared(url), tmp_path / "o", 1 << 20, "t")
    assert asked == []
