"""docs/report.png: `lucie-bot report` on a demo-like database, as Chromium draws it.

Run from the repository root: `.venv/bin/python -m bench.report_screenshot` (needs Debian's
Chromium: `apt-get install -y chromium`). Builds two months of made-up answers through the bot's
own Store and migrations (three rooms, prompt versions, two models, regenerations, votes,
reason labels, corrections, errors and refusals), writes the report and screenshots it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path

from bot.cli import main as lucie_bot
from bot.storage.store import Store
from tests.support import chromium

BOT = "@lucie:demo.example"
DAY_MS = 86_400_000
DAYS = 60
PEOPLE = [f"@person{n}:demo.example" for n in range(40)]
MODELS = ["Lucie-7B-Instruct", "Lucie-7B-Instruct-v1.1"]
# room -> the prompt versions it went through, and how often each version's answers are liked
ROOMS = {
    "!support:demo.example": [(0, 0.62), (1, 0.70), (2, 0.81)],
    "!juridique:demo.example": [(0, 0.58), (1, 0.66)],
    "!rh:demo.example": [(0, 0.64)],
}
LABELS = [("too_long", 5), ("missing_sources", 3), ("incorrect", 2), ("accurate", 2)]


class Demo:
    def __init__(self, store: Store, seed: int) -> None:
        self.store = store
        self.rng = random.Random(seed)
        self.start = int(time.time() * 1000) - DAYS * DAY_MS
        self.n = 0
        self.answers: list[tuple] = []
        self.votes: list[tuple] = []
        self.labels: list[tuple] = []
        self.corrections: list[tuple] = []
        self.refused: list[tuple[str, str, int]] = []

    def _id(self, kind: str) -> str:
        self.n += 1
        return f"${kind}{self.n}"

    def question(self, room: str, day: int) -> None:
        """A question, its answer, and sometimes a regeneration under another version."""
        versions = ROOMS[room]
        current = versions[min(len(versions) - 1, day * len(versions) // DAYS)]
        siblings = [current]
        if len(versions) > 1 and self.rng.random() < 0.25:
            siblings.append(self.rng.choice([v for v in versions if v != current]))
        question, ts = self._id("q"), self.start + day * DAY_MS + self.rng.randrange(DAY_MS)
        for sibling, (version, liked) in enumerate(siblings):
            self.answer(room, question, sibling, ts + sibling * 60_000, version, liked)

    def answer(
        self, room: str, question: str, sibling: int, ts: int, version: int, liked: float
    ) -> None:
        event, roll = self._id("a"), self.rng.random()
        status, refusal = "complete", None
        if roll < 0.02:
            status = "error"
        elif roll < 0.05:
            status, refusal = "error", json.dumps({"stage": "question", "reasons": ["S2"]})
            self.refused.append((room, question, ts))
        model = MODELS[0] if ts < self.start + DAYS * DAY_MS * 0.6 else MODELS[1]
        self.answers.append(
            (room, question, sibling, ts, event, status, version, model, ts, ts, refusal)
        )
        if status != "complete":
            return
        for voter in self.rng.sample(PEOPLE, self.rng.randrange(0, 4)):
            vote = "up" if self.rng.random() < liked else "down"
            self.votes.append((self._id("v"), event, room, voter, vote, "+", ts + 600_000))
            if vote == "down" and self.rng.random() < 0.3:
                label = self.rng.choices([n for n, _ in LABELS], [w for _, w in LABELS])[0]
                self.labels.append((self._id("l"), event, room, voter, label, "+", ts + 700_000))
            if vote == "down" and self.rng.random() < 0.1:
                correction = (self._id("c"), event, room, voter, "…", ts + 800_000)
                self.corrections.append(correction)

    async def save(self) -> None:
        conn = self.store.db.conn
        await conn.executemany(
            "INSERT INTO answers (room_id, question_event_id, sibling, question_ts, "
            "answer_event_id, status, prompt_version, model, created_at, finished_at, refusal) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            self.answers,
        )
        for table, rows in (("votes", self.votes), ("labels", self.labels)):
            column = "vote" if table == "votes" else "label"
            await conn.executemany(
                f"INSERT INTO {table} (reaction_event_id, answer_event_id, room_id, sender, "
                f"{column}, raw_key, ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        await conn.executemany(
            "INSERT INTO corrections (event_id, answer_event_id, room_id, sender, text, ts) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            self.corrections,
        )
        await conn.executemany(
            "INSERT INTO incidents (room_id, answer_id, stage, category, backend, action, "
            "sender, ts) SELECT ?, id, 'question', 'S2', 'rules', 'refuse', 'hash', ? "
            "FROM answers WHERE room_id = ? AND question_event_id = ?",
            [(room, ts, room, question) for room, question, ts in self.refused],
        )


async def build(data_dir: Path, seed: int = 3) -> None:
    store = await Store.open(data_dir / "lucie-bot.sqlite3")
    try:
        for room in ROOMS:
            await store.rooms.add_room(room, 0)
        for person in PEOPLE:
            await store.feedback.add_consent(person, "yes", 1, None, 0)
        demo = Demo(store, seed)
        for day in range(DAYS):
            for room, versions in ROOMS.items():
                for _ in range(demo.rng.randrange(2, 4 + 3 * len(versions))):
                    demo.question(room, day)
        await demo.save()
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/report.png"))
    parser.add_argument("--height", type=int, default=4000, help="the browser window's height")
    args = parser.parse_args()
    browser = chromium.find()
    if browser is None:
        raise SystemExit("Chromium is missing: apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="lucie-report-") as folder:
        data = Path(folder)
        asyncio.run(build(data))
        config = data / "config.toml"
        config.write_text(
            f"data_dir = '{data}'\n[matrix]\nhomeserver = 'http://h'\nuser_id = '{BOT}'\n"
            "password = 'p'\n[bot]\ndefault_lang = 'en'\n"
        )
        page = data / "report.html"
        if lucie_bot(["report", "--config", str(config), "--out", str(page)]) != 0:
            raise SystemExit("lucie-bot report failed")
        chromium.screenshot(browser, page, args.out.resolve(), 1200, args.height)
    print(f"screenshot written to {args.out}")


if __name__ == "__main__":
    main()
