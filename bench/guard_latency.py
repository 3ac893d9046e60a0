"""Moderation latency benchmark: what each moderation backend adds to an answer, against none.

Run from the repository root: `.venv/bin/python -m bench.guard_latency`.
One real Synapse and one stand-in model (first token after 0.5 s, then 40 tokens at 40/s,
streamed) serve one bot process per configuration: no moderation (`guard.backends = []`), the
embedded rules (the default), and the rules with a stand-in Llama Guard over real HTTP that
answers after a set delay (30 ms for a 1B on a GPU, 150 ms for an 8B on a busy one). Each bot
has a DM with each of the same people; the configurations take turns, one round of questions
(one per room, at once) each, in an order that rotates every cycle, so that noise on the
shared cores falls on all of them alike. Figures come from the bots' own records (question time
from Synapse, first token, first visible text, final text), CPU from /proc for the bot taking
its turn. Prints Markdown for docs/benchmarks.md; warnings and errors in the bots' logs go to
stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.load import cpu_seconds, percentile
from tests.support.bot_process import BotProcess
from tests.support.fake_llm import Behaviour, FakeLLM
from tests.support.guard_servers import StandInLlamaGuard
from tests.support.matrix_user import MatrixUser, notices
from tests.support.synapse import Synapse

FINISHED = ("complete", "cut", "error", "skipped")
ROUND_TIMEOUT_S = 60
LOG_PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback")


@dataclass(frozen=True)
class Setup:
    key: str
    label: str
    backends: tuple[str, ...]
    guard_delay_s: float | None = None  # the stand-in Llama Guard's answer time; None: no server


SETUPS = (
    Setup("none", "no moderation (`backends = []`)", ()),
    Setup("rules", "rules (default)", ("rules",)),
    Setup("guard30", "rules + stand-in Llama Guard, 30 ms", ("rules", "llama_guard"), 0.03),
    Setup("guard150", "rules + stand-in Llama Guard, 150 ms", ("rules", "llama_guard"), 0.15),
)


@dataclass
class Arm:
    """One configuration at work: its bot, its rooms, its stand-in guard, what it measured."""

    setup: Setup
    bot: BotProcess
    guard: StandInLlamaGuard | None
    rooms: list[tuple[MatrixUser, str]] = field(default_factory=list)
    counted_after: int = 0  # answers up to this id were warm-up
    cpu_s: float = 0.0
    guard_checks: int = 0


def guard_section(setup: Setup, guard: StandInLlamaGuard | None) -> dict[str, Any]:
    # quotas off everywhere: the figures are about moderation, and the run asks a lot
    section: dict[str, Any] = {"backends": list(setup.backends), "quotas": {"enabled": False}}
    if guard is not None:
        section["llama_guard"] = {"url": guard.url, "model": "Llama-Guard-3-1B"}
    return section


async def finished_answers(bot: BotProcess) -> int:
    rows = await bot.query(
        f"SELECT COUNT(*) AS n FROM answers WHERE status IN ({','.join('?' * len(FINISHED))})",
        *FINISHED,
    )
    return int(rows[0]["n"])


async def ask_round(arm: Arm, label: str) -> None:
    """One question in each of the arm's rooms at once; back once all are answered."""
    assert arm.bot.process is not None
    before = await finished_answers(arm.bot)
    cpu_before = cpu_seconds(arm.bot.process.pid)
    await asyncio.gather(
        *(owner.send(room, f"Question {label}-{i} ?") for i, (owner, room) in enumerate(arm.rooms))
    )
    deadline = time.monotonic() + ROUND_TIMEOUT_S
    while await finished_answers(arm.bot) < before + len(arm.rooms):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{arm.setup.key}: round {label} unanswered, see {arm.bot.log_path}")
        await asyncio.sleep(0.05)
    arm.cpu_s += cpu_seconds(arm.bot.process.pid) - cpu_before


async def wait_healthy(bot: BotProcess, within: float = 120) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=5) as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get(f"{bot.ops_url}/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.3)
    raise RuntimeError(f"bot not healthy within {within} s, see {bot.log_path}")


async def mean_check_ms(bot: BotProcess) -> float | None:
    """The bot's own mean time of one Llama Guard check (HTTP included), from /metrics."""
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"{bot.ops_url}/metrics")).text
    found = {}
    for name in ("sum", "count"):
        match = re.search(
            rf'^lucie_bot_moderation_seconds_{name}\{{backend="llama_guard"\}} (\S+)$', text, re.M
        )
        found[name] = float(match.group(1)) if match else 0.0
    return 1000 * found["sum"] / found["count"] if found["count"] else None


