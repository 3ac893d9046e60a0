"""Exports read straight from a real database (its schema made by the migrations): consent to the
notice in force, answers made while collection was off, one vote per person, rooms as walls,
names, and the output file never written through a planted link."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from bot.config import Settings, load_settings
from bot.core.policy import policy_sha256
from bot.export.writer import ExportError, ExportRequest, export

ROOT = Path(__file__).resolve().parents[1]
BOT = "@lucie:localhost"
SECRET = "0123456789abcdef0123456789abcdef-export-tests"
ROOM, OTHER_ROOM = "!room:localhost", "!other:localhost"
ALICE, BOB, CAROL = "@alice:localhost", "@bob:localhost", "@carol:localhost"


class Records:
    """Rows as the bot writes them, without going through the bot."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn
        self.ts = 1_700_000_000_000

    def _tick(self) -> int:
        self.ts += 1000
        return self.ts

    async def room(self, room_id: str, collection: int = 1) -> None:
        await self.conn.execute(
            "INSERT INTO rooms (room_id, joined_at, collection) VALUES (?, ?, ?)",
            (room_id, self.ts, collection),
        )

    async def consent(self, user: str, version: int = 1, action: str = "yes") -> None:
        await self.conn.execute(
            "INSERT INTO consents (user_id, action, notice_version, ts) VALUES (?, ?, ?, ?)",
            (user, action, version, self._tick()),
        )

    async def message(
        self, room: str, event_id: str, sender: str, body: str, name: str | None = None
    ) -> None:
        await self.conn.execute(
            "INSERT INTO messages (room_id, event_id, sender, sender_name, body, ts, from_bot) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (room, event_id, sender, name, body, self._tick(), int(sender == BOT)),
        )

    async def answer(
        self,
        room: str,
        question: str,
        answer: str | None,
        text: str,
        collected: int = 1,
        *,
        sibling: int = 0,
        status: str = "complete",
        context: list[str] | None = None,
        refusal: dict[str, Any] | None = None,
        policy: str | None = None,
        prompt_version: int = 0,
    ) -> None:
        """An answer row, and the bot's message when it has one. policy: the operators' text
        the model read first, kept once by its hash as the bot keeps it."""
        ts = self._tick()
        policy_hash = None
        if policy is not None:
            policy_hash = policy_sha256(policy)
            await self.conn.execute(
                "INSERT OR IGNORE INTO policies (sha256, lang, text, first_used) "
                "VALUES (?, 'fr', ?, ?)",
                (policy_hash, policy, ts),
            )
        await self.conn.execute(
            "INSERT INTO answers (room_id, question_event_id, sibling, question_ts, "
            "answer_event_id, status, context_event_ids, model, sampling, text, created_at, "
            "finished_at, collected, refusal, policy_sha256, prompt_version) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 'm', '{}', ?, ?, ?, ?, ?, ?, ?)",
            (room, question, sibling, ts, answer, status, json.dumps(context or [question]),
             text, ts, ts, collected, json.dumps(refusal) if refusal else None, policy_hash,
             prompt_version),
        )  # fmt: skip
        if answer is not None:
            await self.message(room, answer, BOT, text)

    async def prompt(self, room: str, version: int, text: str, set_by: str) -> None:
        await self.conn.execute(
            "INSERT INTO prompts (room_id, version, text, set_by, set_at) VALUES (?, ?, ?, ?, ?)",
            (room, version, text, set_by, self._tick()),
        )

    async def correction(self, room: str, answer: str, sender: str, text: str) -> None:
        ts = self._tick()
        await self.conn.execute(
            "INSERT INTO corrections (event_id, answer_event_id, room_id, sender, text, ts) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (f"$c{ts}", answer, room, sender, text, ts),
        )

    async def vote(self, room: str, answer: str, sender: str, vote: str = "up") -> None:
        ts = self._tick()
        await self.conn.execute(
            "INSERT INTO votes (reaction_event_id, answer_event_id, room_id, sender, vote, "
            "raw_key, ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (f"$r{ts}", answer, room, sender, vote, "+", ts),
        )


