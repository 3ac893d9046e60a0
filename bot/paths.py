"""The files the bot keeps in data_dir, named in one place (all private: mode 0600 or 0700)."""

from __future__ import annotations

from pathlib import Path

DATABASE_NAME = "lucie-bot.sqlite3"


def database(data_dir: Path) -> Path:
    return data_dir / DATABASE_NAME


def credentials(data_dir: Path) -> Path:
    """The saved login: device id and access token."""
    return data_dir / "credentials.json"


def crypto_store(data_dir: Path) -> Path:
    """matrix-nio's encryption store (a folder)."""
    return data_dir / "crypto"


def crypto_key(data_dir: Path) -> Path:
    """The key that pickles the encryption store."""
    return data_dir / "crypto.key"


def cross_signing(data_dir: Path) -> Path:
    return data_dir / "cross-signing.json"


def key_backup(data_dir: Path) -> Path:
    return data_dir / "key-backup.json"


def retired(data_dir: Path) -> Path:
    """Where `new-device` moves a dead device's login and store."""
    return data_dir / "retired"


def temp(data_dir: Path) -> Path:
    """Shared files while they are indexed (deleted right after: they may be confidential)."""
    return data_dir / "tmp"
