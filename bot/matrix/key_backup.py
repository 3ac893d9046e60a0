"""Server-side backup of the bot's room keys (m.megolm_backup.v1.curve25519-aes-sha2).

Every Megolm session the bot receives is encrypted to the backup's Curve25519 key and uploaded,
so a device made after a lost store (`lucie-bot new-device`) can read what was sent before.
The private key lives in a 0600 file next to the cross-signing keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from pathlib import Path
from typing import Any

from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.DH import import_x25519_private_key, import_x25519_public_key, key_agreement
from Crypto.Protocol.KDF import HKDF
from Crypto.PublicKey import ECC
from Crypto.PublicKey.ECC import EccKey
from Crypto.Util.Padding import pad, unpad
from nio import AsyncClient
from nio.crypto import InboundGroupSession

from bot.core.stores import CryptoBookkeeping
from bot.errors import OperatorError
from bot.matrix import cs_api
from bot.matrix.credentials import write_secret
from bot.matrix.cross_signing import b64decode, sign, signable, unpadded_b64

log = logging.getLogger(__name__)
ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"
MEGOLM = "m.megolm.v1.aes-sha2"
UPLOAD_BATCH = 200


class BackupError(OperatorError):
    """The backup cannot be used; one line for the operator."""


# X25519, HKDF and AES through pycryptodome, which matrix-nio already loads for attachments:
# a second crypto library would cost the process about 9 MiB more for these few operations.
# Keys are EccKey objects on Curve25519, kept and published as their raw 32 bytes (RFC 7748).
def _raw_public(private: EccKey) -> bytes:
    return private.public_key().export_key(format="raw")


def _keys(shared: bytes) -> tuple[bytes, bytes, bytes]:
    material = HKDF(shared, 80, bytes(32), SHA256, context=b"")
    return material[:32], material[32:64], material[64:]


def encrypt_session(public_key: bytes, session_data: dict[str, Any]) -> dict[str, str]:
    ephemeral = ECC.generate(curve="Curve25519")
    aes_key, mac_key, iv = key_agreement(
        eph_priv=ephemeral, static_pub=import_x25519_public_key(public_key), kdf=_keys
    )
    plain = pad(json.dumps(session_data).encode(), AES.block_size)  # PKCS#7
    ciphertext = AES.new(aes_key, AES.MODE_CBC, iv=iv).encrypt(plain)
    # libolm MACs an empty buffer instead of the ciphertext, and every client expects that
    mac = hmac.new(mac_key, b"", hashlib.sha256).digest()[:8]
    return {
        "ephemeral": unpadded_b64(_raw_public(ephemeral)),
        "ciphertext": unpadded_b64(ciphertext),
        "mac": unpadded_b64(mac),
    }


def decrypt_session(private: EccKey, data: dict[str, Any]) -> dict[str, Any]:
    ephemeral = import_x25519_public_key(b64decode(data["ephemeral"]))
    aes_key, mac_key, iv = key_agreement(static_priv=private, eph_pub=ephemeral, kdf=_keys)
    ciphertext = b64decode(data["ciphertext"])
    mac = b64decode(data["mac"])
    expected = {
        hmac.new(mac_key, message, hashlib.sha256).digest()[:8] for message in (b"", ciphertext)
    }
    if mac not in expected:
        raise ValueError("backup MAC mismatch")
    padded = AES.new(aes_key, AES.MODE_CBC, iv=iv).decrypt(ciphertext)
    result = json.loads(unpad(padded, AES.block_size))  # PKCS#7
    if not isinstance(result, dict):
        raise ValueError("backup session is not an object")
    return result


def load_or_create_key(path: Path) -> tuple[EccKey, bool]:
    """The backup's private key, and whether it was just made."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return import_x25519_private_key(b64decode(data["private_key"])), False
    except FileNotFoundError:
        key = ECC.generate(curve="Curve25519")
        raw = key.seed  # the raw private key, as RFC 7748 and every client keep it
        write_secret(path, json.dumps({"algorithm": ALGORITHM, "private_key": unpadded_b64(raw)}))
        return key, True
    except (OSError, ValueError, KeyError, TypeError):
        raise BackupError(f"{path} is damaged; restore it from backup") from None


