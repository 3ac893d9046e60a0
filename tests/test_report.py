"""`lucie-bot report` on a real database made by the bot's own Store and migrations: the figures
on the page are the data's (consent rules included), nothing personal is on it, it needs no
network, and a real headless browser (Chromium) draws its plots."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.cli import main
from bot.core.incidents import IncidentRow
from bot.report.intervals import wilson
from bot.storage.store import Store
from tests.support import chromium

BOT = "@lucie:report.test"
ROOM, OFF_ROOM = "!roomA:report.test", "!roomB:report.test"
ALICE, BOB = "@alice:report.test", "@bob:report.test"
CAROL, DAVE = "@carol:report.test", "@dave:report.test"  # never consented; took it back
HOSTILE_MODEL = '<script>alert("m")</script>$\\frac{1}{0}$'
DAY = 86_400_000
START = int(datetime(2024, 3, 4, 10, tzinfo=UTC).timestamp() * 1000)  # a Monday


class Rows:
    """Rows as the bot writes them: answers and rooms by SQL, feedback through its stores."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.n = 0

    async def room(self, room_id: str, collection: int = 1) -> None:
        await self.store.db.write(
            "INSERT INTO rooms (room_id, joined_at, collection) VALUES (?, 0, ?)",
            room_id,
            collection,
        )

    async def answer(
        self,
        room: str,
        question: str,
        day: int,
        *,
        sibling: int = 0,
        version: int = 0,
        model: str = "m-one",
        status: str = "complete",
        refusal: bool = False,
    ) -> str:
        """An answer (and its question's message), made `day` days after START; its event id."""
        self.n += 1
        ts = START + day * DAY + self.n * 1000
        event = f"${question}-{sibling}"
        await self.store.db.write(
            "INSERT INTO answers (room_id, question_event_id, sibling, question_ts, "
            "answer_event_id, status, prompt_version, model, text, created_at, finished_at, "
            "refusal) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            room, question, sibling, ts, event, status, version, model,
            f"SECRET-ANSWER {question}", ts, ts,
            json.dumps({"stage": "question", "reasons": ["S1"]}) if refusal else None,
        )  # fmt: skip
        await self.store.db.write(
            "INSERT OR IGNORE INTO messages (room_id, event_id, sender, body, ts) "
            "VALUES (?, ?, ?, ?, ?)",
            room, question, ALICE, f"SECRET-QUESTION {question}", ts,
        )  # fmt: skip
        if refusal:
            answer_id = (await self.store.db.returning("SELECT MAX(id) AS id FROM answers"))["id"]
            await self.store.incidents.add(
                IncidentRow(room, answer_id, "question", "S1", "rules", "refuse", "f00d", None, ts)
            )
        return event

    async def vote(self, room: str, answer: str, sender: str, vote: str, day: int = 0) -> None:
        self.n += 1
        ts = START + day * DAY + self.n * 1000
        await self.store.feedback.add_vote(f"$v{self.n}", answer, room, sender, vote, "+", ts)

    async def label(self, room: str, answer: str, sender: str, label: str) -> None:
        self.n += 1
        await self.store.feedback.add_label(
            f"$l{self.n}", answer, room, sender, label, "✂️", START + self.n
        )

    async def correct(self, room: str, answer: str, sender: str, day: int = 0) -> None:
        """As `!lucie correct` does: the correction, and a 👎 from its author."""
        self.n += 1
        ts, event = START + day * DAY + self.n * 1000, f"$c{self.n}"
        await self.store.feedback.add_correction(event, answer, room, sender, "SECRET-FIX", ts)
        await self.store.feedback.add_vote(
            event, answer, room, sender, "down", "correction", ts, source="correction"
        )


