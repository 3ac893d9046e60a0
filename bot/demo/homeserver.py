"""A local Synapse (SQLite, loopback) for the demo and the tests: configure, start, register."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bot.demo.processes import OwnedProcess
from bot.errors import OperatorError

START_TIMEOUT_S = 90


class HomeserverError(OperatorError):
    """Worded as one line for the person running the demo."""


@dataclass
class Account:
    user_id: str
    password: str
    access_token: str
    device_id: str


class LocalSynapse:
    """Configured once in its folder (a second run reuses it), started and stopped by pid."""

    def __init__(
        self, folder: Path, port: int, server_name: str = "localhost", pid_file: Path | None = None
    ) -> None:
        self.folder = folder
        self.port = port
        self.pid_file = pid_file
        self.url = f"http://127.0.0.1:{port}"
        self.server_name = server_name
        self.config_path = folder / "homeserver.yaml"
        self.secret_path = folder / "registration.secret"
        self.process: OwnedProcess | None = None

    def configure(self, overrides: dict[str, Any] | None = None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.config_path.exists():
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "synapse.app.homeserver",
                    "--server-name",
                    self.server_name,
                    "--config-path",
                    str(self.config_path),
                    "--data-directory",
                    str(self.folder),
                    "--generate-config",
                    "--report-stats=no",
                ],
                check=True,
                cwd=self.folder,
                capture_output=True,
                timeout=120,
            )
            log_config = self.folder / f"{self.server_name}.log.config"
            if log_config.exists():
                logging_config = yaml.safe_load(log_config.read_text())
                logging_config["root"]["level"] = "WARNING"
                log_config.write_text(yaml.safe_dump(logging_config))
        if not self.secret_path.exists():
            self.secret_path.write_text(secrets.token_urlsafe(32))
            self.secret_path.chmod(0o600)
        config = yaml.safe_load(self.config_path.read_text())
        config.update(
            {
                "listeners": [
                    {
                        "port": self.port,
                        "bind_addresses": ["127.0.0.1"],
                        "type": "http",
                        "tls": False,
                        "x_forwarded": False,
                        "resources": [{"names": ["client"], "compress": False}],
                    }
                ],
                "database": {
                    "name": "sqlite3",
                    "args": {"database": str(self.folder / "homeserver.db")},
                },
                "registration_shared_secret": self.secret_path.read_text().strip(),
                "trusted_key_servers": [],
                "suppress_key_server_warning": True,
                "report_stats": False,
                "presence": {"enabled": False},
                "url_preview_enabled": False,
                **(overrides or {}),
            }
        )
        self.config_path.write_text(yaml.safe_dump(config))

    def start(self) -> None:
        """Start and wait for /health (from the main thread: see bot/demo/processes.py)."""
        self.spawn()
        self.wait_until_up()

    def spawn(self) -> None:
        self.process = OwnedProcess(
            [
                sys.executable,
                "-m",
                "synapse.app.homeserver",
                "--config-path",
                str(self.config_path),
            ],
            self.folder / "synapse.log",
            self.folder,
            self.pid_file,
        )

    def wait_until_up(self) -> None:
        """Blocking: the demo runs it in a worker thread; stops Synapse if it never answers."""
        assert self.process is not None
        process, log = self.process.process, self.process.log
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise HomeserverError(
                    f"Synapse stopped at start (exit {process.returncode}); see {log}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        self.stop()
        raise HomeserverError(f"Synapse did not answer within {START_TIMEOUT_S} s; see {log}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def request(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")

    def register(self, localpart: str, password: str, admin: bool = False) -> Account:
        """Through the shared-secret admin API (no open registration needed)."""
        nonce = self.request("GET", "/_synapse/admin/v1/register")["nonce"]
        parts = (nonce, localpart, password, "admin" if admin else "notadmin")
        mac = hmac.new(
            self.secret_path.read_text().strip().encode(),
            b"\x00".join(part.encode() for part in parts),
            hashlib.sha1,
        ).hexdigest()
        body = {
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": mac,
        }
        result = self.request("POST", "/_synapse/admin/v1/register", body)
        return Account(result["user_id"], password, result["access_token"], result["device_id"])

    def login(self, localpart: str, password: str) -> Account:
        result = self.request(
            "POST",
            "/_matrix/client/v3/login",
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": localpart},
                "password": password,
            },
        )
        return Account(result["user_id"], password, result["access_token"], result["device_id"])
