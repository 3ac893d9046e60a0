"""Streaming against one message per answer: the same bot, both ways, in one run.

Run from the repository root: `.venv/bin/python -m bench.streaming` (options: --help).
A real Synapse (SQLite, loopback), a stand-in model that answers like a busy GPU server (first
token after 0.5 s, then 40 tokens at 40/s), and two bots with the shipped defaults: one streams
(a first message, then edits), the other sends one message once the answer is complete
(`bot.streaming = false`). Their rooms ask at once, 10 then 50 rooms, the bots taking turns, so
both meet the same homeserver and the same noise. Per mode: final text p50 (question to the last
edit, from Synapse's timestamp), answers/s, Synapse events per answer, the bot's CPU per answer
and Synapse's, and the streaming bot's peak memory with 10 rooms. The Synapse ceiling measured in
the same run (events/s into DMs whose other member syncs, as every answer's events meet) is the
common yardstick.

With `--profile FILE`, py-spy samples the streaming bot during its 50-room rounds and writes
collapsed stacks to FILE (read them with `python -m bench.profile FILE`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.capacity import (
    Client,
    Person,
    answered,
    ask_all,
    many_rooms_ceiling,
    register,
    until_joined,
)
from bench.load import cpu_times, memory_mib, percentile
from tests.support.bot_process import BotProcess
from tests.support.fake_llm import Behaviour, FakeLLM
from tests.support.synapse import Synapse

MODES = ("streaming", "one message")


@dataclass
class Phase:
    answers: int = 0
    span_s: float = 0.0
    bot_cpu_s: float = 0.0
    synapse_cpu_s: float = 0.0
    events: int = 0
    final: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)

    def add(self, rows: list[dict[str, Any]], bot_cpu: float, synapse_cpu: float) -> None:
        self.answers += len(rows)
        self.span_s += (
            max(r["finished_at"] for r in rows) - min(r["question_ts"] for r in rows)
        ) / 1000
        self.bot_cpu_s += bot_cpu
        self.synapse_cpu_s += synapse_cpu
        self.events += sum(2 + r["edits"] for r in rows)  # the question, the reply, its edits
        done = [r for r in rows if r["status"] == "complete"]
        self.final += [(r["finished_at"] - r["question_ts"]) / 1000 for r in done]
        self.first += [
            (r["first_visible_at"] - r["question_ts"]) / 1000 for r in done if r["first_visible_at"]
        ]


def start_bot(
    folder: Path, synapse: Synapse, llm: FakeLLM, streaming: bool, args: argparse.Namespace
) -> BotProcess:
    account = synapse.new_user("lucie" if streaming else "plain", exempt=True)
    # the shipped defaults, but for the limits on how much one person may ask: a few senders
    # standing for many people is the point here
    settings: dict[str, Any] = {"questions_per_person": 0, "shutdown_grace_s": 5}
    if not streaming:  # unset when streaming: this runs on versions without the setting too
        settings["streaming"] = False
    llm_settings: dict[str, Any] = {"first_token_timeout_s": 60, "chunk_timeout_s": 30}
    if args.max_concurrent is not None:
        llm_settings["max_concurrent_requests"] = args.max_concurrent
    bot = BotProcess(
        folder,
        synapse,
        account,
        llm,
        bot={"edit_interval_s": 1.5, **settings},
        llm_settings=llm_settings,
        data={"collection": "off"},
        guard={"quotas": {"enabled": False}},
        log_level="INFO",
        python=args.bot_python or sys.executable,
    )
    bot.start()
    return bot


async def add_rooms(
    client: Client, people: list[Person], bot: BotProcess, rooms: list[tuple[Person, str]], n: int
) -> None:
    while len(rooms) < n:
        batch = min(10, n - len(rooms))
        owners = [people[(len(rooms) + i) % len(people)] for i in range(batch)]
        made = await asyncio.gather(*(client.create_dm(p, bot.user_id) for p in owners))
        rooms += list(zip(owners, made, strict=True))
    await until_joined(bot, n, 300)
    await asyncio.sleep(2)  # a few syncs with every room in them


async def one_round(
    client: Client, bot: BotProcess, rooms: list[tuple[Person, str]], synapse_pid: int, n: int
) -> tuple[list[dict[str, Any]], float, float]:
    assert bot.process is not None
    bot0, synapse0 = sum(cpu_times(bot.process.pid)), sum(cpu_times(synapse_pid))
    questions = await ask_all(client, rooms[:n], "Une question ?")
    rows = await answered(bot, questions, 600)
    # the last edit is recorded just after it lands: let the bot's own bookkeeping settle
    await asyncio.sleep(0.5)
    bot_cpu = sum(cpu_times(bot.process.pid)) - bot0
    synapse_cpu = sum(cpu_times(synapse_pid)) - synapse0
    if len(rows) < n:
        raise RuntimeError(f"only {len(rows)} of {n} answers came within 600 s")
    return rows, bot_cpu, synapse_cpu


def profile(pid: int, out: Path) -> subprocess.Popen[bytes]:
    py_spy = Path(sys.executable).with_name("py-spy")
    options = ["--format", "raw", "--rate", "200", "--nonblocking", "--threads"]
    return subprocess.Popen(
        [str(py_spy), "record", "--pid", str(pid), "--output", str(out), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def run(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="lucie-streaming-"))
    synapse = Synapse(folder / "synapse")
    llm = FakeLLM()
    client: Client | None = None
    bots: dict[str, BotProcess] = {}
    results: dict[tuple[str, int], Phase] = {}
    memory: dict[str, float] = {}
    spy: subprocess.Popen[bytes] | None = None
    modes: tuple[str, ...] = args.modes
    try:
        synapse.configure()
        synapse.start()
        llm.default = Behaviour(
            first_delay=args.first_token_s,
            token_delay=1 / args.token_rate,
            text=" ".join(f"mot{k}" for k in range(args.tokens)),
        )
        llm.start()
        assert synapse.process is not None
        synapse_pid = synapse.process.process.pid
        client = Client(synapse.url)
        people = register(synapse, "person", args.people)
        (reader,) = register(synapse, "reader", 1)
        ceiling = await many_rooms_ceiling(client, people, args.ceiling_events, reader, True)

        for mode in modes:
            folder_of = folder / mode.replace(" ", "-")
            bots[mode] = start_bot(folder_of, synapse, llm, mode == MODES[0], args)
        rooms: dict[str, list[tuple[Person, str]]] = {mode: [] for mode in modes}
        for count in args.rooms:
            for mode in modes:
                await add_rooms(client, people, bots[mode], rooms[mode], count)
            for mode in modes:
                results[(mode, count)] = Phase()
            if spy is None and args.profile and count == max(args.rooms):
                process = bots[modes[0]].process
                assert process is not None
                spy = profile(process.pid, args.profile)
            for repeat in range(args.repeats):
                # taking turns, each going first in one repeat out of two
                order = modes if repeat % 2 == 0 else modes[::-1]
                for mode in order:
                    rows, bot_cpu, synapse_cpu = await one_round(
                        client, bots[mode], rooms[mode], synapse_pid, count
                    )
                    results[(mode, count)].add(rows, bot_cpu, synapse_cpu)
            if count == min(args.rooms):
                for mode in modes:
                    process = bots[mode].process
                    assert process is not None
                    memory[mode] = memory_mib(process.pid)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
        if client is not None:
            await client.http.aclose()
        for bot in bots.values():
            bot.stop()
        llm.close()
        synapse.stop()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    report(args, ceiling, results, memory)


def report(
    args: argparse.Namespace,
    ceiling: float,
    results: dict[tuple[str, int], Phase],
    memory: dict[str, float],
) -> None:
    print(f"## {time.strftime('%Y-%m-%d')}: streaming against one message per answer\n")
    print(
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {platform.platform()}"
    )
    model_s = args.first_token_s + args.tokens / args.token_rate
    slots = args.max_concurrent or "as shipped"
    print(
        f"- stand-in model: first token after {args.first_token_s} s, then {args.tokens} tokens "
        f"at {args.token_rate:g}/s ({model_s:.2f} s an answer); the bots with the shipped "
        f"defaults (per-person limits and quotas off), model slots: {slots}; {args.repeats} "
        f"rounds per point, the bots taking turns; Synapse on loopback (SQLite), everyone "
        f"exempt from rate limits; bots run by {args.bot_python or 'the test environment'}"
    )
    print(
        f"- Synapse ceiling in this run: {ceiling:.1f} events/s (20 senders at once, a DM each "
        f"with one reader syncing as the bot does)\n"
    )
    print(
        "| rooms at once | mode | answers | final text p50 / p95 | first visible p50 | "
        "answers/s | events per answer | share of the ceiling | bot CPU per answer | "
        "Synapse CPU per answer |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    modes: tuple[str, ...] = args.modes
    for count in args.rooms:
        for mode in modes:
            phase = results[(mode, count)]
            rate = phase.answers / phase.span_s
            events = phase.events / phase.answers
            print(
                f"| {count} | {mode} | {phase.answers} | {percentile(phase.final, 0.5):.2f} / "
                f"{percentile(phase.final, 0.95):.2f} s | {percentile(phase.first, 0.5):.2f} s | "
                f"{rate:.1f} | {events:.2f} | {rate * events / ceiling:.2f} | "
                f"{1000 * phase.bot_cpu_s / phase.answers:.1f} ms | "
                f"{1000 * phase.synapse_cpu_s / phase.answers:.1f} ms |"
            )
    if len(modes) < 2:
        rounds = f"{min(args.rooms)}-room rounds"
        print(f"\nPeak resident memory (VmHWM) after the {rounds}: {memory[modes[0]]:.0f} MiB.")
        return
    print(
        "\n| rooms at once | final text p50, streaming ÷ one message | answers/s, streaming ÷ "
        "one message | bot CPU per answer, streaming ÷ one message |"
    )
    print("| --- | --- | --- | --- |")
    for count in args.rooms:
        on, off = results[(MODES[0], count)], results[(MODES[1], count)]
        final = statistics.median(on.final) / statistics.median(off.final)
        rate = (on.answers / on.span_s) / (off.answers / off.span_s)
        cpu = (on.bot_cpu_s / on.answers) / (off.bot_cpu_s / off.answers)
        print(f"| {count} | {final:.3f} | {rate:.3f} | {cpu:.2f} |")
    print(
        f"\nPeak resident memory (VmHWM) after the {min(args.rooms)}-room rounds: streaming bot "
        f"{memory[MODES[0]]:.0f} MiB, one-message bot {memory[MODES[1]]:.0f} MiB."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    numbers = lambda text: sorted(int(n) for n in text.split(","))  # noqa: E731
    parser.add_argument("--rooms", type=numbers, default=[10, 50])
    parser.add_argument("--repeats", type=int, default=6, help="rounds per point and mode")
    parser.add_argument("--people", type=int, default=10)
    parser.add_argument("--first-token-s", type=float, default=0.5)
    parser.add_argument("--token-rate", type=float, default=40.0)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--ceiling-events", type=int, default=600)
    parser.add_argument(
        "--modes",
        type=lambda text: tuple(m for m in MODES if m.split()[0] in text.split(",")),
        default=MODES,
        help="streaming,one (both by default)",
    )
    parser.add_argument("--max-concurrent", type=int, help="model slots (default: the shipped)")
    parser.add_argument(
        "--bot-python",
        help="run the bots with this interpreter: a plain `pip install .` (as the Docker image "
        "has it) loads fewer modules than the test environment",
    )
    parser.add_argument("--profile", type=Path, help="py-spy the streaming bot at the most rooms")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
