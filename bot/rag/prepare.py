"""Preparing a file for the index, off the event loop: extraction, splitting and term analysis
run in one worker process, a PDF some pages at a time, so that a 1,000-page file neither
delays another room's answer nor holds more than a batch in memory.

The worker is a separate process rather than a thread because parsers of hostile files may
take the CPU for long, grow without bound or crash outright: a process can be capped
(address space, priority), timed out and killed, and the bot carries on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator
from concurrent.futures import BrokenExecutor, Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bot.rag.documents import BadDocument, BadReason, Kind, PreparedPassage

if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import ProcessPoolExecutor

    from bot.config import RagSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

BATCH_PAGES = 20
BATCH_TIMEOUT_S = 120.0
# About 20 MB of text, some 10,000 dense pages: past it a document is refused, however few
# bytes it took to make (a PDF can draw one content stream on every page).
MAX_PASSAGES = 20_000
WORKER_MEMORY_BYTES = 2 * 1024**3
WORKER_NICENESS = 10
_SHUTDOWN_WITHIN_S = 5.0
# a parser's message may quote bytes of the file: keep it short (and out of INFO logs)
_MAX_DETAIL = 200


@dataclass(frozen=True)
class PreparedBatch:
    passages: list[PreparedPassage]
    pages_read: int
    done: bool  # the file has been read to its end


@dataclass(frozen=True)
class _Refusal:
    """BadDocument across the process boundary (its pickled form would lose the reason)."""

    reason: BadReason
    detail: str


# --- in the worker process -----------------------------------------------------------------
# The parsers (PDFium, python-docx, lxml) are imported here, in the worker, and never in the
# bot's own process: they are 11 MiB of its memory otherwise.


def prepare_batch(
    path: str,
    kind: str,
    first_page: int,
    max_pages: int,
    target_chars: int,
    overlap_chars: int,
    first_ordinal: int,
) -> PreparedBatch:
    """Passages of pages first_page (0-based) to first_page + max_pages of a PDF, or of the whole
    file for other kinds, with their index terms; raises BadDocument."""
    from bot.rag.analysis import index_terms
    from bot.rag.chunking import split_passages
    from bot.rag.extract import page_count, read_blocks

    file = Path(path)
    document_kind: Kind = _known_kind(kind)
    if document_kind == "pdf":
        total = page_count(file, document_kind) or 0
        pages_read = max(0, min(max_pages, total - first_page))
        done = first_page + pages_read >= total
        blocks = read_blocks(file, document_kind, first_page, max_pages)
    else:
        pages_read, done = 0, True
        blocks = read_blocks(file, document_kind)
    passages = [
        PreparedPassage(passage, index_terms(f"{passage.section or ''}\n{passage.text}"))
        for passage in split_passages(blocks, target_chars, overlap_chars, first_ordinal)
    ]
    return PreparedBatch(passages, pages_read, done)


def inspect_file(
    path: str, filename: str, mimetype: str | None, max_bytes: int, max_pages: int
) -> tuple[Kind, int | None]:
    """The file's kind and page count, refused (BadDocument) if too big or unreadable."""
    from bot.rag.extract import HEAD_BYTES, detect_kind, page_count

    file = Path(path)
    if file.stat().st_size > max_bytes:
        raise BadDocument("too_big", "file size")
    with file.open("rb") as opened:
        head = opened.read(HEAD_BYTES)
    kind = detect_kind(filename, mimetype, head)
    pages = page_count(file, kind)
    if pages is not None and pages > max_pages:
        raise BadDocument("too_big", f"{pages} pages")
    return kind, pages


def _known_kind(kind: str) -> Kind:
    for known in ("pdf", "docx", "odt", "html", "markdown", "text"):
        if kind == known:
            return known
    raise BadDocument("unknown_type", kind)


def _guarded(function: Callable[..., T], *args: Any) -> T | _Refusal:
    """Runs in the worker: a bad file comes back as a refusal rather than an exception."""
    try:
        return function(*args)
    except BadDocument as exc:
        message = str(exc)
        detail = "" if message == exc.reason else message.split(": ", 1)[-1]
        return _Refusal(exc.reason, detail[:_MAX_DETAIL])
    except MemoryError:
        return _Refusal("too_big", "out of memory")
    except Exception as exc:
        return _Refusal("corrupt", f"{type(exc).__name__}: {exc}"[:_MAX_DETAIL])


def _limit_worker() -> None:
    """The worker's caps: its address space (a hostile file fails there with MemoryError, not
    by making the machine swap) and a lower priority than the bot's own process."""
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = (
            WORKER_MEMORY_BYTES
            if hard == resource.RLIM_INFINITY
            else min(hard, WORKER_MEMORY_BYTES)
        )
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):
        pass  # not on this platform: the timeout still bounds the work
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)


