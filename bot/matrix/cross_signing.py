"""Cross-signing, which matrix-nio lacks: the bot's own identity vouches for its device.

Clients that exclude devices their owner has not verified (MSC4153; Tchap already warns) trust the
bot once its device is signed by its self-signing key, itself signed by its master key. The three
private keys live in one 0600 file; every later start, and every new device, reuses them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canonicaljson import encode_canonical_json
from Crypto.PublicKey import ECC
from Crypto.PublicKey.ECC import EccKey
from Crypto.Signature import eddsa
from nio.crypto import OlmAccount

from bot import paths
from bot.errors import OperatorError
from bot.matrix import cs_api
from bot.matrix.credentials import write_secret
from bot.matrix.cs_api import json_body, password_auth

log = logging.getLogger(__name__)
ROLES = ("master", "self_signing", "user_signing")
# The device's own identity keys, as its Olm account holds them: {"curve25519": …, "ed25519": …}
OwnKeys = Mapping[str, str]


class CrossSigningError(OperatorError):
    """Cross-signing could not be set up; the message is one line for the operator."""


def unpadded_b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


# Ed25519 through pycryptodome, which matrix-nio already loads for attachments: a second
# crypto library would cost the process about 9 MiB more for these few operations.
def private_key(seed: bytes) -> EccKey:
    """An Ed25519 private key from its raw 32-byte seed (RFC 8032), the form the file keeps."""
    return ECC.construct(curve="Ed25519", seed=seed)


def ed25519_public(raw: bytes) -> EccKey:
    """An Ed25519 public key from its raw 32 bytes."""
    if len(raw) != 32:  # eddsa would take 57 bytes as an Ed448 key
        raise ValueError("an Ed25519 public key is 32 bytes")
    return eddsa.import_public_key(raw)


def public_key(private: EccKey) -> str:
    raw = private.public_key().export_key(format="raw")
    return unpadded_b64(raw)


def signable(obj: dict[str, Any]) -> bytes:
    """What a Matrix signature covers: canonical JSON without signatures and unsigned."""
    return encode_canonical_json(
        {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    )


def sign(obj: dict[str, Any], signer: str, private: EccKey) -> dict[str, Any]:
    """A copy of obj carrying one more signature, by signer's key."""
    signature = unpadded_b64(eddsa.new(private, "rfc8032").sign(signable(obj)))
    signed = dict(obj)
    by_signer = dict(signed.get("signatures", {}).get(signer, {}))
    by_signer[f"ed25519:{public_key(private)}"] = signature
    signed["signatures"] = {**signed.get("signatures", {}), signer: by_signer}
    return signed


def verify(obj: dict[str, Any], signer: str, key: str, key_name: str | None = None) -> bool:
    """Whether obj carries a valid signature by signer's Ed25519 public key (unpadded base64).

    Cross-signing keys sign under their public key's name, devices under their device id."""
    signatures = obj.get("signatures")
    by_signer = signatures.get(signer) if isinstance(signatures, dict) else None
    if not isinstance(by_signer, dict):
        return False
    signature = by_signer.get(f"ed25519:{key_name or key}")
    if not isinstance(signature, str):
        return False
    try:  # a bad signature, key or base64 all raise ValueError
        eddsa.new(ed25519_public(b64decode(key)), "rfc8032").verify(
            signable(obj), b64decode(signature)
        )
    except (ValueError, TypeError):
        return False
    return True


def published_device(
    published: dict[str, Any], user_id: str, device_id: str
) -> dict[str, Any] | None:
    """One device's key object in a /keys/query answer, whatever shape the answer has."""
    device_keys = published.get("device_keys")
    by_user = device_keys.get(user_id) if isinstance(device_keys, dict) else None
    device = by_user.get(device_id) if isinstance(by_user, dict) else None
    return device if isinstance(device, dict) else None


