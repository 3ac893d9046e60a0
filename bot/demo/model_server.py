"""The demo's model server: llama.cpp's own C++ server (OpenAI-compatible, continuous batching,
/tokenize and /metrics) through xllamacpp's prebuilt wheel, which has no command line of its own.

    python -m bot.demo.model_server --model FILE.gguf --port 8080

It serves until SIGTERM, SIGINT or SIGHUP, then exits 0 at once, answers under way or not.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

SLOT_CONTEXT = 4096  # tokens per answer slot: the demo's bot sends 3,000 + 256 at most


def default_threads() -> int:
    """Half the cores this process may use, at least one. llama.cpp's threads spin at each
    barrier: with two threads on a two-core machine where Synapse, the bot or anything else
    also runs, SmolLM2 fell from 130 to 8 tokens a second, where one thread kept 40 to 75."""
    return max(1, len(os.sched_getaffinity(0)) // 2)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bot.demo.model_server")
    parser.add_argument("--model", type=Path, required=True, help="the GGUF file to serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--alias", help="the model's name in /v1/models (default: the file's)")
    parser.add_argument(
        "--parallel", type=int, default=2, help="answers decoded together, each with its slot"
    )
    parser.add_argument("--threads", type=int, default=default_threads())
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    stop = threading.Event()
    # set before the model loads, so that a stop asked during the load is not lost
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    import xllamacpp  # type: ignore[import-untyped]  # no type information shipped

    params = xllamacpp.CommonParams()
    params.model.path = str(args.model)
    params.model_alias = {args.alias or args.model.stem}
    params.hostnames = [args.host]
    params.port = args.port
    params.n_parallel = args.parallel
    params.n_ctx = SLOT_CONTEXT * args.parallel  # split evenly between the slots
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = args.threads
    # requests_deferred there is what the bot's server queue follows (bot/core/server_queue.py)
    params.endpoint_metrics = True
    try:
        server = xllamacpp.Server(params)  # returns once the model is loaded and it listens
    except RuntimeError as exc:  # its log (stderr) says why: the file, the port
        print(f"model server: {exc}", file=sys.stderr)
        return 1
    print(f"model server: {args.model.name} on {server.listening_address}", flush=True)
    stop.wait()
    # Not the server's destructor: it waits up to 30 s for answers still streaming, holding the
    # GIL (measured), and the demo's Ctrl-C would hang that long. A model server keeps nothing
    # that needs saving; the kernel closes its sockets.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
