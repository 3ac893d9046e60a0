"""Cross-signing keys and signatures, and the encryption-store checks, on real files."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from typing import Any

import aiosqlite
import httpx
import pytest
from Crypto.PublicKey import ECC
from Crypto.Signature import eddsa
from nio.crypto import OlmAccount
from nio.store import DefaultStore

from bot.matrix.cross_signing import (
    CrossSigning,
    CrossSigningError,
    Identity,
    key_of,
    public_key,
    sign,
    signable,
    unpadded_b64,
    verify,
)
from bot.matrix.crypto_store import CryptoStore
from bot.matrix.device_store import StoreProblem, check_store, retire, store_file

USER = "@lucie:example.org"


def test_identity_round_trip_private_file_and_signed_sub_keys(tmp_path):
    path = tmp_path / "cross-signing.json"
    assert Identity.load(path) is None
    identity = Identity.generate()
    identity.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = Identity.load(path)
    assert again is not None and public_key(again.master) == public_key(identity.master)
    published = identity.published(USER)
    master = key_of(published["master_key"])
    assert master == public_key(identity.master)
    for role in ("self_signing_key", "user_signing_key"):
        assert verify(published[role], USER, master)
        tampered = {**published[role], "usage": ["master"]}
        assert not verify(tampered, USER, master)
    assert not verify(published["self_signing_key"], USER, key_of(published["user_signing_key"]))


def test_signatures_accumulate_and_cover_canonical_json_only():
    identity = Identity.generate()
    device = {"user_id": USER, "device_id": "DEV", "keys": {"ed25519:DEV": "x"}, "unsigned": {}}
    once = sign(device, USER, identity.self_signing)
    twice = sign(once, USER, identity.master)
    assert verify(twice, USER, public_key(identity.self_signing))
    assert verify(twice, USER, public_key(identity.master))
    reordered = {"unsigned": {"device_display_name": "n"}, **dict(reversed(list(twice.items())))}
    assert verify(reordered, USER, public_key(identity.master))  # order and unsigned ignored


def test_damaged_identity_file_is_one_line(tmp_path):
    path = tmp_path / "cross-signing.json"
    path.write_text('{"master": "AAAA"}')
    with pytest.raises(CrossSigningError, match="damaged; restore it from backup"):
        Identity.load(path)
    path.write_text("{not json")
    with pytest.raises(CrossSigningError, match="unreadable"):
        Identity.load(path)


async def _nio_like_store(path, device_id: str | None) -> None:
    async with aiosqlite.connect(path) as db:
        await db.execute(
            "CREATE TABLE accounts (id INTEGER PRIMARY KEY, account BLOB, user_id TEXT, "
            "device_id TEXT, shared INTEGER)"
        )
        if device_id:
            await db.execute(
                "INSERT INTO accounts (account, user_id, device_id, shared) "
                "VALUES (x'00', ?, ?, 1)",
                (USER, device_id),
            )
        await db.commit()


async def test_store_checks_name_the_problem(tmp_path):
    await check_store(tmp_path, USER, None)  # first start: nothing yet, nothing to check
    with pytest.raises(StoreProblem, match="encryption store of device DEV is missing"):
        await check_store(tmp_path, USER, "DEV")
    path = store_file(tmp_path, USER, "DEV")
    path.write_bytes(b"garbage" * 1000)
    with pytest.raises(StoreProblem, match="is damaged"):
        await check_store(tmp_path, USER, "DEV")
    path.unlink()
    await _nio_like_store(path, "OTHER")
    with pytest.raises(StoreProblem, match="holds no keys for device DEV"):
        await check_store(tmp_path, USER, "DEV")
    path.unlink()
    await _nio_like_store(path, "DEV")
    await check_store(tmp_path, USER, "DEV")
    with pytest.raises(StoreProblem, match="saved login is missing"):
        await check_store(tmp_path, USER, None)  # a login lost beside a store: no new device


def test_retire_moves_login_and_store_with_its_journal(tmp_path):
    store_dir = tmp_path / "crypto"
    store_dir.mkdir()
    login = tmp_path / "credentials.json"
    login.write_text("{}")
    store = store_file(store_dir, USER, "DEV")
    store.write_bytes(b"db")
    (store_dir / (store.name + "-wal")).write_bytes(b"wal")
    folder = retire(tmp_path, store_dir, USER, [login])
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["credentials.json", store.name, store.name + "-wal"]
    )
    assert not login.exists() and list(store_dir.iterdir()) == []


def test_backup_session_data_round_trip_and_tampering(tmp_path):
    from bot.matrix.key_backup import decrypt_session, encrypt_session, load_or_create_key

    path = tmp_path / "key-backup.json"
    private, made = load_or_create_key(path)
    assert made and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again, made_again = load_or_create_key(path)
    assert not made_again and again.seed == private.seed
    public = private.public_key().export_key(format="raw")
    data = {"algorithm": "m.megolm.v1.aes-sha2", "session_key": "AQID", "sender_key": "k"}
    sealed = encrypt_session(public, data)
    assert "AQID" not in json.dumps(sealed)
    assert decrypt_session(private, sealed) == data
    with pytest.raises(ValueError, match="MAC"):
        decrypt_session(private, {**sealed, "mac": "AAAAAAAAAAA"})
    other, _ = load_or_create_key(tmp_path / "other.json")
    with pytest.raises(ValueError):
        decrypt_session(other, sealed)  # only the backup's key opens it


class Device:
    """A device's identity keys, as its Olm account holds them, and its self-signed key object."""

    def __init__(self, device_id: str = "DEV") -> None:
        self.device_id = device_id
        self.signing = ECC.generate(curve="Ed25519")
        curve = ECC.generate(curve="Curve25519").public_key().export_key(format="raw")
        self.keys = {"curve25519": unpadded_b64(curve), "ed25519": public_key(self.signing)}

    def published(self, **changes: Any) -> dict[str, Any]:
        device = {
            "user_id": USER,
            "device_id": self.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"{kind}:{self.device_id}": key for kind, key in self.keys.items()},
            **changes,
        }
        signature = unpadded_b64(eddsa.new(self.signing, "rfc8032").sign(signable(device)))
        return {**device, "signatures": {USER: {f"ed25519:{self.device_id}": signature}}}