def settings_for(folder: Path, notice_version: int = 1, secret: str = SECRET) -> Settings:
    config = folder / "config.toml"
    config.write_text(
        f"data_dir = '{folder}'\n[matrix]\nhomeserver = 'http://h'\nuser_id = '{BOT}'\n"
        f"password = 'p'\n[data]\npseudonym_secret = '{secret}'\n"
        f"notice_version = {notice_version}\n"
    )
    return load_settings(config)


async def rows(folder: Path, format_name: str, notice_version: int = 1) -> list[dict[str, Any]]:
    out = folder / f"{format_name}.jsonl"
    await export(settings_for(folder, notice_version), ExportRequest(format_name, out), None)
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


async def export_command(folder: Path) -> subprocess.CompletedProcess[str]:
    """`lucie-bot export` on the folder's configuration, as an operator runs it."""
    settings_for(folder)
    command = [sys.executable, "-m", "bot", "export", "--config", str(folder / "config.toml"),
               "--format", "kto", "--out", str(folder / "kto.jsonl")]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUCIE_BOT_")}
    return await asyncio.to_thread(
        subprocess.run, command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=60
    )


async def test_consent_to_an_older_notice_does_not_count(records, tmp_path):
    await records.consent(ALICE, version=1)
    await records.consent(BOB, version=2)
    for person, n in ((ALICE, 1), (BOB, 2)):
        await records.message(ROOM, f"$q{n}", person, f"question {n}")
        await records.answer(ROOM, f"$q{n}", f"$a{n}", f"réponse {n}")
        await records.vote(ROOM, f"$a{n}", person)
    assert len(await rows(tmp_path, "kto", notice_version=1)) == 2
    raised = await rows(tmp_path, "kto", notice_version=2)
    assert [r["completion"][0]["content"] for r in raised] == ["réponse 2"]
    assert raised[0]["metadata"]["consent"]["notice_versions"] == [2]


async def test_answers_made_while_collection_was_off_are_never_exported(records, tmp_path):
    await records.consent(ALICE)
    await records.message(ROOM, "$q1", ALICE, "pendant la pause")
    await records.answer(ROOM, "$q1", "$a1", "réponse hors collecte", collected=0)
    await records.message(ROOM, "$q2", ALICE, "après la reprise")
    await records.answer(ROOM, "$q2", "$a2", "réponse collectée")
    for answer in ("$a1", "$a2"):
        await records.vote(ROOM, answer, ALICE)
    for name in ("kto", "sft", "oasst", "openwebui"):
        text = json.dumps(await rows(tmp_path, name), ensure_ascii=False)
        assert "réponse collectée" in text and "hors collecte" not in text, name
        assert "pendant la pause" not in text, name


async def test_a_person_counts_once_per_answer(records, tmp_path):
    for person in (ALICE, BOB):
        await records.consent(person)
    await records.message(ROOM, "$q1", ALICE, "question")
    await records.answer(ROOM, "$q1", "$a1", "réponse")
    for _ in range(3):  # 👍, 👍️ and 👍🏽: three reactions, one opinion
        await records.vote(ROOM, "$a1", ALICE, "up")
    await records.vote(ROOM, "$a1", BOB, "down")
    assert await rows(tmp_path, "kto") == []  # one up, one down: no verdict
    assert await rows(tmp_path, "sft") == []
    assert len(await rows(tmp_path, "openwebui")) == 2
    await records.vote(ROOM, "$a1", BOB, "up")  # bob changes his mind: his latest vote stands
    (row,) = await rows(tmp_path, "kto")
    assert row["label"] is True and len(row["metadata"]["rater_ids"]) == 2
    (tree,) = await rows(tmp_path, "oasst")
    assert tree["prompt"]["replies"][0]["review_count"] == 2


