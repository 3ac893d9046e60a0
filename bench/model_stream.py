"""CPU of reading streamed answers: the bot's model client against the same reading over httpx.

Run from the repository root: `.venv/bin/python -m bench.model_stream` (options: --help).
A stand-in model server (in its own thread) streams answers of N tokens, one server-sent event
each, to 50 readers at once; the CPU time of the reading thread alone is measured. The httpx
reader is what the bot did before it read through aiohttp: the same SSE parsing and JSON per
event, over httpx's stream."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time

import httpx

from bot.config import LLMSettings
from bot.llm.client import ChatModel, Sampling, StreamResult
from bot.llm.sse import data_batches
from tests.support.fake_llm import Behaviour, FakeLLM

MESSAGES = [{"role": "user", "content": "Une question ?"}]
SAMPLING = Sampling(temperature=0.7, top_p=0.9, max_tokens=256)


async def through_httpx(http: httpx.AsyncClient, url: str) -> int:
    body = {"model": "stand-in", "messages": MESSAGES, "stream": True}
    tokens = 0
    async with http.stream("POST", url, json=body) as response:
        async for batch in data_batches(response.aiter_bytes()):
            for data in batch:
                if data.strip() != "[DONE]":
                    chunk = json.loads(data)
                    tokens += bool(chunk["choices"] and chunk["choices"][0]["delta"])
    return tokens


async def through_bot(model: ChatModel) -> int:
    result = StreamResult()
    async for _ in model.stream(MESSAGES, SAMPLING, result):
        pass
    return result.tokens


async def timed(readers: int, read: object) -> tuple[float, float, int]:
    """CPU ms per stream of this thread, wall seconds, tokens read in all."""
    cpu, wall = time.thread_time(), time.monotonic()
    counts = await asyncio.gather(*(read() for _ in range(readers)))  # type: ignore[operator]
    return 1000 * (time.thread_time() - cpu) / readers, time.monotonic() - wall, sum(counts)


async def run(args: argparse.Namespace) -> None:
    llm = FakeLLM()
    llm.start()
    words = " ".join(f"mot{k}" for k in range(args.tokens))
    llm.default = Behaviour(token_delay=1 / args.token_rate, text=words)
    url = f"{llm.base_url}/chat/completions"
    model = ChatModel(
        LLMSettings(base_url=llm.base_url, model="stand-in", max_concurrent_requests=args.readers)
    )
    rows = []
    try:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=None)) as http:
            await through_httpx(http, url)  # connections and imports warmed up
            await through_bot(model)
            for _ in range(args.repeats):
                rows.append(("httpx", *await timed(args.readers, lambda: through_httpx(http, url))))
                rows.append(("bot", *await timed(args.readers, lambda: through_bot(model))))
    finally:
        await model.aclose()
        llm.close()
    print(f"## {time.strftime('%Y-%m-%d')}: reading streamed answers\n")
    print(
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; {args.readers} answers at once, {args.tokens} tokens "
        f"each at {args.token_rate:g}/s, one server-sent event per token; {args.repeats} rounds\n"
    )
    print("| reader | CPU per answer, median of rounds | wall time per round |")
    print("| --- | --- | --- |")
    for name, label in (("httpx", "httpx stream, same SSE and JSON"), ("bot", "bot/llm/client.py")):
        cpu = sorted(row[1] for row in rows if row[0] == name)
        wall = sorted(row[2] for row in rows if row[0] == name)
        print(f"| {label} | {cpu[len(cpu) // 2]:.2f} ms | {wall[len(wall) // 2]:.2f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--token-rate", type=float, default=40.0)
    parser.add_argument("--repeats", type=int, default=5)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
