"""A real Matrix client (matrix-nio) acting as a person in the tests."""

from __future__ import annotations

import asyncio
import io
import secrets
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from nio import (
    Api,
    AsyncClient,
    AsyncClientConfig,
    MegolmEvent,
    MessageDirection,
    RoomCreateResponse,
    RoomMessagesResponse,
    RoomSendResponse,
    SyncResponse,
    ToDeviceMessage,
    ToDeviceResponse,
    UploadResponse,
)
from nio.crypto.attachments import encrypt_attachment

from bot.matrix.nio_client import exchange_keys
from tests.support.synapse import RegisteredUser

T = TypeVar("T")
LIVE = "org.matrix.msc4357.live"
# without a limit Synapse sends the last 10 events of a busy room and drops the rest from sync
SYNC_FILTER = {"room": {"timeline": {"limit": 500}}}


class MatrixUser:
    def __init__(
        self, homeserver: str, user: RegisteredUser, folder: Path, encryption: bool = False
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        config = AsyncClientConfig(
            encryption_enabled=encryption, store_sync_tokens=True, max_limit_exceeded=5
        )
        self.client = AsyncClient(
            homeserver,
            user.user_id,
            device_id=user.device_id,
            store_path=str(folder),
            config=config,
        )
        self.client.restore_login(user.user_id, user.device_id, user.access_token)
        self.user_id = user.user_id
        self.events: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.undecrypted = 0
        self.to_device: list[Any] = []  # every to-device event received (key requests...)
        self.typing: dict[str, set[str]] = defaultdict(set)  # every user ever seen typing

    async def sync(self, timeout_ms: int = 300) -> None:
        client = self.client
        response = await client.sync(
            timeout=timeout_ms, full_state=client.next_batch is None, sync_filter=SYNC_FILTER
        )
        if not isinstance(response, SyncResponse):
            return
        self.to_device.extend(response.to_device_events)
        for room_id, info in response.rooms.join.items():
            for ephemeral in info.ephemeral:
                self.typing[room_id].update(getattr(ephemeral, "users", []))
            for event in info.timeline.events:
                if isinstance(event, MegolmEvent):
                    self.undecrypted += 1
                    continue
                self.events[room_id].append(event.source)
        if client.olm:
            await exchange_keys(client)

    async def wait_for(
        self, room_id: str, found: Callable[[list[dict[str, Any]]], T | None], within: float = 30
    ) -> T:
        deadline = time.monotonic() + within
        while True:
            result = found(self.events[room_id])
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"not seen within {within} s in {room_id}")
            await self.sync()

    async def create_room(
        self, invite: list[str], direct: bool = False, encrypted: bool = False
    ) -> str:
        initial_state = []
        if encrypted:
            initial_state.append(
                {
                    "type": "m.room.encryption",
                    "state_key": "",
                    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
                }
            )
        response = await self.client.room_create(
            invite=invite,
            is_direct=direct,
            initial_state=initial_state,
            preset=None,
        )
        assert isinstance(response, RoomCreateResponse), response
        await self.sync(0)
        return response.room_id

    async def send(
        self,
        room_id: str,
        body: str,
        mentions: list[str] | None = None,
        reply_to: str | None = None,
        thread_root: str | None = None,
        msgtype: str = "m.text",
        extra: dict[str, Any] | None = None,
    ) -> str:
        content: dict[str, Any] = {"msgtype": msgtype, "body": body}
        if mentions is not None:
            content["m.mentions"] = {"user_ids": mentions}
        if thread_root:
            content["m.relates_to"] = {
                "rel_type": "m.thread",
                "event_id": thread_root,
                "is_falling_back": True,
                "m.in_reply_to": {"event_id": reply_to or thread_root},
            }
        elif reply_to:
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
        content.update(extra or {})
        return await self.send_raw(room_id, "m.room.message", content)

    async def send_file(
        self,
        room_id: str,
        path: Path,
        mimetype: str = "application/octet-stream",
        encrypted: bool = False,
        reply_to: str | None = None,
    ) -> str:
        """Upload a file and share it as an m.file message; in encrypted rooms the upload is
        encrypted and the event carries its key, as every Matrix client does."""
        data = await asyncio.to_thread(path.read_bytes)
        keys: dict[str, Any] | None = None
        if encrypted:  # encrypted here: nio's streaming encryption may hand back no key
            data, keys = encrypt_attachment(data)
        response, _ = await self.client.upload(
            lambda *_: io.BytesIO(data),
            content_type="application/octet-stream" if encrypted else mimetype,
            filename=path.name,
            filesize=len(data),
        )
        assert isinstance(response, UploadResponse), response
        content: dict[str, Any] = {
            "msgtype": "m.file",
            "body": path.name,
            "filename": path.name,
            "info": {"mimetype": mimetype, "size": len(data)},
        }
        if encrypted:
            content["file"] = {"url": response.content_uri, **(keys or {})}
        else:
            content["url"] = response.content_uri
        if reply_to:
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
        return await self.send_raw(room_id, "m.room.message", content)

    async def send_raw(self, room_id: str, event_type: str, content: dict[str, Any]) -> str:
        response = await self.client.room_send(
            room_id, event_type, content, ignore_unverified_devices=True
        )
        assert isinstance(response, RoomSendResponse), response
        return response.event_id

    async def react(self, room_id: str, event_id: str, key: str) -> str:
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}
        return await self.send_raw(room_id, "m.reaction", content)

    async def react_encrypted(self, room_id: str, event_id: str, key: str) -> str:
        """A reaction encrypted like any event, as some clients send them (nio never does)."""
        content = {"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": key}}
        return await self.send_encrypted(room_id, "m.reaction", content)

    async def send_encrypted(
        self, room_id: str, event_type: str, content: dict[str, Any], **top_level: Any
    ) -> str:
        """Any inner event type, with any top-level keys (redacts, state_key...), inside an
        m.room.encrypted event: what a hostile member's client can write."""
        client, olm = self.client, self.client.olm
        assert olm is not None
        room = client.rooms[room_id]
        if not room.members_synced:
            await client.joined_members(room_id)
        session = olm.outbound_group_sessions.get(room_id)
        if session is None or not session.shared or session.expired:
            await client.share_group_session(room_id, ignore_unverified_devices=True)
        payload = {**top_level, "type": event_type, "content": content}
        encrypted = olm.group_encrypt(room_id, payload)
        return await self._put_event(room_id, "m.room.encrypted", encrypted)

    async def send_junk_encrypted(self, room_id: str, count: int, at_once: int = 10) -> list[str]:
        """m.room.encrypted events no one can read: made-up sessions, garbage ciphertext, sent
        raw through the client-server API. They name this user's real device, so the key
        requests the bot sends for them arrive here and can be counted."""
        device_id = self.client.device_id
        gate = asyncio.Semaphore(at_once)

        async def one() -> str:
            content = {
                "algorithm": "m.megolm.v1.aes-sha2",
                "sender_key": secrets.token_urlsafe(32).rstrip("="),
                "ciphertext": secrets.token_urlsafe(96),
                "session_id": secrets.token_urlsafe(32).rstrip("="),
                "device_id": device_id,
            }
            async with gate:
                return await self._put_event(room_id, "m.room.encrypted", content)

        return list(await asyncio.gather(*(one() for _ in range(count))))

    async def _put_event(self, room_id: str, event_type: str, content: dict[str, Any]) -> str:
        token = self.client.access_token
        method, path, data = Api.room_send(token, room_id, event_type, content, uuid.uuid4().hex)
        response = await self.client._send(RoomSendResponse, method, path, data, (room_id,))
        assert isinstance(response, RoomSendResponse), response
        return response.event_id

    async def redact(self, room_id: str, event_id: str) -> None:
        await self.client.room_redact(room_id, event_id)

    async def set_power(self, room_id: str, user_id: str, level: int) -> None:
        response = await self.client.room_get_state_event(room_id, "m.room.power_levels")
        levels = dict(response.content)
        levels["users"] = {**levels.get("users", {}), user_id: level}
        await self.client.room_put_state(room_id, "m.room.power_levels", levels)

    async def join(self, room_id: str) -> None:
        await self.client.join(room_id)
        await self.sync(0)

    async def new_session_without(
        self, room_id: str, user_id: str, device_id: str
    ) -> tuple[str, str]:
        """A new Megolm session not shared with one device, as a client excluding it would do.

        Returns the session id and its key at index 0, to hand over later (a key arriving late).
        """
        olm = self.client.olm
        assert olm is not None
        self.client.invalidate_outbound_session(room_id)
        olm.create_outbound_group_session(room_id)
        session = olm.outbound_group_sessions[room_id]
        session.users_ignored.add((user_id, device_id))
        await self.client.share_group_session(room_id, ignore_unverified_devices=True)
        return session.id, session.session_key

    def share_with_all_again(self, room_id: str) -> None:
        """From the next message on, a new session that every device gets."""
        self.client.invalidate_outbound_session(room_id)

    async def send_room_key(
        self, room_id: str, session_id: str, session_key: str, user_id: str, device_id: str
    ) -> None:
        """Deliver a room key to one device over Olm: the sender's key, arriving late."""
        olm = self.client.olm
        assert olm is not None
        device = olm.device_store[user_id][device_id]
        if olm.session_store.get(device.curve25519) is None:
            await self.client.keys_claim({user_id: [device_id]})
        session = olm.session_store.get(device.curve25519)
        assert session is not None, "no Olm session with the device"
        content = {
            "algorithm": "m.megolm.v1.aes-sha2",
            "room_id": room_id,
            "session_id": session_id,
            "session_key": session_key,
        }
        payload = olm._olm_encrypt(session, device, "m.room_key", content)
        message = ToDeviceMessage("m.room.encrypted", user_id, device_id, payload)
        response = await self.client.to_device(message)
        assert isinstance(response, ToDeviceResponse), response

    async def history(self, room_id: str) -> list[dict[str, Any]]:
        """The room's whole timeline as the server holds it, oldest first."""
        events: list[dict[str, Any]] = []
        token = ""
        while True:
            response = await self.client.room_messages(
                room_id, start=token, direction=MessageDirection.back, limit=500
            )
            assert isinstance(response, RoomMessagesResponse), response
            events += [event.source for event in response.chunk]
            if not response.chunk or not response.end:
                return list(reversed(events))
            token = response.end

    async def close(self) -> None:
        await self.client.close()