def own_device_problem(
    device: dict[str, Any], user_id: str, device_id: str, own_keys: OwnKeys
) -> str | None:
    """Why the device keys a homeserver returned are not this device's own, or None.

    Signing them vouches for them to every client: a forged answer (another device's keys under
    this device id) would make people's clients trust a stranger with their messages. So they
    must be exactly the local Olm account's keys, self-signed by its Ed25519 key."""
    if device.get("user_id") != user_id or device.get("device_id") != device_id:
        return "name another user or device"
    expected = {
        f"curve25519:{device_id}": own_keys.get("curve25519"),
        f"ed25519:{device_id}": own_keys.get("ed25519"),
    }
    if device.get("keys") != expected:
        return "are not those of the local Olm account"
    signing_key = expected[f"ed25519:{device_id}"]
    if signing_key is None or not verify(device, user_id, signing_key, device_id):
        return "carry no valid signature by the device itself"
    return None


def stored_own_keys(data_dir: Path, user_id: str, device_id: str) -> dict[str, str] | None:
    """The device's identity keys read from nio's store in data_dir, for commands run while the
    bot is stopped; None when the store or its key cannot be read."""
    store = paths.crypto_store(data_dir) / f"{user_id}_{device_id}.db"  # nio's own naming
    try:
        passphrase = paths.crypto_key(data_dir).read_text(encoding="utf-8").strip()
        with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as db:
            row = db.execute(
                "SELECT account, shared FROM accounts WHERE user_id = ? AND device_id = ?",
                (user_id, device_id),
            ).fetchone()
        if row is None:
            return None
        pickle = row[0] if isinstance(row[0], bytes) else str(row[0]).encode()
        return dict(OlmAccount.from_pickle(pickle, passphrase, bool(row[1])).identity_keys)
    except (OSError, sqlite3.Error, ValueError):  # vodozemac's pickle errors are ValueErrors
        return None


def key_of(cross_signing_key: dict[str, Any] | None) -> str | None:
    """The public key inside a published cross-signing key object."""
    if not cross_signing_key:
        return None
    keys = list(cross_signing_key.get("keys", {}).values())
    return keys[0] if len(keys) == 1 and isinstance(keys[0], str) else None


@dataclass(frozen=True)
class Identity:
    """The bot's three cross-signing private keys."""

    master: EccKey
    self_signing: EccKey
    user_signing: EccKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(*(ECC.generate(curve="Ed25519") for _ in ROLES))

    @classmethod
    def load(cls, path: Path) -> Identity | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise CrossSigningError(
                f"{path} is unreadable ({exc}); restore it from backup"
            ) from None
        try:
            return cls(*(private_key(b64decode(data[r])) for r in ROLES))
        except (KeyError, TypeError, ValueError):
            raise CrossSigningError(f"{path} is damaged; restore it from backup") from None

    def save(self, path: Path) -> None:
        seeds = {role: unpadded_b64(self._private(role).seed) for role in ROLES}
        write_secret(path, json.dumps(seeds, indent=2))

    def _private(self, role: str) -> EccKey:
        key: EccKey = getattr(self, role)
        return key

    def published(self, user_id: str) -> dict[str, dict[str, Any]]:
        """The three public key objects, the sub-keys signed by the master key."""
        objects = {}
        for role in ROLES:
            key = public_key(self._private(role))
            obj: dict[str, Any] = {
                "user_id": user_id,
                "usage": [role],
                "keys": {f"ed25519:{key}": key},
            }
            if role != "master":
                obj = sign(obj, user_id, self.master)
            objects[f"{role}_key"] = obj
        return objects