# --- in the bot's process ------------------------------------------------------------------


class Preparer:
    """Runs inspection and preparation in one capped worker process, one file at a time."""

    def __init__(
        self,
        settings: RagSettings,
        batch_pages: int = BATCH_PAGES,
        timeout_s: float = BATCH_TIMEOUT_S,
    ) -> None:
        self.settings = settings
        self.batch_pages = batch_pages
        self.timeout_s = timeout_s
        self._pool: ProcessPoolExecutor | None = None
        # one file at a time: two big files at once would double the worker's memory and
        # make each wait on the other's batches anyway
        self._lock = asyncio.Lock()

    async def inspect(
        self, path: Path, filename: str, mimetype: str | None
    ) -> tuple[Kind, int | None]:
        """The file's kind and page count (PDF); raises BadDocument (too_big, unknown_type,
        corrupt, encrypted)."""
        max_bytes = int(self.settings.max_file_mb * 1024 * 1024)
        async with self._lock:
            return await self._run(
                inspect_file, str(path), filename, mimetype, max_bytes, self.settings.max_pages
            )

    async def batches(
        self, path: Path, kind: Kind, pages: int | None
    ) -> AsyncGenerator[PreparedBatch, None]:
        """The file's passages, a PDF batch_pages pages at a time, other kinds in one batch;
        raises BadDocument, and "no_text" after the last batch if no passage came out. Close the
        iterator (or read it to its end) to let the next file in."""
        planned = pages if pages is not None else self.settings.max_pages
        rounds = -(-planned // self.batch_pages) + 1 if kind == "pdf" else 1
        async with self._lock:
            ordinal = 0
            for index in range(rounds):
                batch = await self._run(
                    prepare_batch,
                    str(path),
                    kind,
                    index * self.batch_pages,
                    self.batch_pages,
                    self.settings.passage_chars,
                    self.settings.overlap_chars,
                    ordinal,
                )
                ordinal += len(batch.passages)
                if ordinal > MAX_PASSAGES:
                    raise BadDocument("too_big", f"more than {MAX_PASSAGES} passages")
                yield batch
                if batch.done:
                    break
            else:
                raise BadDocument("too_big", "more pages than announced")
            if ordinal == 0:
                raise BadDocument("no_text")

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(
                asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True),
                _SHUTDOWN_WITHIN_S,
            )
        except TimeoutError:
            _kill(pool)

    def worker_pids(self) -> list[int]:
        """The worker's process id, if it runs (for operations and tests)."""
        return list(_processes(self._pool)) if self._pool is not None else []

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        pool, future = await self._submit(function, *args)
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except (TimeoutError, BrokenExecutor) as exc:
            self._discard(pool)
            log.warning("document worker %s: restarted", type(exc).__name__)
            raise BadDocument("corrupt", f"worker: {type(exc).__name__}") from exc
        except asyncio.CancelledError:
            self._discard(pool)  # its work is no longer wanted: do not let it hold the next file
            raise
        if isinstance(result, _Refusal):
            raise BadDocument(result.reason, result.detail)
        return result

    async def _submit(
        self, function: Callable[..., T], *args: Any
    ) -> tuple[ProcessPoolExecutor, Future[T | _Refusal]]:
        """The work handed to the worker; a worker that died while idle (say, killed by the
        system) is replaced rather than blamed on this file."""
        for attempt in range(2):
            pool = self._pool or self._start()
            try:
                # submitting may start the worker process: that is kept off the loop too
                future = await asyncio.to_thread(pool.submit, _guarded, function, *args)
                return pool, future
            except BrokenExecutor:
                self._discard(pool)
                if attempt:
                    raise BadDocument("corrupt", "worker cannot start") from None
            except asyncio.CancelledError:
                self._discard(pool)
                raise
        raise AssertionError("unreachable")

    def _start(self) -> ProcessPoolExecutor:
        # imported with the first file: multiprocessing is 2 MiB of a bot that may never need it
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self._pool = ProcessPoolExecutor(
            max_workers=1,
            # spawn, not fork: the child starts clean rather than with a copy of the bot's
            # threads, sockets and memory
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_limit_worker,
        )
        return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        _kill(pool)
        if self._pool is pool:
            self._pool = None


def _processes(pool: ProcessPoolExecutor) -> dict[int, Any]:
    # the executor has no public way to stop a task that runs: its processes are reached here
    found = getattr(pool, "_processes", None)
    return dict(found) if found else {}


def _kill(pool: ProcessPoolExecutor) -> None:
    for process in _processes(pool).values():
        with contextlib.suppress(Exception):
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)