# Reading what the bot said
def _relation(event: dict[str, Any]) -> dict[str, Any]:
    relation = event.get("content", {}).get("m.relates_to")
    return relation if isinstance(relation, dict) else {}


def originals(events: list[dict[str, Any]], sender: str) -> list[dict[str, Any]]:
    """The bot's messages, not counting edits."""
    return [
        e
        for e in events
        if e.get("type") == "m.room.message"
        and e.get("sender") == sender
        and _relation(e).get("rel_type") != "m.replace"
    ]


def edits_of(events: list[dict[str, Any]], event_id: str) -> list[dict[str, Any]]:
    """Edits a client applies: by the original's sender only (others' are ignored)."""
    original = next((e for e in events if e.get("event_id") == event_id), None)
    author = original.get("sender") if original else None
    return [
        e
        for e in events
        if e.get("type") == "m.room.message"
        and (author is None or e.get("sender") == author)
        and _relation(e).get("rel_type") == "m.replace"
        and _relation(e).get("event_id") == event_id
        and isinstance(e["content"].get("m.new_content"), dict)
    ]


def current_content(events: list[dict[str, Any]], event_id: str) -> dict[str, Any] | None:
    """What a client shows for a message: its latest edit, or itself."""
    original = next((e for e in events if e.get("event_id") == event_id), None)
    if original is None:
        return None
    edits = edits_of(events, event_id)
    return edits[-1]["content"]["m.new_content"] if edits else original["content"]


def answer_to(events: list[dict[str, Any]], bot_id: str, question_id: str) -> dict | None:
    for event in originals(events, bot_id):
        reply = _relation(event).get("m.in_reply_to")
        replying = isinstance(reply, dict) and reply.get("event_id") == question_id
        if replying and event["content"].get("msgtype") == "m.text":
            return event
    return None


def final_answer(events: list[dict[str, Any]], bot_id: str, question_id: str) -> str | None:
    """The answer's text once streaming has ended (the live marker is gone)."""
    answer = answer_to(events, bot_id, question_id)
    if answer is None:
        return None
    content = current_content(events, answer["event_id"])
    if content is None or LIVE in content:
        return None
    return content["body"]


def notices(events: list[dict[str, Any]], bot_id: str) -> list[str]:
    return [
        e["content"]["body"]
        for e in originals(events, bot_id)
        if e["content"].get("msgtype") == "m.notice"
    ]


async def eventually(check: Callable[[], Any], within: float = 20, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(interval)