class KeyBackup:
    def __init__(
        self,
        client: AsyncClient,
        store: CryptoBookkeeping,
        path: Path,
        homeserver: str,
        timeout_s: float,
    ) -> None:
        self.client = client
        self.store = store
        self.path = path
        self.homeserver = homeserver
        self.timeout_s = timeout_s
        self.version: str | None = None
        self._private: EccKey | None = None
        self._uploaded: set[str] = set()

    def _http(self) -> cs_api.CsClient:
        return cs_api.client(
            self.homeserver, self.client.access_token, self.timeout_s, "/room_keys"
        )

    async def start(self, master: EccKey | None) -> int:
        """Find or create the backup version; restore its keys if this store lacks them.

        Returns how many room keys were restored.
        """
        self._private, _ = load_or_create_key(self.path)
        public = unpadded_b64(_raw_public(self._private))
        async with self._http() as http:
            response = await http.get("/version")
            current = response.json() if response.is_success else None
            existing = (
                current is not None and current.get("auth_data", {}).get("public_key") == public
            )
            if current is not None and existing:
                self.version = str(current["version"])
            else:
                if current:  # made elsewhere, or its key file was lost: unreadable here
                    log.warning(
                        "key backup version %s does not match %s: starting a new version",
                        current.get("version"),
                        self.path,
                    )
                self.version = await self._create_version(http, public, master)
        self._uploaded = await self.store.backed_up_sessions(self.version)
        if existing and not self._sessions():  # a new device: read what the old one could
            return await self.restore()
        return 0

    async def _create_version(
        self, http: cs_api.CsClient, public: str, master: EccKey | None
    ) -> str:
        auth_data: dict[str, Any] = {"public_key": public}
        olm = self.client.olm
        if olm is not None:  # the device vouches for its backup...
            signature = olm.account.sign(signable(auth_data).decode())
            device_key = f"ed25519:{self.client.device_id}"
            auth_data["signatures"] = {self.client.user_id: {device_key: signature}}
        if master is not None:  # ...and so does the bot's identity, which clients trust
            auth_data = sign(auth_data, self.client.user_id, master)
        response = await http.post(
            "/version", json={"algorithm": ALGORITHM, "auth_data": auth_data}
        )
        if not response.is_success:
            raise BackupError(f"creating the key backup failed: {response.status_code}")
        version = str(response.json()["version"])
        log.info("created key backup version %s", version)
        return version

    def _sessions(self) -> list[InboundGroupSession]:
        olm = self.client.olm
        return list(olm.inbound_group_store) if olm is not None else []

    async def upload_new(self) -> int:
        """Back up the sessions received since the last upload."""
        if self.version is None or self._private is None:
            return 0
        pending = [s for s in self._sessions() if s.id not in self._uploaded]
        public = _raw_public(self._private)
        for start in range(0, len(pending), UPLOAD_BATCH):
            batch = pending[start : start + UPLOAD_BATCH]
            plain = [_session_data(session) for session in batch]
            # the key agreement and encryption of a whole batch run off the event loop
            sealed = await asyncio.to_thread(_seal_all, public, plain)
            rooms: dict[str, Any] = {}
            for session, session_data in zip(batch, sealed, strict=True):
                entry = {
                    "first_message_index": session.first_known_index,
                    "forwarded_count": len(session.forwarding_chain),
                    "is_verified": False,
                    "session_data": session_data,
                }
                rooms.setdefault(session.room_id, {"sessions": {}})["sessions"][session.id] = entry
            async with self._http() as http:
                response = await http.put(
                    "/keys", params={"version": self.version}, json={"rooms": rooms}
                )
            if not response.is_success:
                raise BackupError(f"uploading room keys failed: {response.status_code}")
            ids = [session.id for session in batch]
            await self.store.mark_backed_up(self.version, ids)
            self._uploaded.update(ids)
        if pending:
            log.info("backed up %d room keys", len(pending))
        return len(pending)

    async def restore(self) -> int:
        olm = self.client.olm
        if olm is None or self.version is None or self._private is None:
            return 0
        async with self._http() as http:
            response = await http.get("/keys", params={"version": self.version})
        if not response.is_success:
            raise BackupError(f"downloading room keys failed: {response.status_code}")
        entries = [
            (room_id, session_id, entry)
            for room_id, room in response.json().get("rooms", {}).items()
            for session_id, entry in room.get("sessions", {}).items()
        ]
        opened = await asyncio.to_thread(_open_all, self._private, entries)
        restored: list[str] = []
        for room_id, session_id, data in opened:
            if isinstance(data, Exception):
                log.warning("skipped backed-up key %s: %s", session_id, type(data).__name__)
                continue
            try:
                session = InboundGroupSession.import_session(
                    data["session_key"],
                    data["sender_claimed_keys"]["ed25519"],
                    data["sender_key"],
                    room_id,
                    data.get("forwarding_curve25519_key_chain", []),
                )
            except Exception as exc:  # one bad entry must not stop the others
                log.warning("skipped backed-up key %s: %s", session_id, type(exc).__name__)
                continue
            if olm.inbound_group_store.add(session):
                olm.save_inbound_group_session(session)
            restored.append(session.id)
        await self.store.mark_backed_up(self.version, restored)
        self._uploaded.update(restored)
        log.info("restored %d room keys from the key backup", len(restored))
        return len(restored)


def _seal_all(public_key: bytes, sessions: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [encrypt_session(public_key, session_data) for session_data in sessions]


def _open_all(
    private: EccKey, entries: list[tuple[str, str, Any]]
) -> list[tuple[str, str, dict[str, Any] | Exception]]:
    """Decrypt every backed-up session; a bad one becomes its exception, not a stop."""
    opened: list[tuple[str, str, dict[str, Any] | Exception]] = []
    for room_id, session_id, entry in entries:
        try:
            opened.append((room_id, session_id, decrypt_session(private, entry["session_data"])))
        except Exception as exc:
            opened.append((room_id, session_id, exc))
    return opened


def _session_data(session: InboundGroupSession) -> dict[str, Any]:
    return {
        "algorithm": MEGOLM,
        "forwarding_curve25519_key_chain": session.forwarding_chain,
        "sender_claimed_keys": {"ed25519": session.ed25519},
        "sender_key": session.sender_key,
        "session_key": session.export_session(session.first_known_index),
    }
