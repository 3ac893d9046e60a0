"""Capacity benchmark: the bot's figures next to the loopback Synapse's own ceiling.

Run from the repository root: `.venv/bin/python -m bench.capacity` (options: --help).
In one run it measures
- the ceiling: events per second plain clients send to Synapse, serially and concurrently, into
  one room, into rooms of their own, and into DMs whose other member syncs as the bot does;
- throughput: answered questions per second with an instant stand-in model, for 1..N rooms at once,
  and the ratio of the Synapse events those answers need to the DM ceiling (like for like) and to
  the bare many-rooms ceiling;
- latency: question to first visible text and to final text (p50/p95/p99) for a model that takes
  2 s and for one streaming 30 tokens/s, against concurrency, plotted to a PNG;
- cost: the bot's CPU per answer, its resident memory with 10, 100, ... joined rooms, and the
  time from start to the first answer with every room joined.
It prints Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sqlite3
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from bench.load import cpu_times, memory_mib, percentile
from bot.matrix.transport import SYNC_FILTER
from tests.support.bot_process import BotProcess
from tests.support.fake_llm import Behaviour, FakeLLM
from tests.support.synapse import Synapse

LONG = " ".join(f"mot{k}" for k in range(60))


@dataclass
class Person:
    user_id: str
    token: str


class Client:
    """A plain Matrix client over HTTP, lighter than a full SDK so that Synapse is the limit."""

    def __init__(self, base: str) -> None:
        self.http = httpx.AsyncClient(base_url=f"{base}/_matrix/client/v3", timeout=120)

    async def send(self, person: Person, room: str, body: str) -> str:
        response = await self.http.put(
            f"/rooms/{quote(room)}/send/m.room.message/{uuid.uuid4().hex}",
            json={"msgtype": "m.text", "body": body},
            headers={"Authorization": f"Bearer {person.token}"},
        )
        response.raise_for_status()
        return str(response.json()["event_id"])

    async def create_dm(self, person: Person, bot_id: str) -> str:
        response = await self.http.post(
            "/createRoom",
            json={"invite": [bot_id], "is_direct": True, "preset": "private_chat"},
            headers={"Authorization": f"Bearer {person.token}"},
        )
        response.raise_for_status()
        return str(response.json()["room_id"])

    async def join(self, person: Person, room: str) -> None:
        response = await self.http.post(
            f"/rooms/{quote(room)}/join",
            json={},
            headers={"Authorization": f"Bearer {person.token}"},
        )
        response.raise_for_status()

    async def sync_until(self, person: Person, stop: asyncio.Event) -> None:
        """Sync in a loop, with the bot's filter and long-poll, until stop is set."""
        params = {"timeout": "2000", "filter": json.dumps(SYNC_FILTER)}
        while not stop.is_set():
            response = await self.http.get(
                "/sync", params=params, headers={"Authorization": f"Bearer {person.token}"}
            )
            response.raise_for_status()
            params["since"] = response.json()["next_batch"]

    async def create_room(self, person: Person) -> str:
        response = await self.http.post(
            "/createRoom",
            json={"preset": "public_chat"},
            headers={"Authorization": f"Bearer {person.token}"},
        )
        response.raise_for_status()
        return str(response.json()["room_id"])


def register(synapse: Synapse, prefix: str, count: int) -> list[Person]:
    """Fresh accounts, exempt from rate limits: the load is the point, not the limits."""
    accounts = [synapse.new_user(prefix, exempt=True) for _ in range(count)]
    return [Person(account.user_id, account.access_token) for account in accounts]


