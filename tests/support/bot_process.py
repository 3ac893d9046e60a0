"""The bot as a real subprocess (`python -m bot run --config FILE`), stopped by its own pid."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import tomli_w

from bot.storage.store import Store
from tests.support.fake_llm import FakeLLM
from tests.support.synapse import RegisteredUser, Synapse, free_port

ROOT = Path(__file__).resolve().parents[2]


def write_toml(path: Path, sections: dict[str, dict[str, Any]], top: dict[str, Any]) -> None:
    path.write_text(tomli_w.dumps({**top, **sections}), encoding="utf-8")


class BotProcess:
    def __init__(
        self,
        folder: Path,
        synapse: Synapse,
        account: RegisteredUser,
        llm: FakeLLM,
        bot: dict[str, Any] | None = None,
        matrix: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        llm_settings: dict[str, Any] | None = None,
        rag: dict[str, Any] | None = None,
        guard: dict[str, Any] | None = None,
        log_level: str = "DEBUG",
        log_format: str = "text",
        python: str = sys.executable,  # another interpreter: the bot as a plain install runs it
    ) -> None:
        self.folder = folder
        self.python = python
        folder.mkdir(parents=True, exist_ok=True)
        self.user_id = account.user_id
        self.data_dir = folder / "data"
        self.config_path = folder / "config.toml"
        self.log_path = folder / "bot.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.ops_port = free_port()
        self.ops_url = f"http://127.0.0.1:{self.ops_port}"
        write_toml(
            self.config_path,
            {
                "matrix": {
                    "homeserver": synapse.url,
                    "user_id": account.user_id,
                    "password": account.password,
                    "allowed_inviters": ["localhost"],
                    "sync_timeout_ms": 2000,
                    "max_backoff_s": 2,
                    **(matrix or {}),
                },
                "llm": {
                    "base_url": llm.base_url,
                    "model": "stand-in",
                    "connect_timeout_s": 2,
                    "first_token_timeout_s": 20,
                    "chunk_timeout_s": 10,
                    **(llm_settings or {}),
                },
                "bot": {"edit_interval_s": 0.3, "final_edit_timeout_s": 120, **(bot or {})},
                "data": {
                    "pseudonym_secret": "test-pseudonym-secret-long-enough-for-hmac",
                    **(data or {}),
                },
                "ops": {"port": self.ops_port},
                "rag": rag or {},
                "guard": guard or {},
            },
            {"data_dir": str(self.data_dir), "log_level": log_level, "log_format": log_format},
        )

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept for the process' life
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env = {k: v for k, v in env.items() if not k.startswith("LUCIE_BOT_")}
        self.process = subprocess.Popen(
            [self.python, "-m", "bot", "run", "--config", str(self.config_path)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it lingers; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)

    def command(self, name: str, *args: str) -> subprocess.CompletedProcess:
        """Another `lucie-bot` command on the same configuration, run to its end."""
        return subprocess.run(
            [sys.executable, "-m", "bot", name, "--config", str(self.config_path), *args],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    def export(self, format_name: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
        return self.command("export", "--format", format_name, "--out", str(out), *extra)

    def crash(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def settled(self, sql: str, *args: Any, within: float = 20) -> list[dict[str, Any]]:
        """A query on the answers once none is still being written: a client sees the final
        text a moment before the bot records it, as it must (the edit first, then the record)."""
        deadline = time.monotonic() + within
        unsettled = "SELECT COUNT(*) AS n FROM answers WHERE status IN ('queued', 'streaming')"
        while time.monotonic() < deadline:
            if not (await self.query(unsettled))[0]["n"]:
                break
            await asyncio.sleep(0.1)
        return await self.query(sql, *args)

    @contextlib.asynccontextmanager
    async def store(self) -> AsyncIterator[Store]:
        """The bot's database, read through the same storage layer as the bot uses."""
        store = await Store.open(self.data_dir / "lucie-bot.sqlite3")
        try:
            yield store
        finally:
            await store.close()

    async def query(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        """Raw SQL, for what only exports read (columns the stores do not hand the bot)."""
        async with aiosqlite.connect(self.data_dir / "lucie-bot.sqlite3") as conn:
            conn.row_factory = aiosqlite.Row
            async with conn.execute(sql, args) as cursor:
                return [dict(row) for row in await cursor.fetchall()]
