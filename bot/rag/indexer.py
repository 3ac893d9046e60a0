"""Indexing one file: read off the event loop, batch by batch, embedded when a server is set,
stored invisible to searches until the last batch is in. A bad file leaves nothing behind."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bot.rag.documents import BadDocument, Kind, PreparedPassage
from bot.rag.embeddings import EmbeddingsError
from bot.rag.ports import DocumentStore, Embedder, NewDocument
from bot.rag.prepare import Preparer

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)
HASH_CHUNK = 1 << 20

# pages read so far, and the total when known
Progress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class Origin:
    """Where a file comes from: a message in a room, or a path in an operator's collection."""

    name: str
    room_id: str | None = None
    event_id: str | None = None
    sharer: str | None = None
    collection: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class IndexReport:
    document_id: int | None  # None when the same version was already indexed
    name: str
    pages: int | None
    passages: int
    embedded: bool
    unchanged: bool = False


def file_version(path: Path) -> tuple[str, int]:
    """The file's sha256 and size (read in a thread: files can be large)."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as file:
        while chunk := file.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class Indexer:
    def __init__(
        self, store: DocumentStore, preparer: Preparer, embedder: Embedder | None = None
    ) -> None:
        self.store = store
        self.preparer = preparer
        self.embedder = embedder

    async def index(
        self,
        path: Path,
        origin: Origin,
        mimetype: str | None = None,
        progress: Progress | None = None,
        again: bool = False,
    ) -> IndexReport:
        """Index the file, replacing an earlier version of it; raises BadDocument. A file
        whose bytes did not change is left as it is, unless asked `again` (`kb rebuild`: a new
        embeddings model, say)."""
        kind, pages = await self.preparer.inspect(path, origin.name, mimetype)
        version, size = await asyncio.to_thread(file_version, path)
        if not again and await self._already_indexed(origin, version):
            return IndexReport(None, origin.name, pages, 0, False, unchanged=True)
        doc = NewDocument(
            origin.name,
            version,
            kind,
            size,
            origin.room_id,
            origin.event_id,
            origin.sharer,
            origin.collection,
            origin.path,
        )
        document_id = await self.store.begin_document(doc, int(time.time() * 1000))
        try:
            count, embedded = await self._fill(document_id, path, kind, pages, progress)
            await self.store.finish_document(document_id, pages)
        except BaseException:
            # nothing half-indexed: a bad file, a cancelled task or a full disk leave no trace
            await asyncio.shield(self.store.discard_document(document_id))
            raise
        log.info("indexed document %d: %d passages, embedded %s", document_id, count, embedded)
        return IndexReport(document_id, origin.name, pages, count, embedded)

    async def _already_indexed(self, origin: Origin, version: str) -> bool:
        if origin.collection is None or origin.path is None:
            return False
        documents = await self.store.collection_documents(origin.collection)
        return any(d.path == origin.path and d.version == version for d in documents)

    async def _fill(
        self,
        document_id: int,
        path: Path,
        kind: Kind,
        pages: int | None,
        progress: Progress | None,
    ) -> tuple[int, bool]:
        count, read, embedded = 0, 0, self.embedder is not None
        # closed however the loop ends, so the preparer's lock is released at once
        async with contextlib.aclosing(self.preparer.batches(path, kind, pages)) as batches:
            async for batch in batches:
                vectors = None
                if embedded and batch.passages:
                    vectors = await self._vectors(batch.passages)
                    embedded = vectors is not None
                await self.store.add_passages(document_id, batch.passages, vectors)
                count += len(batch.passages)
                read += batch.pages_read
                if progress is not None:
                    progress(read, pages)
        if count == 0:
            raise BadDocument("no_text")
        return count, embedded

    async def _vectors(self, passages: list[PreparedPassage]) -> np.ndarray | None:
        assert self.embedder is not None
        texts = [
            f"{p.passage.section}\n{p.passage.text}" if p.passage.section else p.passage.text
            for p in passages
        ]
        try:
            return await self.embedder.embed(texts, "passage")
        except EmbeddingsError as exc:
            # full-text search still finds it; `lucie-bot kb rebuild` embeds it later
            log.warning(
                "embeddings server failed while indexing, passages kept unembedded: %s", exc
            )
            return None