async def many_rooms_ceiling(
    client: Client,
    people: list[Person],
    events: int,
    reader: Person | None = None,
    syncing: bool = False,
) -> float:
    """Events per second with 20 senders at once, each in a room of its own (as answers are).

    With a reader, each room is a DM with that reader; a syncing reader syncs throughout as the
    bot does, which is the shape of room and the homeserver work every answer's events meet."""
    if reader is None:
        rooms = [await client.create_room(people[i % len(people)]) for i in range(20)]
    else:
        rooms = [await client.create_dm(people[i % len(people)], reader.user_id) for i in range(20)]
        for room in rooms:
            await client.join(reader, room)
    queue = list(range(events))

    async def worker(index: int) -> None:
        while queue:
            queue.pop()
            await client.send(people[index % len(people)], rooms[index], "chacun chez soi")

    stop = asyncio.Event()
    sync = asyncio.create_task(client.sync_until(reader, stop)) if reader and syncing else None
    started = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(20)))
    rate = events / (time.monotonic() - started)
    if sync is not None:
        stop.set()
        await sync
    return rate


async def ceiling(
    client: Client, people: list[Person], serial: int, concurrent: int
) -> tuple[float, float]:
    """Events per second Synapse accepts from plain clients: one at a time, then many at once."""
    room = await client.create_room(people[0])
    started = time.monotonic()
    for n in range(serial):
        await client.send(people[0], room, f"série {n}")
    serial_rate = serial / (time.monotonic() - started)
    for person in people[1:]:
        await client.join(person, room)
    queue = list(range(concurrent))

    async def worker(person: Person) -> None:
        while queue:
            queue.pop()
            await client.send(person, room, "en parallèle")

    started = time.monotonic()
    await asyncio.gather(*(worker(people[i % len(people)]) for i in range(20)))
    return serial_rate, concurrent / (time.monotonic() - started)


async def answered(bot: BotProcess, questions: list[str], within: float) -> list[dict[str, Any]]:
    marks = ",".join("?" * len(questions))
    deadline = time.monotonic() + within
    while True:
        rows = await bot.query(
            f"SELECT * FROM answers WHERE question_event_id IN ({marks}) "
            "AND status IN ('complete', 'cut', 'error')",
            *questions,
        )
        if len(rows) >= len(questions) or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.2)


async def ask_all(client: Client, rooms: list[tuple[Person, str]], text: str) -> list[str]:
    return list(await asyncio.gather(*(client.send(p, room, text) for p, room in rooms)))