async def test_records_of_another_room_never_join(records, tmp_path):
    for person in (ALICE, BOB):
        await records.consent(person)
    # the question's text is gone from its room (redacted); an event of another room, a
    # non-consenting person's, carries the same id
    await records.answer(ROOM, "$q1", "$a1", "réponse un")
    await records.message(OTHER_ROOM, "$q1", CAROL, "secret de carol")
    await records.vote(ROOM, "$a1", ALICE)
    assert await rows(tmp_path, "kto") == []
    # votes and corrections on an answer of the same id in another room do not count here
    await records.message(ROOM, "$q2", ALICE, "question deux")
    await records.answer(ROOM, "$q2", "$a2", "réponse deux")
    await records.vote(OTHER_ROOM, "$a2", BOB, "down")
    await records.conn.execute(
        "INSERT INTO corrections (event_id, answer_event_id, room_id, sender, text, ts) "
        "VALUES ('$c', '$a2', ?, ?, 'correction venue d''ailleurs', 1)",
        (OTHER_ROOM, BOB),
    )
    assert await rows(tmp_path, "kto") == []
    assert await rows(tmp_path, "dpo") == []
    await records.vote(ROOM, "$a2", ALICE)
    (row,) = await rows(tmp_path, "kto")
    assert row["label"] is True and len(row["metadata"]["rater_ids"]) == 1


async def test_tchap_names_from_the_database_are_masked(records, tmp_path):
    agent = "@marie-helene.leveque-interieur.gouv.fr:agent.interieur.tchap.gouv.fr"
    await records.consent(agent)
    name = "Marie-Hélène Lévêque [Intérieur]"
    await records.message(ROOM, "$q1", agent, "Marie-Hélène Lévêque: mon chef Lévêque ?", name)
    await records.answer(ROOM, "$q1", "$a1", "Bonjour Marie-Hélène, voyez l'Intérieur.")
    await records.vote(ROOM, "$a1", agent)
    text = json.dumps(await rows(tmp_path, "sft"), ensure_ascii=False)
    for leaked in ("Marie", "Hélène", "Lévêque", "leveque", "helene"):
        assert leaked not in text, leaked
    assert "<NAME>: mon chef <NAME> ?" in text and "Bonjour <NAME>, voyez l'Intérieur." in text


@pytest.mark.parametrize("planted", ["link", "file"])
async def test_a_planted_part_file_is_refused_and_left_alone(records, tmp_path, planted):
    target = tmp_path / "elsewhere.txt"
    target.write_text("not the export's")
    part = tmp_path / "kto.jsonl.part"
    if planted == "link":
        part.symlink_to(target)
    else:
        part.write_text("someone else's")
    with pytest.raises(ExportError, match=r"kto\.jsonl\.part already exists"):
        await rows(tmp_path, "kto")
    assert target.read_text() == "not the export's"
    assert part.is_symlink() if planted == "link" else part.read_text() == "someone else's"
    assert not (tmp_path / "kto.jsonl").exists()

    result = await export_command(tmp_path)  # from the command line: one line
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "already exists" in result.stderr and "Traceback" not in result.stderr
    part.unlink()
    await rows(tmp_path, "kto")  # once removed, the export runs


async def test_a_database_of_another_schema_version_is_named(records, tmp_path):
    await records.conn.execute("PRAGMA user_version = 3")
    with pytest.raises(ExportError, match=r"schema version 3.*start the bot once"):
        await rows(tmp_path, "kto")


async def test_a_damaged_database_is_one_line(tmp_path):
    (tmp_path / "lucie-bot.sqlite3").write_bytes(b"not a database" * 100)
    result = await export_command(tmp_path)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "cannot read the database" in result.stderr and "Traceback" not in result.stderr


async def test_an_answer_whose_question_was_edited_afterwards_is_not_exported(records, tmp_path):
    """What is exported is what the model read: an edit made after the answer changes the
    question kept (people may take back what they wrote), so that answer no longer goes out."""
    await records.consent(ALICE)
    for n in (1, 2):
        await records.message(ROOM, f"$q{n}", ALICE, f"question {n}")
        await records.answer(ROOM, f"$q{n}", f"$a{n}", f"réponse {n}")
        await records.vote(ROOM, f"$a{n}", ALICE)
    await records.conn.execute(
        "UPDATE messages SET body = 'question 1, réécrite', edited_at = ? WHERE event_id = '$q1'",
        (records.ts + 10_000,),
    )
    for name in ("sft", "kto", "oasst", "openwebui"):
        text = json.dumps(await rows(tmp_path, name), ensure_ascii=False)
        assert "réponse 2" in text and "réponse 1" not in text and "réécrite" not in text, name