def seconds(rows: list[dict[str, Any]], end: str, start: str) -> list[float]:
    return [(r[end] - r[start]) / 1000 for r in rows if r[end] is not None]


def p50_p99(values: list[float]) -> str:
    return f"{percentile(values, 0.5):.2f} / {percentile(values, 0.99):.2f} s"


def added(value: float, base: float) -> str:
    return f"{value - base:+.3f} s (×{value / base:.2f})"


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return (
        f"{platform.machine()}, {os.cpu_count()} cores ({cpu}), Python "
        f"{platform.python_version()}, {platform.platform()}"
    )


def log_problems(arms: list[Arm]) -> None:
    """Warnings and errors of each bot's log, to stderr: a figure from a bot that failed is no
    figure."""
    for arm in arms:
        lines = [line for line in arm.bot.log().splitlines() if LOG_PROBLEM.search(line)]
        print(
            f"{arm.setup.key}: {len(lines)} warning/error lines in {arm.bot.log_path}",
            file=sys.stderr,
        )
        for line in lines[:15]:
            print(f"  {line[:300]}", file=sys.stderr)


async def setup_arms(
    args: argparse.Namespace, folder: Path, synapse: Synapse, llm: FakeLLM, users: list[MatrixUser]
) -> list[Arm]:
    arms: list[Arm] = []
    for setup in SETUPS:
        if setup.key not in args.setups:
            continue
        guard = None
        if setup.guard_delay_s is not None:
            guard = StandInLlamaGuard(delay_s=setup.guard_delay_s)
            guard.start()
            guard.set_mode("slow")  # each answer after delay_s: the model's own time
        bot = BotProcess(
            folder / f"bot-{setup.key}",
            synapse,
            synapse.new_user(f"lucie-{setup.key}", exempt=True),
            llm,
            bot={"edit_interval_s": args.edit_interval, "questions_per_person": 0},
            llm_settings={"max_concurrent_requests": 8},
            guard=guard_section(setup, guard),
            log_level="INFO",
        )
        bot.start()
        arms.append(Arm(setup, bot, guard))
    for arm in arms:
        await wait_healthy(arm.bot)
        for owner in users:
            arm.rooms.append((owner, await owner.create_room([arm.bot.user_id], direct=True)))

    async def welcomed(owner: MatrixUser) -> None:
        for arm in arms:
            room = next(r for o, r in arm.rooms if o is owner)
            await owner.wait_for(room, functools.partial(notices, bot_id=arm.bot.user_id), 120)

    await asyncio.gather(*(welcomed(owner) for owner in users))
    return arms


async def measure(args: argparse.Namespace, arms: list[Arm]) -> None:
    for arm in arms:  # the first answers pay for connections and caches: not counted
        await ask_round(arm, "warm-up")
        await asyncio.sleep(args.pause)
        rows = await arm.bot.query("SELECT MAX(id) AS n FROM answers")
        arm.counted_after, arm.cpu_s = int(rows[0]["n"]), 0.0
        if arm.guard is not None:
            arm.guard.requests.clear()
    for cycle in range(args.rounds):
        shift = cycle % len(arms)
        for arm in arms[shift:] + arms[:shift]:
            await ask_round(arm, f"{arm.setup.key}-{cycle}")
            await asyncio.sleep(args.pause)
    for arm in arms:
        if arm.guard is not None:
            arm.guard_checks = len(arm.guard.requests)