async def build(folder: Path) -> None:
    """Room A collects data, room B switched collection off. Alice and Bob consented; Carol
    never did; Dave did, then took it back. Questions q1 and q2 were regenerated under the
    room's prompt version 2, and both times the votes preferred version 2."""
    store = await Store.open(folder / "lucie-bot.sqlite3")
    try:
        rows = Rows(store)
        await rows.room(ROOM)
        await rows.room(OFF_ROOM, collection=0)
        for person in (ALICE, BOB, DAVE):
            await store.feedback.add_consent(person, "yes", 1, ROOM, 1)
        await store.feedback.add_consent(DAVE, "no", 1, ROOM, 2)
        q1_old, q1_new = [
            await rows.answer(ROOM, "q1", 0, sibling=s, version=2 * s) for s in (0, 1)
        ]
        q2_old, q2_new = [
            await rows.answer(ROOM, "q2", 1, sibling=s, version=2 * s) for s in (0, 1)
        ]
        q3 = await rows.answer(ROOM, "q3", 2, version=2, model=HOSTILE_MODEL)
        await rows.answer(ROOM, "q4", 2, status="error")
        await rows.answer(ROOM, "q5", 2, status="error", refusal=True)
        off = await rows.answer(OFF_ROOM, "q6", 2)
        for person in (ALICE, BOB):
            await rows.vote(ROOM, q1_old, person, "down")
            await rows.vote(ROOM, q1_new, person, "up")
            await rows.vote(ROOM, q2_new, person, "up", day=1)
        await rows.vote(ROOM, q2_old, ALICE, "up", day=1)
        await rows.correct(ROOM, q1_old, BOB)
        for person, vote in ((ALICE, "up"), (CAROL, "up"), (DAVE, "down")):
            await rows.vote(ROOM, q3, person, vote, day=2)
        await rows.correct(ROOM, q3, CAROL, day=2)  # not counted: Carol never consented
        await rows.vote(OFF_ROOM, off, ALICE, "up", day=2)  # not counted: room B collects nothing
        for person, label in ((ALICE, "too_long"), (ALICE, "too_long"), (BOB, "too_long")):
            await rows.label(ROOM, q1_old, person, label)
        await rows.label(ROOM, q3, CAROL, "incorrect")
        await rows.label(ROOM, q3, ALICE, "incorrect")
    finally:
        await store.close()


def configure(folder: Path, collection: str = "opt_in", lang: str = "en") -> Path:
    config = folder / "config.toml"
    config.write_text(
        f"data_dir = '{folder}'\n[matrix]\nhomeserver = 'http://h'\nuser_id = '{BOT}'\n"
        f"password = 'p'\n[bot]\ndefault_lang = '{lang}'\n[data]\ncollection = '{collection}'\n"
    )
    return config


def report(folder: Path, *extra: str, collection: str = "opt_in", lang: str = "en") -> str:
    config, out = configure(folder, collection, lang), folder / "report.html"
    assert main(["report", "--config", str(config), "--out", str(out), *extra]) == 0
    return out.read_text(encoding="utf-8")


