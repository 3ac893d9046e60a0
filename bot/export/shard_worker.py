"""A worker process of a split export (bot.export.shards): it takes the next range of questions
not yet taken, writes its rows into the range's part file, and says so, until none is left."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sqlite3
from collections.abc import MutableSequence
from dataclasses import dataclass, replace
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.errors import OperatorError
from bot.export.formats import RowMaker
from bot.export.source import ExportSource
from bot.export.writer import ExportError, ExportRequest, create_part, export, part_path, write_rows
from bot.storage.export_reader import Shard

# a range's result: its index, rows written, an error's kind and one-line message, and the
# inode of the file written
Result = tuple[int, int, str | None, str, int]


@dataclass(frozen=True)
class Job:
    settings: Settings
    request: ExportRequest
    ranges: list[Shard]
    parent: int  # the export's process: gone, the worker stops
    first: int  # the inode of OUT.part, which the first range is written into


_writing: list[Path] = []  # the part file being written, made by this worker


def _stopped(*_: object) -> None:
    for part in _writing:
        part.unlink(missing_ok=True)
    os._exit(1)


def work(
    job: Job,
    counts: MutableSequence[int],
    taken: Synchronized[int],
    results: multiprocessing.Queue[Result],
) -> None:
    # Ctrl-C reaches every process of the terminal: the parent stops the workers itself, with
    # terminate(), which ends this one at once (an exception raised from a signal handler
    # may leave the database's thread waiting, and the process with it), its part removed
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stopped)
    try:
        asyncio.run(_ranges(job, counts, taken, results))
    except ExportError as exc:  # an OperatorError too: told apart first
        results.put((-1, 0, "export", str(exc), 0))
    except OperatorError as exc:
        results.put((-1, 0, "operator", str(exc), 0))
    except sqlite3.DatabaseError as exc:
        results.put((-1, 0, "operator", f"cannot read the database: {exc}", 0))


async def _ranges(
    job: Job,
    counts: MutableSequence[int],
    taken: Synchronized[int],
    results: multiprocessing.Queue[Result],
) -> None:
    def written_to(index: int) -> Any:
        def written(count: int) -> None:
            counts[index] = count
            if os.getppid() != job.parent:  # the export was stopped: no one joins the parts
                raise ExportError("the export stopped")

        return written

    async def write(source: ExportSource, maker: RowMaker, request: ExportRequest, _: Any) -> int:
        # one reader, one source and one maker (consents, names, caches) for every range
        while True:
            with taken.get_lock():
                index = taken.value
                taken.value += 1
            if index >= len(job.ranges):
                return 0
            part = part_path(request.out, index or None)
            if index:
                fd = create_part(part)
                _writing.append(part)
                counts[index] = 0
            else:
                fd = os.open(part, os.O_WRONLY | os.O_NOFOLLOW)  # made by the parent
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    inode = os.fstat(fd).st_ino
                    if not index and inode != job.first:
                        raise ExportError(f"{part} was replaced during the export")
                    ranged = replace(request, shard=job.ranges[index])
                    count = await write_rows(source, maker, ranged, out, written_to(index))
            except OSError as exc:
                raise ExportError(f"cannot write {part}: {exc.strerror}") from None
            except BaseException:
                if index:
                    part.unlink(missing_ok=True)
                raise
            _writing.clear()
            results.put((index, count, None, "", inode))

    await export(job.settings, job.request, None, write)