class CrossSigning:
    """Talks to the homeserver's key endpoints for one user and device."""

    def __init__(
        self,
        homeserver: str,
        user_id: str,
        device_id: str,
        access_token: str,
        password: str | None,
        timeout_s: float = 30,
        own_keys: OwnKeys | None = None,
    ) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.password = password
        self.own_keys = own_keys
        self.http = cs_api.client(homeserver, access_token, timeout_s)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def published_keys(self) -> dict[str, Any]:
        response = await self.http.post("/keys/query", json={"device_keys": {self.user_id: []}})
        self._raise_for(response, "reading the bot's published keys")
        return json_body(response)  # an answer that is no JSON object holds no keys

    async def ensure(self, path: Path) -> str:
        """Make sure this device is signed by the bot's identity; return the master public key.

        An identity already published that is not the one in `path` is never replaced here:
        only `lucie-bot new-identity` does that, on purpose.
        """
        identity = Identity.load(path)
        published = await self.published_keys()
        self.own_device(published)  # a forged answer stops everything here, before any upload
        server_master = key_of(published.get("master_keys", {}).get(self.user_id))
        if identity is None:
            if server_master is not None:
                raise CrossSigningError(
                    f"{self.user_id} already has cross-signing keys on the homeserver but {path}"
                    " is missing: restore it from backup, or run `lucie-bot new-identity`"
                )
            identity = Identity.generate()
            identity.save(path)  # before the upload, so a crash cannot lose published keys
            await self.upload(identity)
        elif server_master is None:
            await self.upload(identity)
        elif server_master != public_key(identity.master):
            raise CrossSigningError(
                f"the cross-signing identity of {self.user_id} on the homeserver is not the one in"
                f" {path} (another client replaced it): `lucie-bot new-identity` takes it back"
            )
        await self.sign_device(identity, published)
        return public_key(identity.master)

    async def replace(self, path: Path) -> str:
        """A new identity, replacing whatever is published (needs the password).

        Run while the bot is stopped: the device's own keys come from the encryption store in
        the folder of `path` (data_dir) unless given."""
        if self.own_keys is None:
            self.own_keys = await asyncio.to_thread(
                stored_own_keys, path.parent, self.user_id, self.device_id
            )
        identity = Identity.generate()
        identity.save(path)
        await self.upload(identity)
        await self.sign_device(identity, await self.published_keys())
        return public_key(identity.master)

    async def upload(self, identity: Identity) -> None:
        body: dict[str, Any] = identity.published(self.user_id)
        response = await self.http.post("/keys/device_signing/upload", json=body)
        if response.status_code == 401 and "flows" in json_body(response):
            # first uploads may skip interactive auth (MSC3967); replacing keys never does
            body["auth"] = self._auth(json_body(response).get("session"))
            response = await self.http.post("/keys/device_signing/upload", json=body)
        self._raise_for(response, "uploading cross-signing keys")
        log.info("published cross-signing keys, master %s", public_key(identity.master))

    def _auth(self, session: Any) -> dict[str, Any]:
        if self.password is None:
            raise CrossSigningError(
                "the homeserver asks for the bot's password to publish cross-signing keys:"
                " set matrix.password"
            )
        return password_auth(self.user_id, self.password, session)

    def own_device(self, published: dict[str, Any]) -> dict[str, Any]:
        """This device's key object in a /keys/query answer, once checked to be its own."""
        device = published_device(published, self.user_id, self.device_id)
        if not isinstance(device, dict):
            raise CrossSigningError(
                f"device {self.device_id} has published no keys yet, so it cannot be signed"
            )
        if self.own_keys is None:
            raise CrossSigningError(
                f"device {self.device_id} not signed: its own keys could not be read from the"
                " encryption store (the bot signs it at its next start)"
            )
        problem = own_device_problem(device, self.user_id, self.device_id, self.own_keys)
        if problem is not None:
            raise CrossSigningError(
                f"device {self.device_id} not signed: the device keys the homeserver returned"
                f" {problem}"
            )
        return device

    async def sign_device(self, identity: Identity, published: dict[str, Any]) -> None:
        device = self.own_device(published)
        if verify(device, self.user_id, public_key(identity.self_signing)):
            return
        signed = sign(device, self.user_id, identity.self_signing)
        response = await self.http.post(
            "/keys/signatures/upload", json={self.user_id: {self.device_id: signed}}
        )
        self._raise_for(response, "uploading the device signature")
        failures = json_body(response).get("failures") or {}
        if failures:
            raise CrossSigningError(f"the homeserver refused the device signature: {failures}")
        log.info("device %s signed by the bot's self-signing key", self.device_id)

    @staticmethod
    def _raise_for(response: cs_api.Reply, doing: str) -> None:
        if response.is_success:
            return
        body = json_body(response)
        reason = body.get("errcode") or response.status_code
        message = body.get("error", "")
        raise CrossSigningError(f"{doing} failed: {reason} {message}".strip())
