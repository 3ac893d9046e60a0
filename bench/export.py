"""Export benchmark: a database holding 1,000,000 votes, exported in every format.

Run from the repository root: `.venv/bin/python -m bench.export --votes 1000000`.
Builds the database through the bot's own migrations, then runs `lucie-bot export` as a separate
process per format and prints rows, seconds and that process's peak memory as Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bot.export import FORMATS
from bot.storage.store import Store

VOTES_PER_ANSWER = 10
PEOPLE = 1000
ROOMS = 20
BOT = "@lucie:bench.example"


async def build(data_dir: Path, votes: int, seed: int) -> int:
    """Questions, answers, votes (10 an answer), some labels and corrections; most people
    consented, some did not. Returns the number of answers."""
    rng = random.Random(seed)
    store = await Store.open(data_dir / "lucie-bot.sqlite3")
    conn = store.db.conn
    answers = votes // VOTES_PER_ANSWER
    people = [f"@person{i}:bench.example" for i in range(PEOPLE)]
    now = int(time.time() * 1000) - answers * 1000
    await conn.executemany(
        "INSERT INTO rooms (room_id, joined_at) VALUES (?, 0)",
        [(f"!room{r}:bench.example",) for r in range(ROOMS)],
    )
    await conn.executemany(
        "INSERT INTO consents (user_id, action, notice_version, ts) VALUES (?, ?, 1, 0)",
        [(p, "yes" if i % 10 else "no") for i, p in enumerate(people)],
    )
    chunk = 5000
    for start in range(0, answers, chunk):
        messages, rows, vote_rows, labels, corrections = [], [], [], [], []
        for n in range(start, min(answers, start + chunk)):
            room = f"!room{n % ROOMS}:bench.example"
            author = people[n % PEOPLE]
            question, answer, ts = f"$q{n}", f"$a{n}", now + n * 1000
            body = f"Question {n} : que sais-tu du sujet numéro {n % 977} ?"
            messages.append((question, room, author, f"Personne {n % PEOPLE}", body, ts, None, 0))
            text = f"Réponse {n} : " + " ".join(f"mot{k}" for k in range(40))
            messages.append((answer, room, BOT, None, text, ts + 500, question, 1))
            rows.append(
                (
                    room,
                    question,
                    ts,
                    answer,
                    json.dumps([{"role": "user", "content": body}]),
                    json.dumps([question]),
                    json.dumps({"temperature": 0.7}),
                    text,
                    ts + 900,
                )
            )
            for voter in rng.sample(people, VOTES_PER_ANSWER):
                vote = "up" if rng.random() < 0.7 else "down"
                vote_rows.append((f"$r{n}-{voter}", answer, room, voter, vote, "👍", ts + 2000))
            if n % 7 == 0:
                labels.append(
                    (f"$l{n}", answer, room, people[(n + 1) % PEOPLE], "too_long", "✂️", ts + 2500)
                )
            if n % 13 == 0:
                corrections.append(
                    (
                        f"$c{n}",
                        answer,
                        room,
                        people[(n + 2) % PEOPLE],
                        f"Meilleure réponse {n}",
                        ts + 3000,
                    )
                )
        await conn.executemany(
            "INSERT INTO messages (event_id, room_id, sender, sender_name, body, ts, reply_to, "
            "from_bot) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            messages,
        )
        await conn.executemany(
            "INSERT INTO answers (room_id, question_event_id, question_ts, answer_event_id, "
            "status, request_messages, context_event_ids, model, sampling, text, created_at, "
            "finished_at) VALUES (?, ?, ?, ?, 'complete', ?, ?, 'Lucie-7B-Instruct', ?, ?, 0, ?)",
            rows,
        )
        await conn.executemany(
            "INSERT INTO votes (reaction_event_id, answer_event_id, room_id, sender, vote, "
            "raw_key, ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
            vote_rows,
        )
        await conn.executemany(
            "INSERT INTO labels (reaction_event_id, answer_event_id, room_id, sender, label, "
            "raw_key, ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
            labels,
        )
        await conn.executemany(
            "INSERT INTO corrections (event_id, answer_event_id, room_id, sender, text, ts) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            corrections,
        )
        await conn.commit()
    await store.close()
    return answers


def run_export(config: Path, name: str, out: Path) -> tuple[float, float, int]:
    """Seconds, peak MiB of the export process alone, rows written."""
    started = time.monotonic()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bot",
            "export",
            "--config",
            str(config),
            "--format",
            name,
            "--out",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.monotonic() - started
    if process.returncode != 0:
        raise SystemExit(
            f"export {name} failed: {process.stderr.read().decode() if process.stderr else ''}"
        )
    with out.open("rb") as handle:
        rows = sum(1 for _ in handle)
    return elapsed, usage.ru_maxrss / 1024, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--votes", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="lucie-export-bench-"))
    try:
        data_dir = folder / "data"
        data_dir.mkdir()
        started = time.monotonic()
        answers = asyncio.run(build(data_dir, args.votes, args.seed))
        built = time.monotonic() - started
        size = (data_dir / "lucie-bot.sqlite3").stat().st_size / 2**20
        config = folder / "config.toml"
        config.write_text(
            f'data_dir = "{data_dir}"\n[matrix]\nhomeserver = "http://127.0.0.1:1"\n'
            f'user_id = "{BOT}"\npassword = "unused"\n'
            '[data]\npseudonym_secret = "bench-secret-of-at-least-32-characters"\n'
        )
        print(f"## {time.strftime('%Y-%m-%d')}: export of {args.votes:,} votes\n")
        print(
            f"- machine: {platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}"
        )
        print(
            f"- database: {answers:,} answers with {VOTES_PER_ANSWER} votes each from "
            f"{PEOPLE} people (one in ten never consented), a label on one answer in 7, a "
            f"correction on one in 13; {size:.0f} MiB, built in {built:.0f} s\n"
        )
        print("| format | rows | seconds | peak memory of the export process |")
        print("| --- | --- | --- | --- |")
        for name in FORMATS:
            seconds, peak, rows = run_export(config, name, folder / f"{name}.jsonl")
            print(f"| {name} | {rows:,} | {seconds:.1f} | {peak:.0f} MiB |")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
