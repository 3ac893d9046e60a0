"""`lucie-bot export`: stream rows to a JSONL file, with progress on a terminal."""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from bot import paths
from bot.config import MIN_PSEUDONYM_SECRET, DataSettings, Settings
from bot.errors import OperatorError, UsageError
from bot.export.formats import REFUSAL_FORMATS, WANTED, RowMaker
from bot.export.lines import lines_of
from bot.export.privacy import NameMask, Pseudonyms
from bot.export.source import ExportSource
from bot.storage.export_reader import SchemaMismatch, Shard, SqliteExportReader
from bot.texts import PromptTexts

# never through a link, never over a file already there: whoever can write in the folder must
# not be able to point the export at another file, or read it while it is being written
PART_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW


class ExportError(UsageError):
    """Worded as one line for the person running the export."""


@dataclass(frozen=True)
class ExportRequest:
    format: str
    out: Path
    since_ms: int = 0
    room: str | None = None
    shard: Shard = (None, None)  # all the questions unless a part of a split export


# what writes the rows out: JSONL here (_write), a Hugging Face dataset folder in bot.export.hf,
# both behind the same checks and the same consented, pseudonymised source
Write = Callable[[ExportSource, RowMaker, ExportRequest, TextIO | None], Awaitable[int]]


def pseudonym_secret(data: DataSettings) -> str:
    """The key of the pseudonyms, refused when guessable (unset, empty, short or blank)."""
    secret = data.pseudonym_secret.get_secret_value() if data.pseudonym_secret else ""
    if len(secret.strip()) < MIN_PSEUDONYM_SECRET:
        raise ExportError(
            f"data.pseudonym_secret must be at least {MIN_PSEUDONYM_SECRET} characters"
            " (config file or LUCIE_BOT_DATA__PSEUDONYM_SECRET; `openssl rand -hex 32` makes one)"
        )
    return secret


async def export(
    settings: Settings, request: ExportRequest, progress: TextIO | None, write: Write | None = None
) -> int:
    """Write the rows (as JSONL unless another write is given); return how many. Nothing
    unconsented or erased is ever written."""
    database, secret = checked(settings, request)
    try:
        return await _export(settings, request, progress, database, secret, write or _write)
    except sqlite3.DatabaseError as exc:  # a damaged or foreign file where the database should be
        raise OperatorError(f"cannot read the database: {exc}") from None


def checked(settings: Settings, request: ExportRequest) -> tuple[Path, str]:
    """The database and the pseudonyms' key, once the export is known to be allowed."""
    data = settings.data
    if data.collection == "off":
        raise ExportError('data collection is off (data.collection = "off"): nothing to export')
    secret = pseudonym_secret(data)
    database = paths.database(settings.data_dir)
    if not database.is_file():
        raise ExportError(f"no database at {database}: check data_dir")
    if not request.out.parent.is_dir():
        raise ExportError(f"folder {request.out.parent} does not exist")
    return database, secret


async def _export(
    settings: Settings,
    request: ExportRequest,
    progress: TextIO | None,
    database: Path,
    secret: str,
    write: Write,
) -> int:
    data = settings.data
    reader = await open_reader(database)
    try:
        source = ExportSource(
            reader,
            PromptTexts(settings.bot.prompts_dir, settings.guard.policies()),
            settings.bot.default_lang,
            settings.matrix.user_id,
            settings.matrix.display_name,
            opt_in=data.collection == "opt_in",
            notice_version=data.notice_version,
        )
        await source.load_consents()
        maker = RowMaker(
            Pseudonyms(secret),
            source,
            data.licence,
            data.scrub,
            data.collection,
            NameMask(await source.people_names()),
        )
        count = await write(source, maker, request, progress)
    finally:
        await reader.close()
    done(progress, count, request)
    return count


def done(progress: TextIO | None, count: int, request: ExportRequest) -> None:
    if progress is not None:
        progress.write(f"\r{count} rows written to {request.out}\n")


async def open_reader(database: Path) -> SqliteExportReader:
    """The export reads the database without upgrading it: the bot does that when it starts."""
    try:
        return await SqliteExportReader.open(database)
    except SchemaMismatch as exc:
        raise ExportError(
            f"the database has schema version {exc.found} and this lucie-bot reads {exc.known}:"
            " start the bot once with this version (it upgrades the database), then export"
        ) from None


async def _write(
    source: ExportSource, maker: RowMaker, request: ExportRequest, progress: TextIO | None
) -> int:
    """Rows into OUT.part, renamed to OUT once whole: a reader never sees half an export."""
    temporary = part_path(request.out)
    fd = create_part(temporary)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            count = await write_rows(source, maker, request, out, _shown(progress))
        os.replace(temporary, request.out)
    except OSError as exc:
        raise ExportError(f"cannot write {request.out}: {exc.strerror}") from None
    finally:
        # only the file this export made: never one that was there before it
        temporary.unlink(missing_ok=True)
    return count


def part_path(out: Path, shard: int | None = None) -> Path:
    return out.with_name(f"{out.name}.part" + ("" if shard is None else f".{shard}"))


def create_part(path: Path) -> int:
    try:
        return os.open(path, PART_FLAGS, 0o600)
    except FileExistsError:
        raise ExportError(
            f"{path} already exists (another export under way, or a leftover): remove it"
        ) from None
    except OSError as exc:
        raise ExportError(f"cannot create {path}: {exc.strerror}") from None


async def write_rows(
    source: ExportSource,
    maker: RowMaker,
    request: ExportRequest,
    out: TextIO,
    written: Callable[[int], None],
) -> int:
    """The rows of the request's questions into out; written is told the count as it grows."""
    make, count = lines_of(request.format), 0
    refused = request.format in REFUSAL_FORMATS
    wanted = WANTED.get(request.format)
    questions = source.questions(request.since_ms, request.room, refused, wanted, request.shard)
    async for group in questions:
        # a question's rows in one write: a few, or one per vote in Open WebUI
        lines = make(maker, group)
        out.write("".join(lines))
        count += len(lines)
        written(count)
    return count


def _shown(progress: TextIO | None) -> Callable[[int], None]:
    shown = time.monotonic()

    def written(count: int) -> None:
        nonlocal shown
        if progress is not None and time.monotonic() - shown > 0.5:
            progress.write(f"\r{count} rows written")
            progress.flush()
            shown = time.monotonic()

    return written


def progress_stream() -> TextIO | None:
    """Progress only where a person watches: never in logs or pipes."""
    return sys.stderr if sys.stderr.isatty() else None
