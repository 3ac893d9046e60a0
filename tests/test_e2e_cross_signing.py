"""The bot's device is cross-signed by its own identity, which survives restarts and a lost
encryption store; a lost or damaged store stops start-up with one line and a way out."""

from __future__ import annotations

import base64
import json
import os
import re
import stat

from canonicaljson import encode_canonical_json
from Crypto.Signature import eddsa

from tests.conftest import invite_bot
from tests.support.matrix_user import eventually, final_answer


def _b64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def signed_by(obj: dict, user_id: str, public_key: str, key_name: str | None = None) -> bool:
    """A client's own check: the signature by this key over the canonical JSON is valid.

    Cross-signing keys sign under their public key's name, devices under their device id."""
    key_id = f"ed25519:{key_name or public_key}"
    signature = obj.get("signatures", {}).get(user_id, {}).get(key_id)
    if signature is None:
        return False
    unsigned = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
    key = eddsa.import_public_key(_b64(public_key))
    try:
        eddsa.new(key, "rfc8032").verify(encode_canonical_json(unsigned), _b64(signature))
    except ValueError:  # not authentic
        return False
    return True


def only_key(key_object: dict) -> str:
    (key,) = key_object["keys"].values()
    return key


def published(synapse, viewer, bot_id: str) -> dict:
    return synapse.request(
        "POST",
        "/_matrix/client/v3/keys/query",
        {"device_keys": {bot_id: []}},
        token=viewer.client.access_token,
    )


def assert_cross_signed(keys: dict, bot_id: str, device_id: str) -> str:
    """The checks another client makes before trusting the device; returns the master key."""
    master, self_signing = keys["master_keys"][bot_id], keys["self_signing_keys"][bot_id]
    assert master["usage"] == ["master"] and self_signing["usage"] == ["self_signing"]
    master_key = only_key(master)
    assert signed_by(self_signing, bot_id, master_key)
    device = keys["device_keys"][bot_id][device_id]
    assert signed_by(device, bot_id, device["keys"][f"ed25519:{device_id}"], device_id)  # itself
    assert signed_by(device, bot_id, only_key(self_signing))  # and by its owner
    forged = {**device, "device_id": "FORGED"}
    assert not signed_by(forged, bot_id, only_key(self_signing))  # the check can fail
    return master_key


def device_of(bot) -> str:
    return json.loads((bot.data_dir / "credentials.json").read_text())["device_id"]


def exit_line(bot) -> str:
    assert bot.process.wait(timeout=60) == 1
    lines = bot.log().strip().splitlines()
    assert "Traceback" not in bot.log()
    return lines[-1]


async def test_cross_signed_device_kept_across_restart_and_store_loss(
    make_user, start_bot, synapse, llm
):
    bot = start_bot()
    alice = await make_user("alice", encryption=True)
    room = await invite_bot(alice, bot, direct=True, encrypted=True)
    first = device_of(bot)
    master = assert_cross_signed(published(synapse, alice, bot.user_id), bot.user_id, first)
    identity = bot.data_dir / "cross-signing.json"
    assert stat.S_IMODE(os.stat(identity).st_mode) == 0o600
    assert master not in identity.read_text()  # the file holds private seeds, not public keys

    bot.stop()
    bot.start()
    question = await alice.send(room, "Toujours vérifié ?")
    assert await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, question), 60)
    keys = published(synapse, alice, bot.user_id)
    assert assert_cross_signed(keys, bot.user_id, first) == master  # same identity
    assert bot.log().count("published cross-signing keys") == 1

    # the room keys are backed up on the server, the backup signed by the bot's identity
    token = json.loads((bot.data_dir / "credentials.json").read_text())["access_token"]
    backup = synapse.request("GET", "/_matrix/client/v3/room_keys/version", token=token)
    assert backup["algorithm"] == "m.megolm_backup.v1.curve25519-aes-sha2"
    assert signed_by(backup["auth_data"], bot.user_id, master)
    assert backup["count"] >= 1

    # a question sent while the bot is down, for the device about to lose its store
    bot.stop()
    during = await alice.send(room, "Question envoyée pendant la panne")

    # a damaged, then a missing store: one line each, and no new device on the account
    store = bot.data_dir / "crypto" / f"{bot.user_id}_{first}.db"
    healthy = store.read_bytes()
    store.write_bytes(b"not a database" * 100)
    bot.start()
    line = exit_line(bot)
    assert "damaged" in line and "lucie-bot new-device" in line
    store.write_bytes(healthy)
    store.unlink()
    bot.start()
    line = exit_line(bot)
    assert f"encryption store of device {first} is missing" in line and "new-device" in line
    assert list(published(synapse, alice, bot.user_id)["device_keys"][bot.user_id]) == [first]

    # the documented way out: a new device, signed by the same identity, that answers
    recovery = bot.command("new-device")
    assert recovery.returncode == 0, recovery.stderr
    assert f"removed device {first}" in recovery.stdout
    assert not (bot.data_dir / "credentials.json").exists()
    bot.start()

    async def new_device_known() -> bool:  # as any client learns of a new device
        await alice.sync(500)
        devices = [d.id for d in alice.client.device_store.active_user_devices(bot.user_id)]
        return bool(devices) and first not in devices

    await eventually(new_device_known, within=60)
    # the key backup gave the new device the old room keys: the question from the outage is read
    assert await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, during), 60)
    restored = re.findall(r"restored (\d+) room keys from the key backup", bot.log())
    assert restored[-1] != "0"
    after = await alice.send(room, "Tu m'entends avec ton nouvel appareil ?")
    assert await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, after), 90)
    second = device_of(bot)
    keys = published(synapse, alice, bot.user_id)
    assert second != first and list(keys["device_keys"][bot.user_id]) == [second]
    assert assert_cross_signed(keys, bot.user_id, second) == master
    assert bot.log().count("published cross-signing keys") == 1  # never a new identity


async def test_lost_identity_file_is_named_and_new_identity_replaces_it(
    make_user, start_bot, synapse
):
    bot = start_bot()
    alice = await make_user("alice", encryption=True)
    room = await invite_bot(alice, bot, direct=True, encrypted=True)
    device = device_of(bot)
    old_master = only_key(published(synapse, alice, bot.user_id)["master_keys"][bot.user_id])

    bot.stop()
    (bot.data_dir / "cross-signing.json").unlink()
    bot.start()  # still answers; says what is wrong and never makes an identity by itself
    question = await alice.send(room, "Et sans tes clés d'identité ?")
    assert await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, question), 60)
    assert "already has cross-signing keys on the homeserver" in bot.log()
    assert "lucie-bot new-identity" in bot.log()
    keys = published(synapse, alice, bot.user_id)
    assert only_key(keys["master_keys"][bot.user_id]) == old_master

    bot.stop()
    replaced = bot.command("new-identity")
    assert replaced.returncode == 0, replaced.stderr
    assert "published a new cross-signing identity" in replaced.stdout
    new_master = assert_cross_signed(published(synapse, alice, bot.user_id), bot.user_id, device)
    assert new_master != old_master
    bot.start()
    again = await alice.send(room, "Et avec la nouvelle identité ?")
    assert await alice.wait_for(room, lambda ev: final_answer(ev, bot.user_id, again), 60)
    assert f"is cross-signed (master key {new_master})" in bot.log()
