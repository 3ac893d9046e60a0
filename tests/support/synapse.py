"""A real Synapse homeserver on loopback with SQLite, started and stopped by the tests."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SHARED_SECRET = "lucie-bot-tests-shared-secret"
START_TIMEOUT_S = 90
GENEROUS = {"per_second": 1000, "burst_count": 1000}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RegisteredUser:
    user_id: str
    password: str
    access_token: str
    device_id: str


class Synapse:
    """rc_message keeps Synapse's defaults (0.2/s, burst 10): tests that are not about rate
    limits exempt their users through the admin API, as an operator would."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server_name = "localhost"
        self.process: subprocess.Popen[bytes] | None = None
        self.config_path = folder / "homeserver.yaml"
        self.admin: RegisteredUser | None = None
        self._count = 0

    def configure(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
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
                "registration_shared_secret": SHARED_SECRET,
                "trusted_key_servers": [],
                "suppress_key_server_warning": True,
                "bcrypt_rounds": 4,
                "report_stats": False,
                "presence": {"enabled": False},
                "url_preview_enabled": False,
                "rc_login": {"address": GENEROUS, "account": GENEROUS, "failed_attempts": GENEROUS},
                "rc_registration": GENEROUS,
                "rc_joins": {"local": GENEROUS, "remote": GENEROUS},
                "rc_invites": {"per_room": GENEROUS, "per_user": GENEROUS, "per_issuer": GENEROUS},
                "rc_admin_redaction": GENEROUS,
                "rc_key_requests": GENEROUS,
            }
        )
        self.config_path.write_text(yaml.safe_dump(config))
        log_config = self.folder / f"{self.server_name}.log.config"
        if log_config.exists():
            logging_config = yaml.safe_load(log_config.read_text())
            logging_config["root"]["level"] = "WARNING"
            log_config.write_text(yaml.safe_dump(logging_config))

    def start(self) -> None:
        log = open(self.folder / "stdout.log", "ab")  # noqa: SIM115 - kept for the process' life
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "synapse.app.homeserver",
                "--config-path",
                str(self.config_path),
            ],
            cwd=self.folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"synapse exited with {self.process.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        else:
            self.stop()
            raise RuntimeError(f"synapse did not answer /health within {START_TIMEOUT_S} s")
        if self.admin is None:
            self.admin = self.register("admin", admin=True)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    # Admin API
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

    def register(self, prefix: str, admin: bool = False) -> RegisteredUser:
        """A fresh user each call, so tests never share accounts or devices."""
        self._count += 1
        localpart = f"{prefix}{self._count}-{os.getpid()}" if prefix != "admin" else "admin"
        password = f"pw-{localpart}"
        nonce = self.request("GET", "/_synapse/admin/v1/register")["nonce"]
        digest = hmac.new(
            SHARED_SECRET.encode(),
            b"\x00".join(
                p.encode() for p in (nonce, localpart, password, "admin" if admin else "notadmin")
            ),
            hashlib.sha1,
        ).hexdigest()
        result = self.request(
            "POST",
            "/_synapse/admin/v1/register",
            {
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": admin,
                "mac": digest,
            },
        )
        return RegisteredUser(
            result["user_id"], password, result["access_token"], result["device_id"]
        )

    def exempt_from_rate_limits(self, user_id: str) -> None:
        assert self.admin is not None
        quoted = urllib.parse.quote(user_id)
        self.request(
            "POST",
            f"/_synapse/admin/v1/users/{quoted}/override_ratelimit",
            {"messages_per_second": 0, "burst_count": 0},
            token=self.admin.access_token,
        )
