"""The tests' Synapse: the demo's LocalSynapse, with fresh users and rate-limit controls."""

from __future__ import annotations

import os
import socket
import urllib.parse
from pathlib import Path

from bot.demo.homeserver import Account, LocalSynapse

RegisteredUser = Account
GENEROUS = {"per_second": 1000, "burst_count": 1000}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Synapse(LocalSynapse):
    """rc_message keeps Synapse's defaults (0.2/s, burst 10): tests that are not about rate
    limits exempt their users through the admin API, as an operator would."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder, free_port())
        self.admin: Account | None = None
        self._count = 0

    def configure(self) -> None:  # type: ignore[override]
        super().configure(
            {
                "bcrypt_rounds": 4,
                "rc_login": {"address": GENEROUS, "account": GENEROUS, "failed_attempts": GENEROUS},
                "rc_registration": GENEROUS,
                "rc_joins": {"local": GENEROUS, "remote": GENEROUS},
                "rc_invites": {"per_room": GENEROUS, "per_user": GENEROUS, "per_issuer": GENEROUS},
                "rc_admin_redaction": GENEROUS,
                "rc_key_requests": GENEROUS,
            }
        )

    def start(self) -> None:
        super().start()
        if self.admin is None:
            self.admin = self.register("admin", "pw-admin", admin=True)

    def new_user(self, prefix: str, exempt: bool = False) -> Account:
        """A fresh user each call, so tests never share accounts or devices; exempt from
        message rate limits if asked."""
        self._count += 1
        localpart = f"{prefix}{self._count}-{os.getpid()}"
        account = self.register(localpart, f"pw-{localpart}")
        if exempt:
            self.exempt_from_rate_limits(account.user_id)
        return account

    def exempt_from_rate_limits(self, user_id: str) -> None:
        assert self.admin is not None
        self.request(
            "POST",
            f"/_synapse/admin/v1/users/{urllib.parse.quote(user_id)}/override_ratelimit",
            {"messages_per_second": 0, "burst_count": 0},
            token=self.admin.access_token,
        )
