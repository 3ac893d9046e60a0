"""Where the bot's CPU goes, from py-spy's collapsed stacks (`py-spy record --format raw`).

Run: `.venv/bin/python -m bench.profile FILE [--top 25]`. Each sample is given to the part of the
bot that did the work: walking from the innermost frame outwards, the first frame that belongs to
a known part names it (so json.loads called by nio counts as nio's sync parsing, and asyncio's own
frames count for whoever awaited). Prints the shares as Markdown, then the functions most often
on the stack (inclusive).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# innermost match wins; order matters only for frames matching several
PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("SSE parsing (bot/llm/sse.py)", ("bot/llm/sse.py",)),
    ("model client: chunks, time-outs (bot/llm/client.py)", ("bot/llm/client.py",)),
    ("Markdown rendering", ("markdown_it/", "mdurl/")),
    ("HTML sanitising (nh3)", ("nh3",)),
    ("matrix-nio encryption bookkeeping", ("nio/crypto", "olm/", "vodozemac", "nio/store")),
    (
        "matrix-nio sync: parsing and validating events",
        ("jsonschema", "nio/responses.py", "nio/events/", "nio/schemas.py", "nio/rooms.py"),
    ),
    ("matrix-nio client (sending, sync loop)", ("nio/",)),
    ("httpx / httpcore (model requests)", ("httpx/", "httpcore/", "h11/", "anyio/")),
    ("aiohttp (nio's HTTP)", ("aiohttp/", "yarl/", "multidict/")),
    ("SQLite", ("aiosqlite/", "sqlite3/", "bot/storage/")),
    ("Prometheus metrics", ("prometheus_client/", "bot/core/metrics.py")),
    ("logging", ("logging/", "bot/logs.py")),
    ("moderation and guard", ("bot/guard/", "re2", "bot/core/pipeline/moderation.py")),
    ("rendering answers (bot/core/render.py)", ("bot/core/render.py",)),
    ("publishing edits (bot/core/streaming.py)", ("bot/core/streaming.py",)),
    ("answer pipeline (bot/core/pipeline)", ("bot/core/pipeline/",)),
    ("conversation core (bot/core)", ("bot/core/",)),
    ("Matrix transport (bot/matrix)", ("bot/matrix/",)),
    ("pydantic", ("pydantic",)),
    ("JSON (other)", ("json/",)),
]
FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def parse(path: Path) -> list[tuple[list[tuple[str, str]], int]]:
    samples = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for raw in stack.split(";"):
            match = FRAME.match(raw)
            if match:
                frames.append((match["function"], match["file"]))
        samples.append((frames, int(count)))
    return samples


def part_of(frames: list[tuple[str, str]]) -> str:
    for _, file in reversed(frames):
        for name, patterns in PARTS:
            if any(pattern in file for pattern in patterns):
                return name
    if any("threading.py" in file for _, file in frames):
        return "other threads"
    return "event loop (asyncio itself)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    samples = parse(args.file)
    total = sum(count for _, count in samples) or 1
    parts: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    for frames, count in samples:
        parts[part_of(frames)] += count
        for function, file in {(f, short(p)) for f, p in frames}:
            functions[f"{function} ({file})"] += count
    print(f"{total} samples\n\n| part | share |\n| --- | --- |")
    for name, count in parts.most_common():
        print(f"| {name} | {100 * count / total:.1f} % |")
    print("\n| function (inclusive) | share |\n| --- | --- |")
    for name, count in functions.most_common(args.top):
        print(f"| {name} | {100 * count / total:.1f} % |")


def short(path: str) -> str:
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


if __name__ == "__main__":
    main()
