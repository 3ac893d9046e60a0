"""`lucie-bot demo` with the real small model: Synapse, llama.cpp's server and the bot."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bot.demo.homeserver import Account
from tests.support.bot_process import ROOT
from tests.support.matrix_user import (
    LIVE,
    MatrixUser,
    answer_to,
    edits_of,
    final_answer,
    notices,
)
from tests.support.synapse import free_port

READY = "lucie-bot demo is running."


class Demo:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ports = {name: free_port() for name in ("synapse", "model", "ops")}
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def start(self) -> dict[str, str]:
        """Start with --no-chat and return the login details it prints."""
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bot",
                "demo",
                "--data",
                str(self.folder),
                "--no-chat",
                "--synapse-port",
                str(self.ports["synapse"]),
                "--model-port",
                str(self.ports["model"]),
                "--ops-port",
                str(self.ports["ops"]),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        deadline = time.monotonic() + 300
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError("demo ended early:\n" + "".join(self.output))
            self.output.append(line)
            if line.strip().startswith("room:"):
                details = {}
                for entry in self.output[self.output.index(READY + "\n") + 1 :]:
                    key, _, value = entry.strip().partition(":")
                    details[key.strip()] = value.strip()
                return details
        raise AssertionError("demo not ready in 300 s:\n" + "".join(self.output))

    def stop(self) -> int:
        """Ctrl-C, as a person would; returns the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.output.append(self.process.stdout.read())
        return self.process.returncode


def processes_using(folder: Path) -> list[str]:
    """Command lines of live processes that mention the demo folder."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(folder) in command and "pytest" not in command:
            found.append(command)
    return found


async def test_demo_answers_with_the_real_model_stops_cleanly_and_reuses_its_folder(tmp_path):
    folder = tmp_path / "demo"
    demo = Demo(folder)
    try:
        details = await asyncio.to_thread(demo.start)
        state = json.loads((folder / "accounts.json").read_text())
        person = Account(**state["person"])
        assert details["user"] == person.user_id and details["password"] == person.password
        room = details["room"]
        bot_id = f"@lucie:{person.user_id.split(':', 1)[1]}"
        user = MatrixUser(details["homeserver"], person, tmp_path / "client")
        try:
            await user.wait_for(room, lambda ev: notices(ev, bot_id), within=120)
            question = await user.send(
                room, "Write five sentences about the history of Paris, please."
            )
            text = await user.wait_for(
                room, lambda ev: final_answer(ev, bot_id, question), within=180
            )
            assert text.strip()  # SmolLM2 said something, through llama.cpp and the bot
            first = answer_to(user.events[room], bot_id, question)
            streamed = LIVE in first["content"] or edits_of(user.events[room], first["event_id"])
            assert streamed
        finally:
            await user.close()
    finally:
        code = await asyncio.to_thread(demo.stop)
    assert code == 0
    assert "stopping…" in "".join(demo.output)
    assert await _eventually_gone(folder)

    again = Demo(folder)
    try:
        second = await asyncio.to_thread(again.start)
        assert second["user"] == details["user"] and second["room"] == details["room"]
    finally:
        assert await asyncio.to_thread(again.stop) == 0
    assert await _eventually_gone(folder)


async def _eventually_gone(folder: Path) -> bool:
    for _ in range(50):
        if not processes_using(folder):
            return True
        await asyncio.sleep(0.2)
    raise AssertionError(f"still running: {processes_using(folder)}")


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "demo", "--no-chat", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_missing_part_or_a_taken_port_is_named_in_one_line(tmp_path):
    missing = run_demo(
        "--data",
        str(tmp_path / "d1"),
        "--gguf",
        str(tmp_path / "none.gguf"),
        "--synapse-port",
        str(free_port()),
        "--ops-port",
        str(free_port()),
        "--model-port",
        str(free_port()),
    )
    assert missing.returncode == 1
    assert (
        missing.stderr.strip()
        == f"lucie-bot: model file {tmp_path / 'none.gguf'} not found: check --gguf"
    )

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run_demo("--data", str(tmp_path / "d2"), "--synapse-port", str(port))
    assert busy.returncode == 1
    assert busy.stderr.strip() == (
        f"lucie-bot: port {port} is taken (homeserver): choose another with --synapse-port"
    )
    assert not (tmp_path / "d2").exists()  # nothing was started or written
