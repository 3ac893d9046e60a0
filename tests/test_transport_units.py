"""The Matrix transport against hostile input, with nio's own event objects and stand-ins for
the homeserver: forged invites, encrypted "state", floods of events nobody can read."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from nio import (
    Event,
    InviteMemberEvent,
    InviteNameEvent,
    JoinResponse,
    MatrixRoom,
    MegolmEvent,
    PowerLevelsEvent,
    RedactionEvent,
    RoomLeaveResponse,
    RoomMemberEvent,
    RoomMessageText,
    RoomSendResponse,
    UploadResponse,
)
from nio.crypto.attachments import decrypt_attachment

import bot.matrix.invites as invites_module
import bot.matrix.undecryptable as undecryptable_module
from bot.config import Settings
from bot.core.attachments import send_image
from bot.core.ports import Image, SendRefused
from bot.matrix.sending import upload_image
from bot.matrix.transport import MatrixTransport
from bot.matrix.undecryptable import Undecryptable

BOT = "@lucie:localhost"
ROOM = "!room:localhost"


async def until(check: Callable[[], Any], within: float = 3) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class FakeStore:
    """What the transport and the undecryptable events ask of the database, in memory."""

    def __init__(self) -> None:
        self.rows: dict[str, Any] = {}
        # one object plays every aggregate the transport hands out
        self.crypto = self.rooms = self.sync = self

    async def room(self, room_id: str) -> Any:
        return SimpleNamespace(room_id=room_id, direct=False, joined_at=0)

    async def set_room(self, room_id: str, **fields: Any) -> None:
        pass

    async def keep_undecrypted(self, row: Any) -> bool:
        new = row.event_id not in self.rows
        self.rows.setdefault(row.event_id, row)
        return new

    async def undecrypted(self) -> list[Any]:
        return list(self.rows.values())

    async def drop_undecrypted(self, room_id: str, event_id: str) -> None:
        self.rows.pop(event_id, None)

    async def mark_session_noticed(
        self, room_id: str, sender: str, session_id: str, now: int
    ) -> None:
        pass


class FakeRelay:
    def __init__(self) -> None:
        self.joined_rooms: list[str] = []
        self.messages: list[str] = []
        self.redactions: list[str] = []

    def accepts_invite(self, inviter: str) -> bool:
        return inviter.endswith(":localhost")

    async def joined(self, room_id: str) -> None:
        self.joined_rooms.append(room_id)

    def introduce(self, room_id: str) -> None:
        pass

    async def on_message(self, room_id: str, event: dict[str, Any], is_dm: bool) -> None:
        self.messages.append(event["event_id"])

    async def on_reaction(self, room_id: str, event: dict[str, Any]) -> None:
        pass

    async def on_redaction(self, room_id: str, event: dict[str, Any]) -> None:
        self.redactions.append(event["event_id"])

    async def awaits_key(self, room_id: str, sender: str, ts: int) -> bool:
        return True

    async def unreadable(self, room_id: str, event_id: str) -> None:
        pass


class InviteClient:
    """A homeserver whose join answers at once, or never."""

    def __init__(self, hang: bool = False) -> None:
        self.hang = hang
        self.joins: list[str] = []
        self.left: list[str] = []
        self.in_flight = 0
        self.most_at_once = 0
        self.cut = 0

    async def join(self, room_id: str) -> JoinResponse:
        self.joins.append(room_id)
        self.in_flight += 1
        self.most_at_once = max(self.most_at_once, self.in_flight)
        try:
            if self.hang:
                await asyncio.Event().wait()
            return JoinResponse(room_id)
        except asyncio.CancelledError:
            self.cut += 1
            raise
        finally:
            self.in_flight -= 1

    async def room_leave(self, room_id: str) -> RoomLeaveResponse:
        self.left.append(room_id)
        return RoomLeaveResponse()

    async def close(self) -> None:
        pass


def make_transport(tmp_path: Path) -> tuple[MatrixTransport, FakeRelay]:
    settings = Settings(
        data_dir=tmp_path,
        matrix={
            "homeserver": "http://127.0.0.1:9",
            "user_id": BOT,
            "password": "unused",
            "allowed_inviters": ["localhost"],
        },
    )
    transport = MatrixTransport(settings, FakeStore())  # type: ignore[arg-type]
    relay = FakeRelay()
    transport.relay = relay  # type: ignore[assignment]
    return transport, relay


def use_client(transport: MatrixTransport, client: Any) -> None:
    transport.client = client
    if hasattr(transport, "invites"):  # the invites keep their own handle on the client
        transport.invites.client = client


def invite(sender: str, state_key: str = BOT, membership: str = "invite") -> Any:
    return InviteMemberEvent.from_dict(
        {
            "type": "m.room.member",
            "sender": sender,
            "state_key": state_key,
            "content": {"membership": membership},
        }
    )


# Invites
async def test_the_last_invite_for_the_bot_names_the_inviter(tmp_path):
    transport, relay = make_transport(tmp_path)
    client = InviteClient()
    use_client(transport, client)
    # a hostile server puts a forged invite "from" an allowed user first; Synapse appends the
    # real one, from the hostile server's own user, last
    name = InviteNameEvent.from_dict(
        {"type": "m.room.name", "sender": "@mallory:evil.example", "state_key": "",
         "content": {"name": "Salon"}}
    )  # fmt: skip
    state = [
        invite("@alice:localhost"),
        name,
        invite("@alice:localhost", state_key="@alice:localhost", membership="join"),
        invite("@mallory:evil.example"),
    ]
    await transport._on_invite("!forged:evil.example", state)
    await until(lambda: client.left or client.joins)
    assert client.left == ["!forged:evil.example"] and client.joins == []

    # and the other way round: a refusable invite first does not hide the real, allowed one
    state = [invite("@mallory:evil.example"), invite("@alice:localhost")]
    await transport._on_invite("!real:localhost", state)
    await until(lambda: relay.joined_rooms)
    assert client.joins == ["!real:localhost"] and relay.joined_rooms == ["!real:localhost"]
    await transport.close()


async def test_invites_are_handled_off_the_sync_loop_each_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(invites_module, "JOIN_TIMEOUT_S", 0.2, raising=False)
    monkeypatch.setattr(invites_module, "MAX_INVITES_IN_FLIGHT", 4, raising=False)
    monkeypatch.setattr(invites_module, "MAX_JOINS_AT_ONCE", 2, raising=False)
    transport, _ = make_transport(tmp_path)
    client = InviteClient(hang=True)  # a homeserver that never answers a join
    use_client(transport, client)
    for i in range(20):
        # the sync loop hands the invite over and goes on at once
        await asyncio.wait_for(
            transport._on_invite(f"!r{i}:localhost", [invite("@a:localhost")]), 1
        )
    await asyncio.sleep(0.05)
    assert 1 <= client.most_at_once <= 2
    assert len(set(client.joins)) <= 4  # the other invites wait on the server, not in memory
    await until(lambda: client.cut >= 2)  # a join that hangs is cut by its time-out
    await transport.close()
    assert client.in_flight == 0


# Encrypted events that claim to be what only the homeserver may send
def decrypted(event: Any) -> Any:
    event.decrypted = True
    return event


def base(event_id: str, event_type: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": event_type,
        "event_id": event_id,
        "sender": "@bob:localhost",
        "origin_server_ts": 1,
        **extra,
    }


async def test_decrypted_redactions_members_and_state_are_ignored(tmp_path):
    transport, relay = make_transport(tmp_path)
    text = {"msgtype": "m.text", "body": "x"}
    state = {"state_key": "", "content": text}
    events = [
        RedactionEvent.from_dict(base("$plain", "m.room.redaction", redacts="$a", content={})),
        decrypted(
            RedactionEvent.from_dict(base("$sealed", "m.room.redaction", redacts="$a", content={}))
        ),
        # room v11 puts "redacts" in the content: nio makes a BadEvent of it
        decrypted(Event.parse_event(base("$v11", "m.room.redaction", content={"redacts": "$a"}))),
        decrypted(
            RoomMemberEvent.from_dict(
                base("$member", "m.room.member", state_key=BOT, content={"membership": "leave"})
            )
        ),
        decrypted(RoomMessageText.from_dict(base("$state", "m.room.message", **state))),
        decrypted(RoomMessageText.from_dict(base("$message", "m.room.message", content=text))),
    ]
    for event in events:
        await transport._on_event(ROOM, event)
    assert relay.redactions == ["$plain"]
    assert relay.messages == ["$message"]
    await transport.close()


async def test_decrypted_state_never_changes_nios_view_of_the_room(tmp_path):
    transport, _ = make_transport(tmp_path)
    client = transport.client
    room = MatrixRoom(ROOM, BOT)
    forged: list[Any] = [
        RoomMemberEvent.from_dict(
            base(
                "$m", "m.room.member", state_key="@ghost:localhost", content={"membership": "join"}
            )
        ),
        PowerLevelsEvent.from_dict(
            base(
                "$p",
                "m.room.power_levels",
                state_key="",
                content={"users": {"@bob:localhost": 100}},
            )
        ),
    ]
    decrypt_calls: list[str] = []

    def decrypt(event: MegolmEvent) -> Any:
        decrypt_calls.append(event.event_id)
        return forged.pop(0)

    known = {"session0", "session1"}
    sessions = SimpleNamespace(get=lambda room_id, key, session: session in known or None)
    client.olm = SimpleNamespace(inbound_group_store=sessions, _decrypt_megolm_no_error=decrypt)  # type: ignore[assignment]
    for index in range(2):
        megolm = junk(index, "@bob:localhost", ROOM)
        result = client._handle_timeline_event(megolm, ROOM, room, set())
        assert result is not None and result.decrypted
    assert "@ghost:localhost" not in room.users
    assert room.power_levels.get_user_level("@bob:localhost") == 0
    # no key: nio is not even asked, since it would queue a key request per event, unbounded
    assert client._handle_timeline_event(junk(2, "@bob:localhost", ROOM), ROOM, room, set()) is None
    assert decrypt_calls == ["$junk0", "$junk1"]
    client.olm = None
    await transport.close()


# Events nobody can read
def junk(index: int, sender: str, room_id: str) -> MegolmEvent:
    event = MegolmEvent.from_dict(
        {
            "type": "m.room.encrypted",
            "event_id": f"$junk{index}",
            "sender": sender,
            "origin_server_ts": int(time.time() * 1000),
            "content": {
                "algorithm": "m.megolm.v1.aes-sha2",
                "sender_key": "made-up",
                "ciphertext": "garbage",
                "session_id": f"session{index}",
                "device_id": "DEVICE",
            },
        }
    )
    event.room_id = room_id
    return event


class KeyClient:
    device_id = "BOTDEVICE"
    olm = None

    def __init__(self) -> None:
        self.key_requests = 0

    async def request_room_key(self, event: MegolmEvent) -> None:
        self.key_requests += 1

    async def to_device(self, message: Any) -> None:
        self.key_requests += 1


class StuckNotices(FakeRelay):
    """Notices that never get through, as under a homeserver's rate limit."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[tuple[str, str]] = []
        self.cut = 0

    async def unreadable(self, room_id: str, event_id: str) -> None:
        self.started.append((room_id, event_id))
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cut += 1
            raise


