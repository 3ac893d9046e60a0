"""`lucie-bot export`: stream rows to a JSONL file, with progress on a terminal."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import aiosqlite

from bot.config import Settings
from bot.export.formats import BUILDERS, RowMaker
from bot.export.privacy import NameMask, Pseudonyms
from bot.export.source import ExportSource
from bot.texts import PromptTexts

DATABASE_NAME = "lucie-bot.sqlite3"


class ExportError(Exception):
    """Worded as one line for the person running the export."""


@dataclass(frozen=True)
class ExportRequest:
    format: str
    out: Path
    since_ms: int = 0
    room: str | None = None


async def export(settings: Settings, request: ExportRequest, progress: TextIO | None) -> int:
    """Write the rows; return how many. Nothing unconsented or erased is ever written."""
    data = settings.data
    if data.collection == "off":
        raise ExportError('data collection is off (data.collection = "off"): nothing to export')
    if data.pseudonym_secret is None:
        raise ExportError("set data.pseudonym_secret (or LUCIE_BOT_DATA__PSEUDONYM_SECRET) first")
    database = settings.data_dir / DATABASE_NAME
    if not database.is_file():
        raise ExportError(f"no database at {database}: check data_dir")
    if not request.out.parent.is_dir():
        raise ExportError(f"folder {request.out.parent} does not exist")
    prompts = PromptTexts(settings.bot.prompts_dir)
    conn = await aiosqlite.connect(f"file:{database}?mode=ro", uri=True)
    conn.row_factory = aiosqlite.Row
    temporary = request.out.with_name(request.out.name + ".part")
    count = 0
    try:
        source = ExportSource(
            conn,
            prompts,
            settings.bot.default_lang,
            settings.matrix.user_id,
            settings.matrix.display_name,
            opt_in=data.collection == "opt_in",
        )
        await source.load_consents()
        maker = RowMaker(
            Pseudonyms(data.pseudonym_secret.get_secret_value()),
            source,
            data.licence,
            data.scrub,
            data.collection,
            NameMask(await source.people_names()),
        )
        build = BUILDERS[request.format]
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            shown = time.monotonic()
            async for group in source.questions(request.since_ms, request.room):
                for row in build(maker, group):
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
                    count += 1
                if progress is not None and time.monotonic() - shown > 0.5:
                    progress.write(f"\r{count} rows written")
                    progress.flush()
                    shown = time.monotonic()
        os.replace(temporary, request.out)
    finally:
        await conn.close()
        if temporary.exists():
            temporary.unlink()
    if progress is not None:
        progress.write(f"\r{count} rows written to {request.out}\n")
    return count


def progress_stream() -> TextIO | None:
    """Progress only where a person watches: never in logs or pipes."""
    return sys.stderr if sys.stderr.isatty() else None
