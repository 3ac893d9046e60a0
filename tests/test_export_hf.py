"""`lucie-bot export --format hf`: a Hugging Face dataset folder read straight from a real database
(its schema made by the migrations). Every config loads with `datasets` and holds exactly the
rows of the JSONL format of the same name; the card's YAML parses, its counts are the rows', and
it holds no text anyone wrote; the folder appears whole or not at all."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from bot.cli import main
from bot.export import FORMATS
from bot.export.hf_card import CardContext, Tally, card
from bot.export.writer import ExportError, ExportRequest
from tests.test_export_db import ALICE, BOB, CAROL, OTHER_ROOM, ROOM, rows, settings_for

ROOT = Path(__file__).resolve().parents[1]
POLICY = "# Règles de l'opérateur (test hf)\nRefuser les armes."
REFUSED = "🛡️ Je ne peux pas répondre à cette demande (S2)."
DATA_FILE = "train-00000-of-00001.parquet"
CAROL_WORDS = ("le secret de carol", "réponse pour carol")


async def conversations(records: Any) -> None:
    """Rows in every format, in French and English, around a person who never consented."""
    for person in (ALICE, BOB):
        await records.consent(person)
    await records.conn.execute("UPDATE rooms SET lang = 'en' WHERE room_id = ?", (OTHER_ROOM,))
    # two answers to one question, voted apart, one corrected: sft, kto, dpo both ways, oasst
    await records.message(ROOM, "$q1", ALICE, "Quelle est la capitale de la France ?")
    await records.answer(ROOM, "$q1", "$a1", "Paris, sur la Seine.", policy=POLICY)
    await records.answer(ROOM, "$q1", "$a1b", "Lyon, sur le Rhône.", sibling=1, policy=POLICY)
    await records.vote(ROOM, "$a1", ALICE)
    await records.vote(ROOM, "$a1", CAROL)  # not consented: never counted
    await records.vote(ROOM, "$a1b", BOB, "down")
    await records.correction(ROOM, "$a1b", BOB, "Paris, évidemment.")
    await records.prompt(OTHER_ROOM, 1, "Answer like a naturalist.", BOB)
    await records.message(OTHER_ROOM, "$q2", BOB, "How many legs does a spider have?")
    await records.answer(OTHER_ROOM, "$q2", "$a2", "Eight legs.", prompt_version=1)
    await records.vote(OTHER_ROOM, "$a2", ALICE)
    await records.message(ROOM, "$q3", ALICE, "une arme artisanale ?")
    refused = {"stage": "question", "categories": ["S2"], "backend": "rules"}
    await records.answer(
        ROOM, "$q3", "$n3", REFUSED, status="error", policy=POLICY, refusal=refused
    )
    # carol's question, voted by alice: her words are in the context, so nothing of it goes
    await records.message(ROOM, "$q4", CAROL, CAROL_WORDS[0])
    await records.answer(ROOM, "$q4", "$a4", CAROL_WORDS[1])
    await records.vote(ROOM, "$a4", ALICE)


async def export_hf(folder: Path, out: Path) -> int:
    from bot.export.hf import export_dataset

    return await export_dataset(settings_for(folder), ExportRequest("hf", out), None)


def load(out: Path, name: str, cache: Path) -> list[dict[str, Any]]:
    """A config as `datasets` loads it, its JSON text columns decoded as the card says."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"  # a local folder: the hub is never asked
    from datasets import load_dataset

    loaded = load_dataset(str(out), name, split="train", cache_dir=str(cache)).to_list()
    for row in loaded:
        row["metadata"]["sampling"] = json.loads(row["metadata"]["sampling"])
        if name == "oasst":
            row["prompt"] = json.loads(row["prompt"])
    return loaded


