"""The export's fast paths write exactly the rows of the straightforward one, on a database like
a real one (conversations of several turns, regenerations, corrections, labels, people who
consented, never did or withdrew, names and identifiers in the texts, refusals, edits): feedback
read before contexts and questions skipped when they can make no row, questions straddling
batches, masked texts, pseudonyms and per-answer metadata remembered, rows encoded and written a
question at a time. The reference below reads in one batch, keeps nothing from one text or row
to the next, tries every name in turn and encodes each row with json.dumps."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import re
from typing import Any

import pytest

import bot.storage.export_reader as export_reader
from bot import paths
from bot.config import Settings
from bot.export import FORMATS
from bot.export.formats import BUILDERS, REFUSAL_FORMATS, RowMaker
from bot.export.privacy import NameMask, Pseudonyms, _fold_char, _is_word, scrub, sha256
from bot.export.source import Answer, ExportSource
from bot.export.writer import ExportRequest, export
from bot.guard.pii import mask_personal_data
from bot.texts import PromptTexts
from tests.test_export_db import BOT, OTHER_ROOM, ROOM, settings_for

PEOPLE = [f"@{first}.{last}-interieur.gouv.fr:localhost" for first, last in (
    ("jean-pierre", "dupont"), ("élodie", "martin"), ("marc", "durand"), ("inès", "petit"),
    ("paul", "bernard"), ("zoé", "robert"), ("luc", "richard"), ("anne", "moreau"),
)]  # fmt: skip
NAMES = ["Jean-Pierre Dupont [Intérieur]", "Élodie Martin", "Marc", None, "Paul Bernard",
         "Zoé Robert (DGSI)", "Luc", "Anne Moreau"]  # fmt: skip
SAYINGS = [
    "Bonjour, une question sur les congés",
    "Mon IBAN est FR76 3000 6000 0112 3456 7890 189, mon numéro 06 12 34 56 78",
    "écrivez à jean.dupont@interieur.gouv.fr ou voyez https://exemple.fr/aide",
    "Élodie Martin et jean-pierre en ont parlé à @marc.durand-interieur.gouv.fr:localhost",
    "Le 12 rue de la Paix, 75002 Paris, ouvre à 9 h",
    "Qu’en pense Zoé ? Et Anne Moreau ?",
    "sécu 2 55 08 14 168 025 38, ça reste entre nous",
    "www.service-public.fr explique tout, voir aussi le +33 6 12 34 56 78",
    "un texte sans rien de personnel, juste des mots",
]
REFUSAL = {"stage": "question", "categories": ["S2"], "backend": "llama_guard"}
REPLACED = {"stage": "answer", "categories": ["S9"], "backend": "rules"}


class Database:
    """Rows as the bot writes them: random but seeded, so a failure can be replayed."""

    def __init__(self, records: Any, seed: int) -> None:
        self.records, self.conn, self.rng = records, records.conn, random.Random(seed)
        self.count = 0

    def _id(self, prefix: str) -> str:
        self.count += 1
        return f"${prefix}{self.count}"

    async def build(self, conversations: int) -> None:
        rng = self.rng
        for index, person in enumerate(PEOPLE):
            if index % 4 != 3:
                await self.records.consent(person)
            if index == 5:
                await self.records.consent(person, action="no")  # withdrawn since
        for conversation in range(conversations):
            room = ROOM if conversation % 3 else OTHER_ROOM
            context: list[str] = []
            for _ in range(rng.randint(1, 4)):
                context = await self._turn(room, context[-4:])

    async def _turn(self, room: str, earlier: list[str]) -> list[str]:
        rng = self.rng
        asker = rng.randrange(len(PEOPLE))
        question = self._id("q")
        body = rng.choice(SAYINGS)
        if rng.random() < 0.5:
            body = f"Lucie, {body}"
        await self.records.message(room, question, PEOPLE[asker], body, NAMES[asker])
        context = [*earlier, question]
        if rng.random() < 0.05:  # refused before the model: a notice, never a training turn
            await self.records.answer(room, question, self._id("n"), "Je ne peux pas (S2).",
                                      status="error", context=context, refusal=REFUSAL)  # fmt: skip
            return context
        answers = []
        for sibling in range(rng.choice([1, 1, 1, 2, 3])):
            answer = self._id("a")
            text = f"{rng.choice(SAYINGS)} ({sibling}) {rng.choice(SAYINGS)}"
            refusal = REPLACED if rng.random() < 0.03 else None
            await self.records.answer(room, question, answer, text, sibling=sibling,
                                      context=context, refusal=refusal)  # fmt: skip
            answers.append(answer)
            await self._feedback(room, answer)
        if rng.random() < 0.05:  # edited after the model read it
            await self.conn.execute(
                "UPDATE messages SET edited_at = ? WHERE room_id = ? AND event_id = ?",
                (self.records.ts * 2, room, question),
            )
        return [*context, answers[0]]

    async def _feedback(self, room: str, answer: str) -> None:
        rng = self.rng
        for voter in rng.sample(PEOPLE, rng.randint(0, 5)):
            await self.records.vote(room, answer, voter, rng.choice(["up", "up", "down"]))
        if rng.random() < 0.1:
            ts = self.records._tick()
            await self.conn.execute(
                "INSERT INTO votes (reaction_event_id, answer_event_id, room_id, sender, vote, "
                "raw_key, ts, withdrawn_at) VALUES (?, ?, ?, ?, 'up', '+', ?, ?)",
                (self._id("w"), answer, room, rng.choice(PEOPLE), ts, ts + 1),
            )
        for _ in range(rng.choice([0, 0, 1, 2])):
            ts = self.records._tick()
            await self.conn.execute(
                "INSERT INTO labels (reaction_event_id, answer_event_id, room_id, sender, label, "
                "raw_key, ts) VALUES (?, ?, ?, ?, ?, '✂️', ?)",
                (self._id("l"), answer, room, rng.choice(PEOPLE), rng.choice(["too_long", "wrong"]),
                 ts),
            )  # fmt: skip
        if rng.random() < 0.15:
            await self.records.correction(room, answer, rng.choice(PEOPLE), rng.choice(SAYINGS))


class PlainPseudonyms(Pseudonyms):
    def of(self, kind: str, value: str) -> str:
        digest = hmac.new(self._key, f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()
        return f"{kind}_{digest[:20]}"


class PlainNames:
    """Every name of the first word met tried in turn, the longest first."""

    def __init__(self, names: set[str]) -> None:
        self.by_word: dict[str, list[tuple[int, str]]] = {}
        for name in sorted(names):
            folded = "".join(_fold_char(char) for char in name.strip())
            first = next(iter(_WORDS.finditer(folded)), None)
            if len(folded) < NameMask.MIN_LENGTH or first is None:
                continue
            entries = self.by_word.setdefault(first.group(0), [])
            if (first.start(), folded) not in entries:
                entries.append((first.start(), folded))
        for entries in self.by_word.values():
            entries.sort(key=lambda entry: -len(entry[1]))

    def __call__(self, text: str) -> str:
        folded = "".join(_fold_char(char) for char in text)
        spans: list[tuple[int, int]] = []
        end = 0
        for word in _WORDS.finditer(folded):
            for offset, name in self.by_word.get(word.group(0), ()):
                start = word.start() - offset
                stop = start + len(name)
                if start < end or not folded.startswith(name, start):
                    continue
                if _is_word(folded, start - 1) or _is_word(folded, stop):
                    continue
                spans.append((start, stop))
                end = stop
                break
        for start, stop in reversed(spans):
            text = text[:start] + "<NAME>" + text[stop:]
        return text


_WORDS = re.compile(r"\w+")


class PlainRowMaker(RowMaker):
    """Nothing remembered: every text masked, every id and hash computed, row after row."""

    plain_names: PlainNames

    def text(self, value: str) -> str:
        value = self.plain_names(mask_personal_data(value).text)
        return scrub(value) if self.scrub_texts else value

    def conversation_id(self, answer: Answer) -> str:
        self._last = None
        return super().conversation_id(answer)

    def metadata(self, answer: Answer, source: str, raters: list[str]) -> dict[str, Any]:
        self._last = None
        found = super().metadata(answer, source, raters)
        assert found["prompt_sha256"] == sha256(answer.prompt_text)
        return found


async def reference_lines(settings: Settings, name: str) -> list[str]:
    data = settings.data
    reader = await export_reader.SqliteExportReader.open(paths.database(settings.data_dir))
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
        names = await source.people_names()
        secret = data.pseudonym_secret.get_secret_value() if data.pseudonym_secret else ""
        maker = PlainRowMaker(
            PlainPseudonyms(secret), source, data.licence, data.scrub, data.collection,
            NameMask(names),
        )  # fmt: skip
        maker.plain_names = PlainNames(names)
        lines = []
        async for group in source.questions(0, None, name in REFUSAL_FORMATS):  # every question
            for row in BUILDERS[name](maker, group):
                lines.append(json.dumps(row, ensure_ascii=False))
        return lines
    finally:
        await reader.close()


@pytest.mark.parametrize("seed", [1, 2])
async def test_fast_export_writes_the_rows_of_the_plain_one(records, tmp_path, monkeypatch, seed):
    await Database(records, seed).build(conversations=120)
    await records.conn.commit()
    settings = settings_for(tmp_path)

    monkeypatch.setattr(export_reader, "BATCH", 100_000)  # the reference: one batch
    expected = {name: await reference_lines(settings, name) for name in FORMATS}
    # small batches: questions straddle them, each batch's lookups are its own
    monkeypatch.setattr(export_reader, "BATCH", 7)
    for name in FORMATS:
        out = tmp_path / f"{name}.jsonl"
        await export(settings, ExportRequest(name, out), None)
        assert out.read_text(encoding="utf-8").splitlines() == expected[name], name

    # a database worth comparing: every format has rows, and they were masked
    assert all(len(lines) > 3 for lines in expected.values()), {
        name: len(lines) for name, lines in expected.items()
    }
    text = "\n".join(expected["sft"] + expected["oasst"])
    for mark in ("<NAME>", "[IBAN]", "[PHONE]", "[EMAIL]", "[NIR]", "[ADDRESS]", "<URL>"):
        assert mark in text, mark
    assert BOT not in text