def cells(page: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is `first`."""
    for row in re.findall(r"<tr>(.*?)</tr>", page, re.S):
        found = re.findall(r"<td>(.*?)</td>", row, re.S)
        if found and found[0] == first:
            return found
    raise AssertionError(f"no row {first!r}")


def approval(up: int, total: int) -> str:
    low, high = wilson(up, total)
    return f"{100 * up / total:.1f} % [{100 * low:.1f}–{100 * high:.1f}]"


@pytest.fixture
async def folder(tmp_path: Path) -> Path:
    await build(tmp_path)
    return tmp_path


def test_the_figures_are_the_data_and_only_consented_feedback_counts(folder):
    page = report(folder)
    totals = re.search(r'<table class="totals">.*?</table>', page, re.S)
    assert totals is not None
    # 8 answers, one error, one refusal; votes: q1 2 down (Bob's correction is his latest,
    # still down) and 2 up, q2 1 + 2 up, q3 Alice's up only; Bob's correction only
    expected = ["8", "1", "1", "6", "2", "1", approval(6, 8)]
    assert re.findall(r"<td>(.*?)</td>", totals.group(0)) == expected
    # the default prompt (q1, q2 first answers, q4, q5, room B's q6) and room A's version 2
    assert cells(page, "default") == ["default", "5", "1", "2", approval(1, 3), "1"]
    assert cells(page, "R1 v2") == ["R1 v2", "3", "5", "0", approval(5, 5), "0"]
    assert cells(page, "m-one")[1:4] == ["7", "5", "2"]
    # labels: Alice's two ✂️ are one; Carol's ❌ does not count
    assert cells(page, "✂️ too_long") == ["✂️ too_long", "2"]
    assert cells(page, "❌ incorrect") == ["❌ incorrect", "1"]
    # two questions, both preferring version 2
    assert "2 preferences over 2 questions" in page
    assert cells(page, "R1 v2")  # in the ratings table too
    ratings = re.search(r"Prompt versions compared.*?</section>", page, re.S)
    assert ratings is not None and "<svg" in ratings.group(0)
    assert [row[3:] for row in _rows(ratings.group(0))] == [["2", "0"], ["0", "2"]]
    # per day: q1 on the first day, with its votes
    assert cells(page, "2024-03-04")[:5] == ["2024-03-04", "2", "2", "2", "1"]
    assert "From 2024-03-04 to 2024-03-06 (UTC), per day." in page


def _rows(html: str) -> list[list[str]]:
    found = [
        re.findall(r"<td>(.*?)</td>", row, re.S) for row in re.findall(r"<tr>(.*?)</tr>", html)
    ]
    return [row for row in found if row]


def test_nothing_personal_and_nothing_fetched(folder):
    page = report(folder)
    for secret in ("secret", "alice", "bob", "carol", "dave", "@"):
        assert secret not in page.lower(), secret
    # a model's name is text, escaped, never markup
    assert "<script" not in page and "&lt;script&gt;" in page
    for tag, attribute, value in re.findall(
        r"<(\w+)[^>]*?\s((?:xlink:)?href|src)=\"([^\"]*)\"", page
    ):
        assert value.startswith("#"), (tag, attribute, value)
    assert not re.search(r"url\((?!#)", page)
    assert "<link" not in page and "@import" not in page


def test_collection_off_counts_everyones_feedback_and_says_so(folder):
    page = report(folder, collection="off")
    totals = re.search(r'<table class="totals">.*?</table>', page, re.S)
    assert totals is not None
    # room B's vote, Dave's 👎 and Carol's correction (her latest vote: a 👎) now count
    assert re.findall(r"<td>(.*?)</td>", totals.group(0))[3:6] == ["7", "4", "2"]
    assert "data collection is off" in page


def test_since_room_and_language(folder):
    page = report(folder, "--since", "2024-03-05", "--room", ROOM, lang="fr")
    assert '<html lang="fr">' in page and "Ce qui est compté" in page
    assert "Salon : !roomA:report.test." in page
    assert cells(page, "par défaut")[:2] == ["par défaut", "3"]  # q2's first answer, q4, q5
    assert cells(page, "v2")[:4] == ["v2", "2", "3", "0"]


def test_a_missing_database_and_a_foreign_schema_are_one_line(tmp_path, capsys):
    config = configure(tmp_path)
    out = tmp_path / "r.html"
    assert main(["report", "--config", str(config), "--out", str(out)]) == 2
    assert "no database at" in capsys.readouterr().err
    (tmp_path / "lucie-bot.sqlite3").write_bytes(b"not a database at all" * 100)
    assert main(["report", "--config", str(config), "--out", str(out)]) != 0
    assert "cannot read the database" in capsys.readouterr().err
    assert not out.exists()


def test_without_matplotlib_the_command_says_so_in_one_line(folder, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name)
    )
    out = folder / "r.html"
    assert main(["report", "--config", str(configure(folder)), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "pip install matplotlib" in error and not out.exists()


def test_an_empty_database_gives_a_page_that_says_so(tmp_path):
    import asyncio

    asyncio.run(_empty(tmp_path))
    assert "No answer recorded in this range." in report(tmp_path)


async def _empty(folder: Path) -> None:
    await (await Store.open(folder / "lucie-bot.sqlite3")).close()


@pytest.fixture(scope="session")
def browser() -> str:
    """Debian's Chromium; installed on the spot in CI (as root), else the test is skipped. In
    CI a missing browser is a failure, not a skip: a skip would hide the page's breakage."""
    found = chromium.find()
    in_ci = os.environ.get("CI") == "true"
    if found is None and in_ci and os.geteuid() == 0:
        problem = chromium.install()
        found = chromium.find()
        if found is None:
            pytest.fail(f"Chromium could not be installed: {problem}")
    if found is None:
        if in_ci:
            pytest.fail("Chromium is missing (apt-get install -y chromium) and CI needs it")
        pytest.skip("Chromium is missing: apt-get install -y chromium (as root) to run this")
    return found


def test_a_real_browser_draws_the_plots_without_network(folder, browser):
    report(folder)
    page = folder / "report.html"
    dom = chromium.dump_dom(browser, page)
    svgs = re.findall(r"<svg\b.*?</svg>", dom, re.S)
    assert len(svgs) == 6, len(svgs)  # timeline, versions, models, ratings, rates and labels
    assert all(re.search(r"<path\b", svg) for svg in svgs)
    png = folder / "report.png"
    chromium.screenshot(browser, page, png)
    assert chromium.png_colours(png) > 50