def front_matter(out: Path) -> tuple[dict[str, Any], str]:
    text = (out / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def texts_of(value: Any) -> list[str]:
    """Every message text in a row, wherever the format puts it."""
    if isinstance(value, dict):
        found = [value[k] for k in ("content", "text", "comment") if isinstance(value.get(k), str)]
        return found + [t for item in value.values() for t in texts_of(item)]
    if isinstance(value, list):
        return [t for item in value for t in texts_of(item)]
    return []


async def test_every_config_loads_with_exactly_the_jsonl_rows(records, tmp_path, monkeypatch):
    from bot.export import hf

    # a batch per question: several row groups (the other tests write one partial batch)
    monkeypatch.setattr(hf, "BATCH_ROWS", 1)
    await conversations(records)
    out = tmp_path / "dataset"
    total = await export_hf(tmp_path, out)
    expected = {name: await rows(tmp_path, name) for name in FORMATS}
    assert all(expected.values()), {n: len(r) for n, r in expected.items()}  # none empty
    assert total == sum(len(r) for r in expected.values())
    for name in FORMATS:
        loaded = load(out, name, tmp_path / "hf-cache")
        assert loaded == expected[name], name
        assert not any(w in json.dumps(loaded, ensure_ascii=False) for w in CAROL_WORDS), name
    groups = {n: pq.ParquetFile(out / n / DATA_FILE).num_row_groups for n in FORMATS}
    assert groups["kto"] == 2 and groups["openwebui"] == 2, groups
    # the folder is the export's alone: 0700 folders, 0600 files, no .part left
    assert not (tmp_path / "dataset.part").exists()
    for path in [out, *out.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


async def test_the_card_parses_counts_the_rows_and_holds_no_text(records, tmp_path):
    await conversations(records)
    out = tmp_path / "dataset"
    await export_hf(tmp_path, out)
    meta, body = front_matter(out)
    expected = {name: await rows(tmp_path, name) for name in FORMATS}
    assert meta["license"] == "cc-by-4.0" and meta["language"] == ["en", "fr"]
    assert meta["pretty_name"] and "text-generation" in meta["task_categories"]
    assert [c["config_name"] for c in meta["configs"]] == list(FORMATS)
    for config in meta["configs"]:
        (files,) = config["data_files"]
        assert files["split"] == "train" and (out / files["path"]).is_file()
    counts = {i["config_name"]: i["splits"][0]["num_examples"] for i in meta["dataset_info"]}
    assert counts == {name: len(found) for name, found in expected.items()}
    for name in FORMATS:
        assert f"| {name} | {len(expected[name])} |" in body, name
    assert "| m | " in body and "version 1" in body and "opt-in" in body and "HMAC" in body
    written = {t for found in expected.values() for t in texts_of(found)}
    written |= {"Quelle est la capitale", "Paris", "spider", *CAROL_WORDS}
    card = (out / "README.md").read_text(encoding="utf-8")
    leaked = [t for t in written if t.strip() and t in card]
    assert not leaked, leaked
    # no person's id, pseudonymous or not
    people = {i for found in expected.values() for r in found for i in r["metadata"]["rater_ids"]}
    assert people and not [i for i in people if i in card]
    assert "@alice" not in card and "!room" not in card


async def test_formats_without_rows_are_left_out_and_an_empty_folder_is_used(records, tmp_path):
    """`datasets` cannot load a split of no rows: such a format has no file and no config."""
    await records.consent(ALICE)
    await records.message(ROOM, "$q1", ALICE, "question")
    await records.answer(ROOM, "$q1", "$a1", "réponse")
    await records.vote(ROOM, "$a1", ALICE)
    out = tmp_path / "dataset"
    out.mkdir()  # made by the operator beforehand: empty, so replaced
    await export_hf(tmp_path, out)
    meta, body = front_matter(out)
    present = ["sft", "kto", "oasst", "openwebui"]
    assert [c["config_name"] for c in meta["configs"]] == present
    assert [i["config_name"] for i in meta["dataset_info"]] == present
    assert sorted(p.name for p in out.iterdir()) == sorted([*present, "README.md"])
    assert "| dpo | 0 |" in body and "| refusal | 0 |" in body
    for name in present:
        assert len(load(out, name, tmp_path / "hf-cache")) == 1, name
    assert stat.S_IMODE(out.stat().st_mode) == 0o700


async def test_a_failed_export_leaves_no_folder(records, tmp_path, monkeypatch):
    from bot.export import hf

    await conversations(records)

    written = hf.as_record

    def broken(name: str, row: dict[str, Any]) -> dict[str, Any]:
        if name == "dpo":  # after sft and kto are written
            raise OSError(28, "No space left on device")
        return written(name, row)

    monkeypatch.setattr(hf, "as_record", broken)
    with pytest.raises(ExportError, match="No space left"):
        await export_hf(tmp_path, tmp_path / "dataset")
    assert not (tmp_path / "dataset").exists() and not (tmp_path / "dataset.part").exists()


@pytest.mark.parametrize("planted", ["part link", "part folder", "out link", "out file"])
async def test_what_is_already_there_is_refused_and_left_alone(records, tmp_path, planted):
    await conversations(records)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out, part = tmp_path / "dataset", tmp_path / "dataset.part"
    where = part if planted.startswith("part") else out
    if planted.endswith("link"):
        where.symlink_to(elsewhere)
    elif planted.endswith("folder"):
        where.mkdir()
    else:
        where.write_text("someone else's")
    with pytest.raises(ExportError, match=r"already exists|a file or a link"):
        await export_hf(tmp_path, out)
    assert list(elsewhere.iterdir()) == []
    assert where.is_symlink() or where.is_dir() or where.read_text() == "someone else's"


async def test_the_command_line_writes_the_folder_and_refuses_a_full_one(
    records, tmp_path, capsys, monkeypatch
):
    await conversations(records)
    settings_for(tmp_path)
    out = tmp_path / "dataset"
    argv = ["export", "--config", str(tmp_path / "config.toml"), "--format", "hf",
            "--out", str(out)]  # fmt: skip
    for key in [k for k in os.environ if k.startswith("LUCIE_BOT_")]:
        monkeypatch.delenv(key)  # the test's configuration file alone
    assert await asyncio.to_thread(main, argv) == 0
    assert capsys.readouterr().out.strip() == f"{parquet_rows(out)} rows written to {out}"
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert await asyncio.to_thread(main, argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not empty" in err and "Traceback" not in err, err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def parquet_rows(out: Path) -> int:
    return sum(pq.ParquetFile(out / name / DATA_FILE).metadata.num_rows for name in FORMATS)


def test_a_field_the_schema_lacks_is_an_error_not_a_silent_loss():
    from bot.export.hf import as_record

    metadata = {"sampling": {}, "consent": {"scope": "opt_in", "notice_versions": [1]}}
    row = {"messages": [{"role": "user", "content": "x"}], "metadata": metadata}
    assert as_record("sft", row)["metadata"]["sampling"] == "{}"
    row = {"messages": [{"role": "user", "content": "x", "name": "y"}], "metadata": {"sampling": 1}}
    with pytest.raises(RuntimeError, match=r"messages\.name"):
        as_record("sft", row)


def test_pyarrow_is_not_loaded_when_the_bot_starts():
    probe = (
        "import sys, bot.cli, bot.app\n"
        "print([m for m in ('pyarrow', 'bot.export.hf') if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_hostile_names_neither_break_the_card_nor_make_markup():
    """A model's name comes from whatever server answered; the licence and the bot's name from
    the configuration. None of them may make the YAML unreadable or the page show an image (a
    tracker), a tag or a link, nor break the title over two lines."""
    model = 'evil\x85![img](https://tracker.example/p.png)<img src=x onerror="alert(1)">|x'
    licence = "ma\x7flicence\u2028[clic](https://evil.example) <b>\u202egras</b>\ufffe"
    bot_name = "Lucie\nname: injected\r\n# <script>x</script>\u2029`code`"
    tally = Tally()
    tally.add("kto", {"metadata": {
        "language": "fr\x85", "model": model, "prompt_version": 1, "source": "vote",
        "consent": {"notice_versions": [1]}, "prompt_sha256": "a", "policy_sha256": None,
        "created_at": "2024-01-01T00:00:00Z",
    }})  # fmt: skip
    context = CardContext(
        licence=licence, collection="opt_in", notice_version=1, default_lang="fr",
        bot_name=bot_name, scrubbed=True, since_ms=0, one_room=False,
        exported_at=datetime(2024, 1, 2, tzinfo=UTC),
    )  # fmt: skip
    text = card(tally, context, {"kto": "kto/train.parquet"})
    _, head, body = text.split("---\n", 2)
    meta = yaml.safe_load(head)
    assert meta["license"] == "other"
    assert meta["license_name"] == "ma licence [clic](https://evil.example) <b>gras</b>"
    assert meta["pretty_name"] == (
        "Lucie name: injected # <script>x</script> `code`: consented conversations and feedback"
    )
    assert meta["language"] == ["fr"]
    assert "name" not in meta  # the bot's name made no key of its own
    for raw in ("<img", "<b>", "<script", "](", "\x85", "\x7f", "\u2028", "\u2029", "\u202e"):
        assert raw not in body, raw
    title = body.strip().splitlines()[0]
    assert title.startswith("# Lucie name: injected \\# &lt;script&gt;") and "feedback" in title
    (row,) = [line for line in body.splitlines() if line.startswith("| evil")]
    assert row.count(" | ") == len(FORMATS)  # the name's "|" made no column of its own