async def run(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="lucie-capacity-"))
    synapse = Synapse(folder / "synapse")
    llm = FakeLLM()
    client: Client | None = None
    bot: BotProcess | None = None
    lines: list[str] = []
    say = lines.append
    try:
        synapse.configure()
        synapse.start()
        llm.start()
        assert synapse.process is not None
        synapse_pid = synapse.process.process.pid
        client = Client(synapse.url)
        people = register(synapse, "person", args.people)

        many = await many_rooms_ceiling(client, people, args.ceiling_concurrent)
        (reader,) = register(synapse, "reader", 1)
        quiet = await many_rooms_ceiling(client, people, args.ceiling_concurrent, reader)
        dm = await many_rooms_ceiling(client, people, args.ceiling_concurrent, reader, True)
        serial, concurrent = await ceiling(
            client, people, args.ceiling_serial, args.ceiling_concurrent
        )

        account = synapse.new_user("lucie", exempt=True)
        bot = BotProcess(
            folder / "bot",
            synapse,
            account,
            llm,
            # load from a few senders is the point here, not something to limit
            bot={
                "edit_interval_s": args.edit_interval,
                "shutdown_grace_s": 5,
                "questions_per_person": 0,
            },
            llm_settings={"max_concurrent_requests": max(args.rooms)},
            data={"collection": "off"},
            guard={"quotas": {"enabled": False}},
            log_level="INFO",
        )
        bot.start()
        assert bot.process is not None
        rooms: list[tuple[Person, str]] = []
        memory: dict[int, float] = {}
        marks = sorted(set(args.memory_at) | {max(args.rooms)})
        created = time.monotonic()
        for target in marks:
            while len(rooms) < target:
                batch = min(10, target - len(rooms))
                owners = [people[(len(rooms) + i) % len(people)] for i in range(batch)]
                made = await asyncio.gather(*(client.create_dm(p, bot.user_id) for p in owners))
                rooms += list(zip(owners, made, strict=True))
            await until_joined(bot, len(rooms), args.timeout)
            await asyncio.sleep(2)  # a few syncs with every room in them
            memory[target] = memory_mib(bot.process.pid, "VmRSS")
        creation_s = time.monotonic() - created

        # throughput with an instant model
        llm.default = Behaviour()
        throughput = []
        for count in args.rooms:
            chosen = rooms[:count]
            user0, system0 = cpu_times(bot.process.pid)
            synapse0 = sum(cpu_times(synapse_pid))
            questions = await ask_all(client, chosen, "Combien font deux et deux ?")
            rows = await answered(bot, questions, args.timeout)
            user1, system1 = cpu_times(bot.process.pid)
            synapse_cpu = sum(cpu_times(synapse_pid)) - synapse0
            span = (
                max(r["finished_at"] for r in rows) - min(r["question_ts"] for r in rows)
            ) / 1000
            events = sum(2 + r["edits"] for r in rows) / len(rows)  # question, reply, its edits
            cpu = (user1 - user0 + system1 - system0) / len(rows)
            throughput.append((count, len(rows), len(rows) / span, events, cpu, synapse_cpu / span))

        # latency against concurrency, two model shapes
        latency: dict[str, list[tuple[int, dict[str, float]]]] = {}
        shapes = {
            "2 s model": Behaviour(first_delay=2.0, text="Quatre."),
            "30 tokens/s": Behaviour(token_delay=1 / 30, text=LONG),
        }
        for name, shape in shapes.items():
            llm.default = shape
            latency[name] = []
            for count in args.latency_rooms:
                rows = []
                for _ in range(args.rounds):
                    questions = await ask_all(client, rooms[:count], "Une question ?")
                    rows += await answered(bot, questions, args.timeout)
                latency[name].append((count, summarise(rows)))

        # start-up with every room joined
        llm.default = Behaviour()
        bot.stop()
        started = time.monotonic()
        bot.start()
        question = await client.send(*rooms[0], "Tu es là ?")
        await answered(bot, [question], args.timeout)
        startup_s = time.monotonic() - started
        startup_rss = memory_mib(bot.process.pid, "VmRSS")
    finally:
        if client is not None:
            await client.http.aclose()
        if bot is not None:
            bot.stop()
        llm.close()
        synapse.stop()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)

    say(f"## {time.strftime('%Y-%m-%d')}: capacity against the Synapse ceiling\n")
    say(
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {platform.platform()}"
    )
    say(
        f"- Synapse on loopback (SQLite), everyone exempt from rate limits; {args.people} people "
        f"in {len(rooms)} DM rooms with the bot (made in {creation_s:.0f} s); bot edit "
        f"interval {args.edit_interval} s, one model slot per room\n"
    )
    say("| Synapse ceiling | events/s |\n| --- | --- |")
    say(f"| one client, one event at a time ({args.ceiling_serial} events) | {serial:.1f} |")
    say(f"| 20 senders at once, one room ({args.ceiling_concurrent} events) | {concurrent:.1f} |")
    say(f"| 20 senders at once, a room each ({args.ceiling_concurrent} events) | {many:.1f} |")
    say(
        f"| 20 senders at once, a DM each with one reader not syncing "
        f"({args.ceiling_concurrent} events) | {quiet:.1f} |"
    )
    say(
        f"| 20 senders at once, a DM each with one reader syncing as the bot does "
        f"({args.ceiling_concurrent} events) | {dm:.1f} |\n"
    )
    say(
        "| rooms asking at once | answers | answers/s | Synapse events per answer | "
        "share of the DM ceiling | share of the a-room-each ceiling | bot CPU per answer | "
        "Synapse busy |"
    )
    say("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for count, done, rate, events, cpu, busy in throughput:
        # answers go to many DM rooms, each with a reader that syncs (the bot): that ceiling
        # is like for like; the bare one, rooms with nobody else in them, is shown beside it
        events_rate = rate * events
        say(
            f"| {count} | {done} | {rate:.1f} | {events:.1f} | {events_rate / dm:.2f} | "
            f"{events_rate / many:.2f} | {1000 * cpu:.1f} ms | {100 * busy:.0f} % of a core |"
        )
    say("")
    say(
        "| model | rooms at once | first visible text p50 / p95 / p99 | final text p50 / p95 / "
        "p99 | first visible after the first token, p50 |"
    )
    say("| --- | --- | --- | --- | --- |")
    for name, points in latency.items():
        for count, stats in points:
            say(
                f"| {name} | {count} | {stats['first50']:.2f} / {stats['first95']:.2f} / "
                f"{stats['first99']:.2f} s | {stats['final50']:.2f} / {stats['final95']:.2f} / "
                f"{stats['final99']:.2f} s | {stats['after_token50']:.2f} s |"
            )
    say("")
    say("| joined rooms | bot resident memory |\n| --- | --- |")
    for count, mib in sorted(memory.items()):
        say(f"| {count} | {mib:.0f} MiB |")
    say(
        f"\nStart-up with {len(rooms)} joined rooms: {startup_s:.1f} s from launching the "
        f"bot to its first answer (resident memory then {startup_rss:.0f} MiB)."
    )
    print("\n".join(lines))
    if args.plot:
        plot(latency, args.plot)
        print(f"\n![latency against concurrency]({args.plot.name})")


def summarise(rows: list[dict[str, Any]]) -> dict[str, float]:
    done = [r for r in rows if r["status"] == "complete" and r["first_visible_at"]]
    first = [(r["first_visible_at"] - r["question_ts"]) / 1000 for r in done]
    final = [(r["finished_at"] - r["question_ts"]) / 1000 for r in done]
    after = [
        (r["first_visible_at"] - r["first_token_at"]) / 1000 for r in done if r["first_token_at"]
    ]
    return {
        "first50": percentile(first, 0.5),
        "first95": percentile(first, 0.95),
        "first99": percentile(first, 0.99),
        "final50": percentile(final, 0.5),
        "final95": percentile(final, 0.95),
        "final99": percentile(final, 0.99),
        "after_token50": percentile(after, 0.5) if after else float("nan"),
    }


async def until_joined(bot: BotProcess, count: int, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            rows = await bot.query("SELECT COUNT(*) AS n FROM rooms WHERE notice_sent = 1")
        except sqlite3.OperationalError:  # the bot is still creating its database
            rows = [{"n": 0}]
        if rows[0]["n"] >= count:
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"the bot had not joined {count} rooms within {within} s")


def plot(latency: dict[str, list[tuple[int, dict[str, float]]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(latency), figsize=(11, 4), sharey=False)
    for axis, (name, points) in zip(axes, latency.items(), strict=True):
        counts = [count for count, _ in points]
        for key, label, style in (
            ("first", "first visible text", "-"),
            ("final", "final text", "--"),
        ):
            for q, marker in (("50", "o"), ("95", "s"), ("99", "^")):
                values = [stats[f"{key}{q}"] for _, stats in points]
                axis.plot(counts, values, style, marker=marker, label=f"{label} p{q}")
        axis.set_xscale("log")
        axis.set_xticks(counts, [str(count) for count in counts])
        axis.minorticks_off()
        axis.set_title(f"stand-in model: {name}")
        axis.set_xlabel("rooms asking at once")
        axis.set_ylabel("seconds after the question")
        axis.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    numbers = lambda text: [int(n) for n in text.split(",")]  # noqa: E731
    parser.add_argument("--rooms", type=numbers, default=[1, 10, 50, 100, 500])
    parser.add_argument("--latency-rooms", type=numbers, default=[1, 10, 50, 100])
    parser.add_argument("--memory-at", type=numbers, default=[10, 100, 1000])
    parser.add_argument("--rounds", type=int, default=3, help="latency rounds per point")
    parser.add_argument("--people", type=int, default=10)
    parser.add_argument("--ceiling-serial", type=int, default=300)
    parser.add_argument("--ceiling-concurrent", type=int, default=1000)
    parser.add_argument("--edit-interval", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--plot", type=Path, help="write the latency plot to this PNG")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
