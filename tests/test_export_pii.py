"""Personal identifiers stored before masking existed (or while it was off) still come out masked
in exports, even with data.scrub off: a real database made by the migrations, a real export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bot.config import load_settings
from bot.export.writer import ExportRequest, export
from tests.test_export_db import ALICE, BOT, ROOM, SECRET

IBAN = "FR76 3000 6000 0112 3456 7890 189"
NIR = "2 55 08 14 168 025 38"


async def sft_rows_unscrubbed(folder: Path) -> list[dict[str, Any]]:
    config = folder / "config.toml"
    config.write_text(
        f"data_dir = '{folder}'\n[matrix]\nhomeserver = 'http://h'\nuser_id = '{BOT}'\n"
        f"password = 'p'\n[data]\npseudonym_secret = '{SECRET}'\nscrub = false\n"
    )
    out = folder / "sft.jsonl"
    await export(load_settings(config), ExportRequest("sft", out), None)
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


async def test_identifiers_stored_unmasked_are_masked_in_exports_without_scrub(records, tmp_path):
    await records.consent(ALICE)
    question = f"Mon IBAN est {IBAN} et ma sécu {NIR}, voir https://exemple.fr/aide"
    await records.message(ROOM, "$q1", ALICE, question)
    # the model repeated them, a zero-width space inside the IBAN
    repeated = f"Votre IBAN {IBAN[:9]}\u200b{IBAN[9:]} et votre NIR {NIR} sont notés."
    await records.answer(ROOM, "$q1", "$a1", repeated)
    await records.vote(ROOM, "$a1", ALICE)

    (row,) = await sft_rows_unscrubbed(tmp_path)
    contents = [message["content"] for message in row["messages"]]
    assert contents[-2:] == [
        "Mon IBAN est [IBAN] et ma sécu [NIR], voir https://exemple.fr/aide",
        "Votre IBAN [IBAN] et votre NIR [NIR] sont notés.",
    ]
    text = json.dumps(row, ensure_ascii=False)
    for leaked in ("3000", "6000", "7890", "168 025", "025 38"):
        assert leaked not in text, leaked