async def test_a_flood_from_one_member_is_kept_and_asked_for_only_so_far():
    client, store, decisions = KeyClient(), FakeStore(), StuckNotices()
    waiting = Undecryptable(client, store, key_wait_s=60, keep_for_ms=600_000)  # type: ignore[arg-type]
    for index in range(100):
        await waiting.keep(ROOM, junk(index, "@bob:localhost", ROOM), decisions)
    await asyncio.sleep(0.05)
    assert waiting.waiting <= 20
    assert client.key_requests <= 10
    # someone else in the same room is still waited for
    await waiting.keep(ROOM, junk(1000, "@alice:localhost", ROOM), decisions)
    assert "$junk1000" in store.rows
    await waiting.close()


async def test_unreadable_notices_are_rate_limited_and_never_hold_the_sync_loop(monkeypatch):
    monkeypatch.setattr(undecryptable_module, "NOTICE_TIMEOUT_S", 0.3, raising=False)
    client, store, decisions = KeyClient(), FakeStore(), StuckNotices()
    waiting = Undecryptable(client, store, key_wait_s=0, keep_for_ms=600_000)  # type: ignore[arg-type]
    senders = {}
    plan = [("@bob:localhost", ROOM)] * 15 + [("@carol:localhost", ROOM)] * 3
    plan += [("@dave:localhost", "!other:localhost")] * 3
    for index, (sender, room_id) in enumerate(plan):
        await waiting.keep(room_id, junk(index, sender, room_id), decisions)
        senders[f"$junk{index}"] = sender
    await asyncio.sleep(0.01)  # past the (zero) key wait

    async def handle(room_id: str, event: Any) -> None:
        raise AssertionError("nothing here can be decrypted")

    await asyncio.wait_for(waiting.retry(decisions, handle), 1)
    await asyncio.wait_for(waiting.retry(decisions, handle), 1)
    await asyncio.sleep(0.05)
    per_sender = Counter(senders[event_id] for _, event_id in decisions.started)
    per_room = Counter(room_id for room_id, _ in decisions.started)
    assert per_sender and max(per_sender.values()) == 1, per_sender
    assert max(per_room.values()) <= 2, per_room
    assert per_sender["@dave:localhost"] == 1  # a flood in one room leaves the others heard
    await until(lambda: decisions.cut == len(decisions.started))  # each notice has a time-out
    await waiting.close()


