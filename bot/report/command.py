"""`lucie-bot report`: one self-contained HTML page of aggregate figures and plots.

The database is read as the export reads it, without upgrading it (a schema of another version
is refused). The figures are aggregated in SQL; the plots are drawn in this process, as the
command is not the bot."""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bot import paths
from bot.config import Settings
from bot.errors import OperatorError, UsageError
from bot.storage.export_reader import SchemaMismatch, SqliteExportReader


class ReportError(UsageError):
    """Worded as one line for the person running the report."""


@dataclass(frozen=True)
class ReportRequest:
    out: Path
    since_ms: int = 0
    room: str | None = None


def _check(settings: Settings, request: ReportRequest) -> Path:
    if importlib.util.find_spec("matplotlib") is None:
        raise ReportError(
            "the report draws its plots with matplotlib, which is not installed: "
            "pip install matplotlib"
        )
    database = paths.database(settings.data_dir)
    if not database.is_file():
        raise ReportError(f"no database at {database}: check data_dir")
    if not request.out.parent.is_dir():
        raise ReportError(f"folder {request.out.parent} does not exist")
    return database


async def report(settings: Settings, request: ReportRequest) -> None:
    """Write the page to request.out (whole or not at all)."""
    database = _check(settings, request)
    # loaded here, not at start: matplotlib and numpy are for this command only
    from bot.report.page import Context, Page
    from bot.report.queries import ReportQueries, Scope
    from bot.report.ratings import rate

    data = settings.data
    scope = Scope(request.since_ms, request.room, data.collection == "opt_in", data.notice_version)
    now = int(time.time() * 1000)
    try:
        reader = await SqliteExportReader.open(database)
    except SchemaMismatch as exc:
        raise ReportError(
            f"the database has schema version {exc.found} and this lucie-bot reads {exc.known}:"
            " start the bot once with this version (it upgrades the database), then report"
        ) from None
    except sqlite3.DatabaseError as exc:
        raise OperatorError(f"cannot read the database: {exc}") from None
    try:
        figures = await ReportQueries(reader.conn, scope).figures(now)
    except sqlite3.DatabaseError as exc:
        raise OperatorError(f"cannot read the database: {exc}") from None
    finally:
        await reader.close()
    emojis = {label: emoji for emoji, label in data.reason_emojis.items()}
    context = Context(scope, settings.bot.default_lang, now, emojis)
    from bot.report.charts import drawing

    with drawing():
        page = Page(figures, rate(figures.comparisons), context).html()
    _write(request.out, page)


def _write(out: Path, page: str) -> None:
    """Into a new file beside OUT, renamed over it once whole: a reader never sees half a page,
    and a link planted at OUT is replaced, not followed."""
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(page)
        os.replace(name, out)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