async def report(args: argparse.Namespace, arms: list[Arm], started: float) -> None:
    results = []
    for arm in arms:
        rows = await arm.bot.query(
            "SELECT status, question_ts, started_at, first_token_at, first_visible_at,"
            " finished_at FROM answers WHERE id > ?",
            arm.counted_after,
        )
        check_ms = await mean_check_ms(arm.bot) if arm.guard is not None else None
        results.append((arm, rows, check_ms))
    answers_per = args.rounds * args.rooms
    print(
        f"## {time.strftime('%Y-%m-%d')}: {answers_per} answers per configuration, "
        f"{args.rooms} rooms at once\n"
    )
    print(f"- machine: {machine()}")
    print(
        f"- stand-in model: first token after {args.latency} s, then {args.tokens} tokens at "
        f"{args.token_rate}/s, streamed; bot: edit interval {args.edit_interval} s, first text "
        f"delay 0.25 s (the defaults), 8 model requests at once, quotas off, personal data "
        f"masking on (the default); Synapse on loopback, everyone exempt from rate limits"
    )
    print(
        f"- {len(arms)} bot processes, one per configuration, each in a DM with the same "
        f"{args.rooms} people; {args.rounds} cycles, each a round of {args.rooms} questions at "
        f"once per configuration, the configurations' order rotating every cycle, "
        f"{args.pause} s between rounds; one warm-up round each, not counted; "
        f"{time.monotonic() - started:.0f} s in all"
    )
    print(
        "- stand-in Llama Guard: `tests/support/guard_servers.py`'s `StandInLlamaGuard` over "
        "real HTTP in mode `slow`, answering `safe` after the delay shown; `stance` "
        "`fail_closed`, `timeout_s` 5 (the defaults)\n"
    )
    base_rows = results[0][1]
    base_first = percentile(seconds(base_rows, "first_visible_at", "question_ts"), 0.5)
    base_final = percentile(seconds(base_rows, "finished_at", "question_ts"), 0.5)
    print(
        "| configuration | answers complete | first visible text p50 / p99 | final text "
        "p50 / p99 | added at p50, first visible | added at p50, final |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for arm, rows, _ in results:
        done = [r for r in rows if r["status"] == "complete"]
        first = seconds(done, "first_visible_at", "question_ts")
        final = seconds(done, "finished_at", "question_ts")
        print(
            f"| {arm.setup.label} | {len(done)} / {len(rows)} | {p50_p99(first)} | "
            f"{p50_p99(final)} | {added(percentile(first, 0.5), base_first)} | "
            f"{added(percentile(final, 0.5), base_final)} |"
        )
    print(
        "\n| configuration | question to model request, p50 | first token to first visible "
        "text, p50 / p99 | Llama Guard checks per answer | mean check, as the bot timed it | "
        "bot CPU per answer |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for arm, rows, check_ms in results:
        done = [r for r in rows if r["status"] == "complete"]
        asked = seconds(done, "started_at", "question_ts")
        held = seconds(done, "first_visible_at", "first_token_at")
        checks = f"{arm.guard_checks / max(1, len(rows)):.1f}" if arm.guard else "none"
        timed = f"{check_ms:.0f} ms" if check_ms is not None else "none"
        print(
            f"| {arm.setup.label} | {percentile(asked, 0.5):.3f} s | {p50_p99(held)} | "
            f"{checks} | {timed} | {1000 * arm.cpu_s / max(1, len(rows)):.1f} ms |"
        )
    statuses = {arm.setup.key: Counter(r["status"] for r in rows) for arm, rows, _ in results}
    print(f"\nstatuses: {statuses}", file=sys.stderr)


async def run(args: argparse.Namespace) -> None:
    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="lucie-guard-bench-"))
    print(f"working in {folder}", file=sys.stderr)
    synapse = Synapse(folder / "synapse")
    llm = FakeLLM()
    users: list[MatrixUser] = []
    arms: list[Arm] = []
    failed = True
    try:
        synapse.configure()
        synapse.start()
        llm.default = Behaviour(
            first_delay=args.latency,
            token_delay=1 / args.token_rate,
            text=" ".join(f"mot{i}" for i in range(args.tokens)),
        )
        llm.start()
        for index in range(args.rooms):
            person = synapse.new_user("person", exempt=True)
            users.append(MatrixUser(synapse.url, person, folder / f"user{index}"))
        arms = await setup_arms(args, folder, synapse, llm, users)
        await measure(args, arms)
        await report(args, arms, started)
        failed = False
    finally:
        for user in users:
            await user.close()
        for arm in arms:
            arm.bot.stop()
            if arm.guard is not None:
                arm.guard.close()
        log_problems(arms)
        llm.close()
        synapse.stop()
        if args.keep or failed:
            print(f"kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=5, help="rooms asking at once, per bot")
    parser.add_argument("--rounds", type=int, default=20, help="rounds per configuration")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds to first token")
    parser.add_argument("--token-rate", type=float, default=40, help="tokens per second")
    parser.add_argument("--tokens", type=int, default=40, help="tokens per answer")
    parser.add_argument("--edit-interval", type=float, default=1.5, help="the bot's default")
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between rounds")
    parser.add_argument(
        "--setups",
        nargs="+",
        default=[s.key for s in SETUPS],
        choices=[s.key for s in SETUPS],
        help="configurations to run, in the order of the choices; the first run is the baseline",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
