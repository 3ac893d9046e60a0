"""Cross-signing keys and signatures, and the encryption-store checks, on real files."""

from __future__ import annotations

import json
import os
import stat

import aiosqlite
import pytest

from bot.matrix.cross_signing import CrossSigningError, Identity, key_of, public_key, sign, verify
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
    assert not made_again and again.private_bytes_raw() == private.private_bytes_raw()
    public = private.public_key().public_bytes_raw()
    data = {"algorithm": "m.megolm.v1.aes-sha2", "session_key": "AQID", "sender_key": "k"}
    sealed = encrypt_session(public, data)
    assert "AQID" not in json.dumps(sealed)
    assert decrypt_session(private, sealed) == data
    with pytest.raises(ValueError, match="MAC"):
        decrypt_session(private, {**sealed, "mac": "AAAAAAAAAAA"})
    other, _ = load_or_create_key(tmp_path / "other.json")
    with pytest.raises(ValueError):
        decrypt_session(other, sealed)  # only the backup's key opens it