# Pictures (`!lucie stats`' chart): uploaded encrypted for an encrypted room, or not at all
class MediaClient:
    """A homeserver's media repository and room_send; `encrypt_during_upload` turns the room's
    encryption on while an upload is under way, as an m.room.encryption event synced then would."""

    def __init__(self, rooms: dict[str, bool], encrypt_during_upload: bool = False) -> None:
        self.rooms = {room_id: SimpleNamespace(encrypted=on) for room_id, on in rooms.items()}
        self.encrypt_during_upload = encrypt_during_upload
        self.uploads: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []

    async def upload(self, provide: Any, **options: Any) -> tuple[Any, None]:
        self.uploads.append({"data": provide(0, 0).read(), **options})
        if self.encrypt_during_upload:
            for room in self.rooms.values():
                room.encrypted = True
        return UploadResponse(f"mxc://localhost/{len(self.uploads)}"), None

    async def room_send(self, room_id: str, kind: str, content: dict, **_: Any) -> Any:
        self.sent.append(content)
        return RoomSendResponse(f"$sent{len(self.sent)}", room_id)

    async def close(self) -> None:
        pass


CHART = Image(b"\x89PNG secret chart", "approval-of-bob.png", 10, 10)


async def chart() -> Image:
    return CHART


async def test_a_picture_for_a_room_the_client_does_not_know_is_not_uploaded(tmp_path):
    transport, _ = make_transport(tmp_path)
    client = MediaClient({})
    use_client(transport, client)
    with pytest.raises(SendRefused):
        await upload_image(client, ROOM, CHART)
    assert await send_image(transport, ROOM, chart) is None
    assert client.uploads == [] and client.sent == []


