"""An export split between worker processes writes the bytes of one process, and a worker's
failure is one line in the parent, with no part file left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.export import FORMATS
from bot.export.shards import export_jsonl
from bot.export.writer import ExportError, ExportRequest, export
from tests.test_export_db import ROOM, settings_for
from tests.test_export_same_rows import Database


def _files(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir() if path.suffix != ".sqlite3"}


async def test_a_split_export_writes_the_rows_of_one_process(records, tmp_path):
    await Database(records, 3).build(conversations=60)
    await records.conn.commit()
    settings = settings_for(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    for name in FORMATS:
        for room in (None, ROOM):
            one, split = out / f"{name}-1.jsonl", out / f"{name}-3.jsonl"
            assert await export(settings, ExportRequest(name, one, room=room), None) > 0
            count = await export_jsonl(settings, ExportRequest(name, split, room=room), None, 3)
            assert split.read_bytes() == one.read_bytes(), (name, room)
            assert count == len(one.read_bytes().splitlines())
            assert _files(out) == {one.name, split.name}  # no part file left
            one.unlink()
            split.unlink()


async def test_a_failing_worker_is_one_line_and_leaves_no_part(records, tmp_path):
    await Database(records, 4).build(conversations=30)
    await records.conn.commit()
    settings = settings_for(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    target = out / "sft.jsonl"
    # the second worker's part file is already there: it stops, the others' parts are removed
    theirs = out / "sft.jsonl.part.1"
    theirs.write_text("not the export's")
    with pytest.raises(ExportError) as raised:
        await export_jsonl(settings, ExportRequest("sft", target), None, 3)
    message = str(raised.value)
    assert "sft.jsonl.part.1 already exists" in message and "\n" not in message
    assert raised.value.__cause__ is None
    assert _files(out) == {theirs.name}  # left as it was: never a file the export did not make
    assert theirs.read_text() == "not the export's"
