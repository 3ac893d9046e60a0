"""Deliberate recoveries, run while the bot is stopped: a new device, a new identity."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import quote

import aiohttp

from bot import paths
from bot.config import Settings
from bot.errors import OperatorError
from bot.matrix import cs_api
from bot.matrix.credentials import Credentials, load_credentials
from bot.matrix.cross_signing import CrossSigning, CrossSigningError
from bot.matrix.cs_api import json_body, password_auth
from bot.matrix.device_store import retire_async


class MaintenanceError(OperatorError):
    """One line for the operator."""


def _paths(settings: Settings) -> tuple[Path, Path, Path]:
    data_dir = settings.data_dir
    return paths.credentials(data_dir), paths.crypto_store(data_dir), paths.cross_signing(data_dir)


async def new_device(settings: Settings) -> list[str]:
    """Retire the device whose store is lost or damaged; the next start makes a signed new one."""
    credentials_path, store_dir, _ = _paths(settings)
    saved = load_credentials(credentials_path)
    lines = []
    if saved is not None:
        lines.append(await _delete_device(settings, saved))
    folder = await retire_async(
        settings.data_dir, store_dir, settings.matrix.user_id, [credentials_path]
    )
    lines.append(f"moved the old login and encryption store to {folder}")
    lines.append(
        "the next start logs in as a new device, signed by the same cross-signing identity;"
        " people's clients share new room keys with it"
    )
    return lines


async def _delete_device(settings: Settings, saved: Credentials) -> str:
    """So that senders stop encrypting for a device that can no longer read."""
    password = settings.matrix.password
    if password is None:
        return f"device {saved.device_id} left on the account (no matrix.password to remove it)"
    matrix = settings.matrix
    path = f"/devices/{quote(saved.device_id)}"
    async with cs_api.client(
        matrix.homeserver, saved.access_token, matrix.request_timeout_s
    ) as http:
        try:
            response = await http.request("DELETE", path, json={})
            if response.status_code == 401 and "flows" in json_body(response):
                auth = password_auth(
                    settings.matrix.user_id,
                    password.get_secret_value(),
                    json_body(response).get("session"),
                )
                response = await http.request("DELETE", path, json={"auth": auth})
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"device {saved.device_id} left on the account (homeserver unreachable: {exc})"
    if response.is_success:
        return f"removed device {saved.device_id} from the account"
    reason = json_body(response).get("errcode") or response.status_code
    return f"device {saved.device_id} left on the account ({reason})"


async def new_identity(settings: Settings) -> list[str]:
    """Replace the bot's cross-signing keys (lost file, or taken over by another client)."""
    credentials_path, _, identity_path = _paths(settings)
    saved = load_credentials(credentials_path)
    if saved is None:
        raise MaintenanceError("no saved login: start the bot once before making a new identity")
    password = settings.matrix.password
    service = CrossSigning(
        settings.matrix.homeserver,
        saved.user_id,
        saved.device_id,
        saved.access_token,
        password.get_secret_value() if password else None,
        settings.matrix.request_timeout_s,
    )
    lines = []
    if identity_path.exists():
        old = identity_path.with_name("cross-signing.replaced.json")
        shutil.move(identity_path, old)
        lines.append(f"kept the previous keys in {old}")
    try:
        master = await service.replace(identity_path)
    except CrossSigningError as exc:
        raise MaintenanceError(str(exc)) from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise MaintenanceError(f"homeserver unreachable: {exc}") from None
    finally:
        await service.aclose()
    lines.append(f"published a new cross-signing identity (master key {master})")
    lines.append(f"device {saved.device_id} is signed by it")
    return lines
