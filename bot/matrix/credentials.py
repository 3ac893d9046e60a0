"""The bot's saved login and encryption-store key, kept in files only the bot's user can read."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Credentials:
    homeserver: str
    user_id: str
    device_id: str
    access_token: str


def write_secret(path: Path, text: str) -> None:
    """Write atomically with mode 0600 from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)


def load_credentials(path: Path) -> Credentials | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Credentials(**{k: str(data[k]) for k in Credentials.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_credentials(path: Path, credentials: Credentials) -> None:
    write_secret(path, json.dumps(asdict(credentials), indent=2))


def pickle_key(path: Path) -> str:
    """The key that encrypts nio's crypto store: made once, then always the same."""
    try:
        key = path.read_text(encoding="utf-8").strip()
        if key:
            return key
    except FileNotFoundError:
        pass
    key = secrets.token_urlsafe(32)
    write_secret(path, key)
    return key