def key_service(answer: dict[str, Any], own_keys: dict[str, str], paths: list[str]) -> Any:
    """A CrossSigning whose homeserver answers /keys/query with `answer`, accepts uploads and
    notes every path it is asked."""
    uploads: list[dict[str, Any]] = []

    def homeserver(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path.endswith("/keys/query"):
            return httpx.Response(200, json=answer)
        if request.url.path.endswith("/keys/signatures/upload"):
            uploads.append(json.loads(request.content))
            return httpx.Response(200, json={"failures": {}})
        if request.url.path.endswith("/keys/device_signing/upload"):
            return httpx.Response(200, json={})
        return httpx.Response(404, json={"errcode": "M_UNRECOGNIZED"})

    service = CrossSigning("http://hs.invalid", USER, "DEV", "token", None)
    service.own_keys = own_keys  # as the running bot gives them, from its Olm account
    service.http = httpx.AsyncClient(
        base_url="http://hs.invalid/_matrix/client/v3", transport=httpx.MockTransport(homeserver)
    )
    return service, uploads


async def sign_what_the_server_returns(
    answer: dict[str, Any], own_keys: dict[str, str]
) -> tuple[list[dict[str, Any]], str | None, Identity]:
    """Run the device signing against a homeserver answering /keys/query with `answer`; return
    the signature uploads it made, its refusal if any, and the identity used."""
    service, uploads = key_service(answer, own_keys, [])
    identity = Identity.generate()
    refusal = None
    try:
        await service.sign_device(identity, await service.published_keys())
    except CrossSigningError as exc:
        refusal = str(exc)
    finally:
        await service.aclose()
    return uploads, refusal, identity


def keys_answer(device: dict[str, Any]) -> dict[str, Any]:
    return {"device_keys": {USER: {"DEV": device}}}


async def test_the_bot_signs_its_own_device_keys():
    own = Device()
    uploads, refusal, identity = await sign_what_the_server_returns(
        keys_answer(own.published()), own.keys
    )
    assert refusal is None and len(uploads) == 1
    signed = uploads[0][USER]["DEV"]
    assert verify(signed, USER, public_key(identity.self_signing))
    assert verify(signed, USER, own.keys["ed25519"], "DEV")  # its own signature kept


async def test_forged_device_keys_from_the_homeserver_are_never_signed():
    own, stranger = Device(), Device()
    half = Device()
    half.keys = {**own.keys, "curve25519": stranger.keys["curve25519"]}
    half.signing = own.signing  # own signing key, but another curve25519 key
    unsigned = own.published()
    del unsigned["signatures"]
    tampered = own.published()
    tampered["algorithms"] = ["m.olm.v1.curve25519-aes-sha2"]  # changed after it was signed
    forged_answers = {
        "a stranger's keys under the bot's device id": stranger.published(),
        "another curve25519 key": half.published(),
        "no self-signature": unsigned,
        "a broken self-signature": tampered,
        "another user's device": own.published(user_id="@mallory:example.org"),
        "one key more": own.published(keys={**own.published()["keys"], "ed25519:X": "AAAA"}),
    }
    for case, device in forged_answers.items():
        uploads, refusal, _ = await sign_what_the_server_returns(keys_answer(device), own.keys)
        assert uploads == [], case
        assert refusal is not None and refusal.startswith("device DEV not signed"), case
        assert "\n" not in refusal, case


async def test_a_forged_answer_stops_cross_signing_before_any_upload(tmp_path):
    own, stranger = Device(), Device()
    paths: list[str] = []
    service, uploads = key_service(keys_answer(stranger.published()), own.keys, paths)
    try:
        with pytest.raises(CrossSigningError, match="not those of the local Olm account"):
            await service.ensure(tmp_path / "cross-signing.json")
    finally:
        await service.aclose()
    assert [path.rsplit("/v3", 1)[1] for path in paths] == ["/keys/query"]  # nothing uploaded
    assert uploads == [] and not (tmp_path / "cross-signing.json").exists()
    service, uploads = key_service(keys_answer(own.published()), own.keys, paths)
    try:
        master = await service.ensure(tmp_path / "cross-signing.json")
    finally:
        await service.aclose()
    assert len(uploads) == 1 and Identity.load(tmp_path / "cross-signing.json") is not None
    assert public_key(Identity.load(tmp_path / "cross-signing.json").master) == master


def test_stored_own_keys_read_the_olm_account_and_fail_quietly(tmp_path):
    from nio.crypto import OlmAccount

    from bot.matrix.cross_signing import stored_own_keys

    assert stored_own_keys(tmp_path, USER, "DEV") is None  # no store, no key
    account = OlmAccount()
    (tmp_path / "crypto").mkdir()
    (tmp_path / "crypto.key").write_text("pickle-key\n")
    store = store_file(tmp_path / "crypto", USER, "DEV")
    with sqlite3.connect(store) as db:
        db.execute("CREATE TABLE accounts (account BLOB, user_id TEXT, device_id TEXT, shared INT)")
        db.execute(
            "INSERT INTO accounts VALUES (?, ?, 'DEV', 1)", (account.pickle("pickle-key"), USER)
        )
    db.close()
    assert stored_own_keys(tmp_path, USER, "DEV") == account.identity_keys
    (tmp_path / "crypto.key").write_text("another key")
    assert stored_own_keys(tmp_path, USER, "DEV") is None


def test_a_sync_with_no_new_encrypted_room_writes_nothing(tmp_path, monkeypatch):
    """nio saves the encrypted rooms after every sync: only new ones reach the database."""
    saved: list[set[str]] = []
    original = DefaultStore.save_encrypted_rooms

    def counting(self: DefaultStore, rooms: set[str]) -> None:
        saved.append(set(rooms))
        original(self, rooms)

    monkeypatch.setattr(DefaultStore, "save_encrypted_rooms", counting)
    store = CryptoStore("@bot:x", "DEVICE", str(tmp_path), pickle_key="clé")
    store.save_account(OlmAccount())
    store.save_encrypted_rooms({"!a:x"})
    for _ in range(3):  # the syncs that follow
        store.save_encrypted_rooms({"!a:x"})
        store.save_encrypted_rooms(set())
    store.save_encrypted_rooms({"!a:x", "!b:x"})
    assert saved == [{"!a:x"}, {"!b:x"}]
    again = CryptoStore("@bot:x", "DEVICE", str(tmp_path), pickle_key="clé")  # a restart
    again.save_encrypted_rooms({"!a:x", "!b:x"})
    assert len(saved) == 2 and again.load_encrypted_rooms() == {"!a:x", "!b:x"}
    again.delete_encrypted_room("!b:x")
    again.save_encrypted_rooms({"!b:x"})  # encrypted again: saved again
    assert saved[-1] == {"!b:x"} and again.load_encrypted_rooms() == {"!a:x", "!b:x"}
