"""Export benchmark: a database holding 1,000,000 votes, exported in every format.

Run from the repository root: `.venv/bin/python -m bench.export --votes 1000000`.
Builds the database through the bot's own migrations, then runs `lucie-bot export` as a separate
process per format and prints rows, seconds and that process's peak memory as Markdown.

`--compare-with PATH` also exports with another checkout of lucie-bot (an older commit, say
`git worktree add /tmp/export-old HEAD`), in the same run so that the load of the machine weighs
on both alike: each checkout builds the same database through its own migrations, the two
exports of each format run one after the other (in turns, `--rounds` times), and their files
must be the same bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bot.export import FORMATS
from bot.storage.store import Store

VOTES_PER_ANSWER = 10
PEOPLE = 1000
ROOMS = 20
BOT = "@lucie:bench.example"
# one question in REFUSED_EVERY more, refused before the model: the refusal format's rows
REFUSED_EVERY = 20
REFUSAL = json.dumps({"stage": "question", "categories": ["S2"], "backend": "llama_guard"})
ROOT = Path(__file__).resolve().parents[1]


async def build(data_dir: Path, votes: int, seed: int, clock: int | None = None) -> int:
    """Questions, answers, votes (10 an answer), some labels and corrections; most people
    consented, some did not; a few questions refused. Returns the number of answers. The same
    seed and clock (ms) make the same rows."""
    rng = random.Random(seed)
    store = await Store.open(data_dir / "lucie-bot.sqlite3")
    conn = store.db.conn
    answers = votes // VOTES_PER_ANSWER
    people = [f"@person{i}:bench.example" for i in range(PEOPLE)]
    now = (int(time.time() * 1000) if clock is None else clock) - answers * 1000
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
        messages: list[tuple[str, str, str, str | None, str, int, str | None, int]] = []
        rows, vote_rows, labels, corrections, refused = [], [], [], [], []
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
            if n % REFUSED_EVERY == 0:
                asked, notice = f"$x{n}", f"$n{n}"
                # every person in turn (not the askers of these answers: one in ten consents)
                asker = (n // REFUSED_EVERY) % PEOPLE
                body = f"Question {n} interdite : comment fabriquer l'objet {n % 89} ?"
                messages.append(
                    (asked, room, people[asker], f"Personne {asker}", body, ts, None, 0)
                )
                shown = f"Je ne peux pas répondre à cette demande (S2). [{n}]"
                messages.append((notice, room, BOT, None, shown, ts + 100, asked, 1))
                refused.append((room, asked, ts, notice, json.dumps([asked]), shown, ts + 100))
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
            "INSERT INTO answers (room_id, question_event_id, question_ts, answer_event_id, "
            "status, context_event_ids, text, created_at, finished_at, refusal) "
            "VALUES (?, ?, ?, ?, 'error', ?, ?, 0, ?, ?)",
            [(*row, REFUSAL) for row in refused],
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


@dataclass(frozen=True)
class Run:
    seconds: float
    cpu: float  # user and system seconds of the export process
    peak: float  # MiB
    rows: int
    digest: str  # of the file written


def run_export(config: Path, name: str, out: Path, tree: Path = ROOT) -> Run:
    """One `lucie-bot export` by the checkout at tree, as a process of its own."""
    out.unlink(missing_ok=True)
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
        cwd=tree,  # python -m puts the working folder first: that checkout's bot is run
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.monotonic() - started
    if process.returncode != 0:
        raise SystemExit(
            f"export {name} ({tree}) failed: "
            f"{process.stderr.read().decode() if process.stderr else ''}"
        )
    digest, rows = hashlib.sha256(), 0
    with out.open("rb") as handle:
        for line in handle:
            digest.update(line)
            rows += 1
    cpu = usage.ru_utime + usage.ru_stime
    return Run(elapsed, cpu, usage.ru_maxrss / 1024, rows, digest.hexdigest())


# builds with this file's build() but the bot (migrations, store) of the working folder's checkout
_BUILD = (
    "import asyncio, importlib.util, sys\n"
    "from pathlib import Path\n"
    "spec = importlib.util.spec_from_file_location('bench_export', sys.argv[1])\n"
    "bench = sys.modules['bench_export'] = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(bench)\n"
    "print(asyncio.run(bench.build(Path(sys.argv[2]), *map(int, sys.argv[3:]))))\n"
)


def build_with(tree: Path, folder: Path, votes: int, seed: int, clock: int) -> tuple[int, Path]:
    """The database and a configuration for it, made by the checkout at tree."""
    data_dir = folder / "data"
    data_dir.mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-c", _BUILD, __file__, str(data_dir), str(votes), str(seed), str(clock)],
        cwd=tree,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"building with {tree} failed: {done.stderr}")
    config = folder / "config.toml"
    config.write_text(
        f'data_dir = "{data_dir}"\n[matrix]\nhomeserver = "http://127.0.0.1:1"\n'
        f'user_id = "{BOT}"\npassword = "unused"\n'
        '[data]\npseudonym_secret = "bench-secret-of-at-least-32-characters"\n'
    )
    return int(done.stdout.split()[-1]), config


def describe(votes: int, answers: int, size: float, built: float | None) -> None:
    print(f"## {time.strftime('%Y-%m-%d')}: export of {votes:,} votes\n")
    print(
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}"
    )
    print(
        f"- database: {answers:,} answers with {VOTES_PER_ANSWER} votes each from "
        f"{PEOPLE} people (one in ten never consented), a label on one answer in 7, a "
        f"correction on one in 13, and {answers // REFUSED_EVERY:,} questions refused before "
        f"the model; {size:.0f} MiB, "
        + (f"built in {built:.0f} s\n" if built is not None else "built by an earlier run\n")
    )


def compare(folder: Path, old: Path, formats: list[str], args: argparse.Namespace) -> None:
    """Both checkouts on the same rows, each format's exports one after the other."""
    clock = int(time.time() * 1000)
    started = time.monotonic()
    built: float | None = None
    if (folder / "old" / "config.toml").is_file():  # built by an earlier run (--folder)
        answers, new_config = args.votes // VOTES_PER_ANSWER, folder / "new" / "config.toml"
        old_config = folder / "old" / "config.toml"
    else:
        answers, new_config = build_with(ROOT, folder / "new", args.votes, args.seed, clock)
        _, old_config = build_with(old, folder / "old", args.votes, args.seed, clock)
        built = time.monotonic() - started  # both databases
    size = (folder / "new" / "data" / "lucie-bot.sqlite3").stat().st_size / 2**20
    describe(args.votes, answers, size, built)
    print(f"- before: {old} (`{_commit(old)}`); after: {ROOT} (`{_commit(ROOT)}` and changes)")
    print(f"- best of {args.rounds} runs each, old and new in turns\n")
    print(
        "| format | rows | seconds before | seconds after | ratio | CPU s before | CPU s after "
        "| peak MiB before | peak MiB after | same bytes |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in formats:
        befores: list[Run] = []
        afters: list[Run] = []
        for turn in range(args.rounds):
            pair = [("old", old, old_config), ("new", ROOT, new_config)]
            for side, tree, config in pair if turn % 2 == 0 else pair[::-1]:
                run = run_export(config, name, folder / f"{side}-{name}.jsonl", tree)
                (befores if side == "old" else afters).append(run)
        before = min(befores, key=lambda run: run.seconds)
        after = min(afters, key=lambda run: run.seconds)
        same = {run.digest for run in befores + afters} == {after.digest}
        print(
            f"| {name} | {after.rows:,} | {before.seconds:.1f} | {after.seconds:.1f} "
            f"| {before.seconds / after.seconds:.1f}x | {min(r.cpu for r in befores):.1f} "
            f"| {min(r.cpu for r in afters):.1f} | {max(r.peak for r in befores):.0f} "
            f"| {max(r.peak for r in afters):.0f} | {'yes' if same else 'NO'} |",
            flush=True,
        )
        if not same:
            raise SystemExit(f"{name}: the two checkouts wrote different rows")


def _commit(tree: Path) -> str:
    found = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True
    )
    return found.stdout.strip() or "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--votes", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--format", action="append", choices=FORMATS, help="default: all")
    parser.add_argument("--compare-with", type=Path, help="another checkout, run on the same rows")
    parser.add_argument("--rounds", type=int, default=1, help="exports per checkout and format")
    parser.add_argument(
        "--folder",
        type=Path,
        help="work here and keep it; with --compare-with, reuse its databases",
    )
    args = parser.parse_args()
    formats = args.format or list(FORMATS)
    if args.folder is not None:
        args.folder.mkdir(parents=True, exist_ok=True)
    folder = args.folder or Path(tempfile.mkdtemp(prefix="lucie-export-bench-"))
    try:
        if args.compare_with is not None:
            compare(folder, args.compare_with.resolve(), formats, args)
            return
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
        describe(args.votes, answers, size, built)
        print("| format | rows | seconds | peak memory of the export process |")
        print("| --- | --- | --- | --- |")
        for name in formats:
            run = run_export(config, name, folder / f"{name}.jsonl")
            print(f"| {name} | {run.rows:,} | {run.seconds:.1f} | {run.peak:.0f} MiB |")
    finally:
        if not args.keep and args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            print(f"\nkept: {folder}")


if __name__ == "__main__":
    main()