async def test_a_picture_for_an_encrypted_room_goes_up_encrypted_and_unnamed(tmp_path):
    transport, _ = make_transport(tmp_path)
    client = MediaClient({ROOM: True})
    use_client(transport, client)
    assert await send_image(transport, ROOM, chart) == "$sent1"
    (upload,) = client.uploads
    assert upload["filename"] is None and upload["content_type"] == "application/octet-stream"
    assert CHART.data not in upload["data"]
    (content,) = client.sent
    assert "url" not in content  # the key is in the (encrypted) event only
    keys = content["file"]
    plain = decrypt_attachment(upload["data"], keys["key"]["k"], keys["hashes"]["sha256"],
                               keys["iv"])  # fmt: skip
    assert plain == CHART.data


async def test_a_plain_upload_is_not_named_in_a_room_encrypted_meanwhile(tmp_path):
    transport, _ = make_transport(tmp_path)
    client = MediaClient({ROOM: False}, encrypt_during_upload=True)
    use_client(transport, client)
    assert await send_image(transport, ROOM, chart) is None
    assert client.uploads[0]["filename"] == CHART.name  # in the clear: the room was then
    assert client.sent == []  # but no encrypted event points at it
    # a room that stays unencrypted gets its picture as before
    client = MediaClient({ROOM: False})
    use_client(transport, client)
    assert await send_image(transport, ROOM, chart) == "$sent1"
    assert client.sent[0]["url"] == "mxc://localhost/1"
