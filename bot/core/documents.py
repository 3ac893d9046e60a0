"""Files shared in rooms, turned into the room's documents: indexed when sent to the bot in a
DM, when a room admin turned on automatic indexing, or on `docs add`; removed with the message
that shared them, on `docs remove`, or when their sharer asks to be forgotten."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from pathlib import Path

from bot.config import Settings
from bot.core.events import Redaction, SharedFile
from bot.core.fair_use import SlidingLimit
from bot.core.governance import redaction_honoured
from bot.core.ports import ChatPort, DownloadFailed
from bot.core.rooms import Rooms
from bot.core.tasks import Tasks
from bot.rag.documents import BadDocument
from bot.rag.indexer import Indexer, Origin
from bot.rag.ports import DocumentStore
from bot.texts import say

log = logging.getLogger(__name__)


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)  # mkdir leaves an existing folder's mode as it was


def _empty_dir(path: Path) -> None:
    if path.is_dir():
        for leftover in path.iterdir():
            leftover.unlink(missing_ok=True)


class RoomDocuments:
    def __init__(
        self,
        settings: Settings,
        store: DocumentStore,
        indexer: Indexer,
        parts: tuple[ChatPort, Rooms, Tasks],
        temp_dir: Path,
    ) -> None:
        self.settings = settings
        self.store = store
        self.indexer = indexer
        self.port, self.rooms, self.tasks = parts
        self.temp_dir = temp_dir
        rag = settings.rag
        self.limit = SlidingLimit(rag.files_per_person, settings.bot.fair_use_window_s)
        self.waiting = 0
        # files being indexed, and those among them whose message was redacted meanwhile
        self._indexing: dict[tuple[str, str], str] = {}  # -> who shared it
        self._withdrawn: set[tuple[str, str]] = set()

    @property
    def enabled(self) -> bool:
        return self.settings.rag.enabled

    async def shared(self, file: SharedFile, is_dm: bool) -> None:
        """A file was shared: indexed in DMs, and where the room's admins asked for it."""
        if not self.enabled or file.sender == self.port.user_id:
            return
        room = await self.rooms.get(file.room_id)
        if self.rooms.is_history(room, file.ts):
            return
        if is_dm or await self.store.auto_index(file.room_id):
            await self.index_later(file, self.rooms.lang(room), file.sender)

    async def index_later(self, file: SharedFile, lang: str, asked_by: str) -> str:
        """Queue the file; "" when queued, else the notice saying why not."""
        if (file.room_id, file.event_id) in self._indexing:
            return ""  # already on its way
        if await self.store.shared_file_erased(file.room_id, file.event_id, file.sender, file.ts):
            return say(lang, "docs.erased")  # "forget me" is not undone by sharing it again
        if asked_by not in self.settings.bot.operators:
            verdict = self.limit.take(asked_by)
            if not verdict.allowed:
                minutes = max(1, round(verdict.retry_after_s / 60))
                return say(lang, "docs.limit", minutes=minutes)
        if self.waiting >= self.settings.rag.max_waiting_files:
            return say(lang, "docs.busy")
        self.waiting += 1
        self._indexing[(file.room_id, file.event_id)] = file.sender
        self.tasks.spawn(self._index(file, lang), name=f"index-{file.room_id}")
        return ""

    async def _index(self, file: SharedFile, lang: str) -> None:
        key = (file.room_id, file.event_id)
        path = self.temp_dir / f"shared-{secrets.token_hex(8)}"
        try:
            text = await self._download_and_index(file, path, lang)
            if key in self._withdrawn:  # redacted while it was read: it must not stay
                await self.store.remove_shared_by_event(file.room_id, file.event_id)
                return
            await self.rooms.notice(file.room_id, text, file.event_id, file.thread_root)
        finally:
            self.waiting -= 1
            self._indexing.pop(key, None)
            self._withdrawn.discard(key)
            with contextlib.suppress(OSError):
                await asyncio.to_thread(path.unlink, True)

    async def _download_and_index(self, file: SharedFile, path: Path, lang: str) -> str:
        rag = self.settings.rag
        name = file.name
        try:
            await self.temp_dir_ready()
            await self.port.download(file, path, int(rag.max_file_mb * 1024 * 1024))
            origin = Origin(name, file.room_id, file.event_id, file.sender)
            report = await self.indexer.index(path, origin, file.mimetype)
        except (DownloadFailed, BadDocument) as exc:
            reason = exc.reason
            log.info("a file shared in %s was not indexed: %s", file.room_id, reason)
            why = say(lang, f"docs.bad.{reason}", mb=round(rag.max_file_mb), pages=rag.max_pages)
            return say(lang, "docs.refused", name=name, why=why)
        if report.pages:
            return say(lang, "docs.indexed_pages", name=name, pages=report.pages,
                       passages=report.passages)  # fmt: skip
        return say(lang, "docs.indexed", name=name, passages=report.passages)

    async def temp_dir_ready(self) -> None:
        await asyncio.to_thread(_private_dir, self.temp_dir)

    async def recover(self) -> None:
        """Before anything is indexed: what a crash left half done goes (documents never
        finished, and the plain text of downloaded files)."""
        removed = await self.store.discard_unfinished_shared()
        if removed:
            log.info("removed %d documents a stop left half indexed", removed)
        await asyncio.to_thread(_empty_dir, self.temp_dir)

    async def redacted(self, redaction: Redaction) -> None:
        """The message that shared a file is gone, by a redaction the homeserver applied: so
        is the document, whatever its state."""
        key = (redaction.room_id, redaction.redacts)
        sharer = self._indexing.get(key)
        if sharer is None:
            documents = await self.store.room_documents(redaction.room_id)
            sharer = next((d.sharer for d in documents if d.event_id == redaction.redacts), None)
        if not await redaction_honoured(redaction, sharer, self.port):
            return
        if key in self._indexing:
            self._withdrawn.add(key)
        if await self.store.remove_shared_by_event(*key):
            log.info("removed a document of %s: its message was redacted", redaction.room_id)

    async def forgotten(self, user_id: str) -> None:
        self._withdrawn.update(key for key, sharer in self._indexing.items() if sharer == user_id)
        removed = await self.store.remove_shared_by(user_id)
        if removed:
            log.info("removed %d documents of a person who asked to be forgotten", removed)
