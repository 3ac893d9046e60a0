"""An export split between worker processes by questions, joined into the bytes one process
would write. The questions are cut into contiguous ranges, in the order they are read, a few
per process: each process (spawned: nothing forked from a process with threads) takes the next
range not yet taken, so that one slow range (people who never consented, long conversations)
does not leave the other processes idle, and writes it into a part file of its own; the parent
appends the parts in order to OUT.part as they are done, and renames it to OUT once whole."""

from __future__ import annotations

import asyncio
import errno
import multiprocessing
import os
import queue
import shutil
import sqlite3
import time
from collections.abc import AsyncIterator, MutableSequence, Sequence
from itertools import pairwise
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TextIO

from bot.config import Settings
from bot.errors import OperatorError
from bot.export import shard_worker
from bot.export.formats import REFUSAL_FORMATS
from bot.export.shard_worker import Result
from bot.export.writer import (
    ExportError,
    ExportRequest,
    checked,
    create_part,
    done,
    export,
    open_reader,
    part_path,
)
from bot.storage.export_reader import Key, Shard

# ranges per process: more balance the work better, each costs a part file and a query
RANGES_PER_JOB = 4


async def export_jsonl(
    settings: Settings, request: ExportRequest, progress: TextIO | None, jobs: int
) -> int:
    """`export` (JSONL), split between up to jobs processes when there is more than one
    question to write."""
    if jobs > 1:
        database, _ = checked(settings, request)
        try:
            ranges = await shards(database, request, jobs * RANGES_PER_JOB)
        except sqlite3.DatabaseError as exc:
            raise OperatorError(f"cannot read the database: {exc}") from None
        if len(ranges) > 1:
            count = await write_sharded(settings, request, progress, ranges, jobs)
            done(progress, count, request)
            return count
    return await export(settings, request, progress)


async def shards(database: Path, request: ExportRequest, count: int) -> list[Shard]:
    """Up to count ranges of as many questions each (at least one question a range)."""
    reader = await open_reader(database)
    try:
        refused, since, room = request.format in REFUSAL_FORMATS, request.since_ms, request.room
        total = await reader.count_questions(since, room, refused)
        count = max(1, min(count, total))
        offsets = {total * i // count for i in range(1, count)}
        starts = [
            key
            async for at, key in _numbered(reader.question_keys(since, room, refused))
            if at in offsets
        ]
    finally:
        await reader.close()
    bounds = [None, *starts, None]
    return list(pairwise(bounds))


async def _numbered(keys: AsyncIterator[Key]) -> AsyncIterator[tuple[int, Key]]:
    at = 0
    async for key in keys:
        yield at, key
        at += 1


async def write_sharded(
    settings: Settings,
    request: ExportRequest,
    progress: TextIO | None,
    ranges: list[Shard],
    jobs: int,
) -> int:
    temporary = part_path(request.out)
    fd = create_part(temporary)
    parts = [part_path(request.out, index) for index in range(len(ranges))]
    context = multiprocessing.get_context("spawn")
    # rows written of each range, -1 until its worker made its part file (a part to remove)
    counts = context.Array("q", [-1] * len(ranges), lock=False)
    taken = context.Value("i", 0)  # the next range to take
    results: multiprocessing.Queue[Result] = context.Queue()
    # the first range goes straight into OUT.part (its inode tells it from a file put there
    # since): its bytes are not copied again
    job = shard_worker.Job(settings, request, ranges, os.getpid(), os.fstat(fd).st_ino)
    workers = [
        context.Process(
            target=shard_worker.work,
            args=(job, counts, taken, results),
            daemon=True,  # never outlives the export
        )
        for _ in range(min(jobs, len(ranges)))
    ]
    try:
        for worker in workers:
            worker.start()
        count = await _wait(workers, counts, results, progress, _Joined(fd, parts))
        for worker in workers:  # each ends on its own once no range is left
            worker.join(timeout=30)
        os.replace(temporary, request.out)
    except OSError as exc:
        raise ExportError(f"cannot write {request.out}: {exc.strerror}") from None
    finally:
        os.close(fd)
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
            if worker.pid is not None:
                worker.join(timeout=5)
                if worker.exitcode is None:
                    worker.kill()
                    worker.join()
        for index, part in enumerate(parts[1:], start=1):
            if counts[index] >= 0:  # made by its worker: never a file that was there before
                part.unlink(missing_ok=True)
        temporary.unlink(missing_ok=True)
        results.close()
    return count


class _Joined:
    """The parts appended to OUT.part in order, each as soon as those before it are."""

    def __init__(self, fd: int, parts: list[Path]) -> None:
        self.fd, self.parts = fd, parts
        self.inodes: dict[int, int] = {}
        self.next = 1  # the first range was written into OUT.part itself

    def add(self, index: int, inode: int) -> None:
        self.inodes[index] = inode
        if index == 0:
            os.lseek(self.fd, 0, os.SEEK_END)
        if 0 not in self.inodes:
            return
        while self.next in self.inodes:
            _append(self.fd, self.parts[self.next], self.inodes[self.next])
            self.parts[self.next].unlink()
            self.next += 1


def _append(fd: int, part: Path, inode: int) -> None:
    """The part a worker wrote, copied within the kernel to the end of fd."""
    source = os.open(part, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        if os.fstat(source).st_ino != inode:
            raise ExportError(f"{part} was replaced during the export")
        try:
            while os.copy_file_range(source, fd, 1 << 30):
                pass
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            # a file system or kernel without it (nothing was copied): through user space
            with open(source, "rb", closefd=False) as read, open(fd, "wb", closefd=False) as out:
                shutil.copyfileobj(read, out, 1 << 20)
    finally:
        os.close(source)


async def _wait(
    workers: Sequence[BaseProcess],
    counts: MutableSequence[int],
    results: multiprocessing.Queue[Result],
    progress: TextIO | None,
    joined: _Joined,
) -> int:
    """Rows written, once every range is."""
    done: dict[int, int] = {}
    shown = ended = time.monotonic()
    while len(done) < len(joined.parts):
        result = _next(results)
        if result is None:
            for worker in workers:
                # a worker exits 0 once no range is left, after sending its results
                if worker.exitcode not in (None, 0):
                    raise OperatorError(f"an export worker stopped (exit code {worker.exitcode})")
            if not all(worker.exitcode == 0 for worker in workers):
                ended = time.monotonic()
            elif time.monotonic() - ended > 5:  # all gone, the last results long due
                raise OperatorError("the export workers stopped before the end")
            await asyncio.sleep(0.05)
            if progress is not None and time.monotonic() - shown > 0.5:
                progress.write(f"\r{sum(max(0, c) for c in counts)} rows written")
                progress.flush()
                shown = time.monotonic()
            continue
        index, count, kind, message, inode = result
        if kind is not None:
            raise (OperatorError if kind == "operator" else ExportError)(message)
        done[index] = count
        joined.add(index, inode)
    return sum(done.values())


def _next(results: multiprocessing.Queue[Result]) -> Result | None:
    try:
        return results.get_nowait()
    except queue.Empty:
        return None
