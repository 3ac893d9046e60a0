"""Load benchmark: a real Synapse, a stand-in model with set latency and token rate, many rooms.

Run from the repository root: `.venv/bin/python -m bench.load --rooms 20 --questions 5`.
Prints answers per second, time to first visible text and to final answer (p50, p99), the bot's
CPU time per answer and its peak memory, as Markdown ready for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from tests.support.bot_process import BotProcess
from tests.support.fake_llm import Behaviour, FakeLLM
from tests.support.matrix_user import MatrixUser, notices
from tests.support.synapse import Synapse


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of one process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def memory_mib(pid: int, field: str = "VmHWM") -> float:
    """A memory figure of one process from /proc: VmHWM (peak resident) or VmRSS (resident now)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


async def run(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="lucie-bench-"))
    synapse = Synapse(folder / "synapse")
    llm = FakeLLM()
    users: list[MatrixUser] = []
    bot: BotProcess | None = None
    try:
        synapse.configure()
        synapse.start()
        answer_text = " ".join(f"mot{i}" for i in range(args.tokens))
        llm.default = Behaviour(
            first_delay=args.latency, token_delay=1 / args.token_rate, text=answer_text
        )
        llm.start()
        account = synapse.new_user("lucie", exempt=True)
        bot = BotProcess(
            folder / "bot",
            synapse,
            account,
            llm,
            bot={"edit_interval_s": args.edit_interval, "questions_per_person": 0},
            llm_settings={"max_concurrent_requests": args.concurrency},
            guard={"quotas": {"enabled": False}},  # load from a few senders is the point here
            log_level="INFO",
        )
        bot.start()
        assert bot.process is not None
        for index in range(args.users):
            person = synapse.new_user("person", exempt=True)
            users.append(MatrixUser(synapse.url, person, folder / f"user{index}"))
        rooms: list[tuple[MatrixUser, str]] = []
        for index in range(args.rooms):
            owner = users[index % len(users)]
            rooms.append((owner, await owner.create_room([bot.user_id], direct=True)))
        for owner, room in rooms:
            await owner.wait_for(room, lambda ev: notices(ev, bot.user_id), within=120)

        user_before, system_before = cpu_times(bot.process.pid)
        total = args.rooms * args.questions
        for round_index in range(args.questions):
            await asyncio.gather(
                *(owner.send(room, f"Question {round_index} ?") for owner, room in rooms)
            )
            await asyncio.sleep(args.interval)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            done = await bot.query(
                "SELECT COUNT(*) AS n FROM answers WHERE status IN ('complete','cut','error')"
            )
            if done[0]["n"] >= total:
                break
            await asyncio.sleep(0.5)
        user_after, system_after = cpu_times(bot.process.pid)
        user_used, system_used = user_after - user_before, system_after - system_before
        peak = memory_mib(bot.process.pid)
        rows = await bot.query(
            "SELECT status, question_ts, first_visible_at, finished_at FROM answers"
        )
    finally:
        for user in users:
            await user.close()
        if bot is not None:
            bot.stop()
        llm.close()
        synapse.stop()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)

    complete = [r for r in rows if r["status"] == "complete"]
    first = [(r["first_visible_at"] - r["question_ts"]) / 1000 for r in complete]
    final = [(r["finished_at"] - r["question_ts"]) / 1000 for r in complete]
    span = (max(r["finished_at"] for r in complete) - min(r["question_ts"] for r in rows)) / 1000
    print(f"## {time.strftime('%Y-%m-%d')}: {args.rooms} rooms x {args.questions} questions\n")
    print(
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {platform.platform()}"
    )
    print(
        f"- stand-in model: first token after {args.latency} s, {args.token_rate} tokens/s, "
        f"{args.tokens} tokens an answer; bot: {args.concurrency} concurrent model requests, "
        f"edit interval {args.edit_interval} s; Synapse on loopback with the bot exempt from "
        f"rate limits; {args.users} users sending, {args.interval} s between rounds\n"
    )
    print("| measure | value |\n| --- | --- |")
    print(f"| answers complete | {len(complete)} / {total} |")
    print(f"| answers per second | {len(complete) / span:.2f} |")
    print(
        f"| time to first visible text, p50 / p99 | {percentile(first, 0.5):.2f} s / "
        f"{percentile(first, 0.99):.2f} s |"
    )
    print(
        f"| time to final answer, p50 / p99 | {percentile(final, 0.5):.2f} s / "
        f"{percentile(final, 0.99):.2f} s |"
    )
    print(f"| mean time to final answer | {statistics.mean(final):.2f} s |")
    answers = max(1, len(rows))
    print(
        f"| bot CPU time per answer (user + system) | {1000 * user_used / answers:.1f} + "
        f"{1000 * system_used / answers:.1f} ms |"
    )
    print(f"| bot peak memory (VmHWM) | {peak:.0f} MiB |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--questions", type=int, default=5, help="questions per room")
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.5, help="seconds to first token")
    parser.add_argument("--token-rate", type=float, default=40, help="tokens per second")
    parser.add_argument("--tokens", type=int, default=60, help="tokens per answer")
    parser.add_argument("--concurrency", type=int, default=8, help="model requests at once")
    parser.add_argument("--edit-interval", type=float, default=1.0)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between rounds")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
