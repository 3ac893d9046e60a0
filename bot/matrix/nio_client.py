"""nio's client, hardened against what room members can write inside encrypted events."""

from __future__ import annotations

from typing import Any

from nio import (
    Api,
    AsyncClient,
    MatrixRoom,
    MegolmEvent,
    RoomGetEventResponse,
    RoomGetStateEventResponse,
)

from bot.core.governance import creators_are_privileged

# Only the homeserver may send these: it checks the sender's power before it redacts or changes
# state. Inside an encrypted payload, any member can write any type and any state_key.
HOMESERVER_ONLY = frozenset({"m.room.redaction", "m.room.member"})


def homeserver_only(source: dict[str, Any]) -> bool:
    """A redaction, or state (members included): meaningless unless the homeserver sent it."""
    return source.get("type") in HOMESERVER_ONLY or "state_key" in source


class MatrixClient(AsyncClient):
    """nio's AsyncClient, except that nothing decrypted ever changes its view of a room, and
    that an event without its key costs nothing here; plus two reads nio lacks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._creators: dict[str, frozenset[str]] = {}

    def _handle_timeline_event(
        self, event: Any, room_id: str, room: MatrixRoom, encrypted_rooms: set[str]
    ) -> Any:
        # nio applies a decrypted event to the room as if the homeserver had sent it: any member
        # could encrypt an m.room.member "leave" for someone (whom the bot then stops sharing
        # keys with) or new power levels. Matrix never encrypts state, so nothing decrypted is
        # applied; the caller still gets the event, marked as decrypted.
        olm = self.olm
        if not (isinstance(event, MegolmEvent) and olm):
            return super()._handle_timeline_event(event, room_id, room, encrypted_rooms)
        event.room_id = room_id
        if olm.inbound_group_store.get(room_id, event.sender_key, event.session_id) is None:
            # without its key nio would queue a key request for every such event, made-up
            # sessions included, with no bound; bot.matrix.undecryptable asks, within bounds
            return None
        decrypted = olm._decrypt_megolm_no_error(event)
        if decrypted is not None:
            decrypted.decrypted = True  # nio leaves it unset on payloads it could not parse
        return decrypted

    async def event_source(self, room_id: str, event_id: str) -> dict[str, Any] | None:
        """One event as the homeserver holds it, decrypted if it can be; never state."""
        try:
            response = await self.room_get_event(room_id, event_id)
        except Exception:
            return None
        if not isinstance(response, RoomGetEventResponse):
            return None
        event = response.event
        if isinstance(event, MegolmEvent):
            try:
                event = self.decrypt_event(event)
            except Exception:
                return None
        source = getattr(event, "source", None)
        # a payload nio could not parse keeps the ids its sender wrote in it
        if not isinstance(source, dict) or "state_key" in source:
            return None
        return source if source.get("event_id") == event_id else None

    async def privileged_creators(self, room_id: str) -> frozenset[str] | None:
        """Creators all-powerful by their room's version; the create event never changes, so it
        is read once per room."""
        if room_id not in self._creators:
            method, path = Api.room_get_state_event(self.access_token, room_id, "m.room.create")
            response = await self._send(
                RoomGetStateEventResponse,
                method,
                f"{path}&format=event",
                response_data=("m.room.create", "", room_id),
            )
            if not isinstance(response, RoomGetStateEventResponse):
                return None
            event = response.content
            content = event.get("content", event)  # servers without format=event send content
            version = str(content.get("room_version", "1"))
            if not creators_are_privileged(version):
                self._creators[room_id] = frozenset()
            else:
                extra = content.get("additional_creators")
                creators = {event.get("sender")} | set(extra if isinstance(extra, list) else [])
                self._creators[room_id] = frozenset(c for c in creators if isinstance(c, str))
        return self._creators[room_id]


async def exchange_keys(client: AsyncClient) -> None:
    """The key exchanges encryption needs after a sync: to-device messages out, one-time keys
    uploaded, new devices queried, sessions claimed with the devices that lack one."""
    await client.send_to_device_messages()
    if client.should_upload_keys:
        await client.keys_upload()
    if client.should_query_keys:
        await client.keys_query()
    if client.should_claim_keys:
        await client.keys_claim(client.get_users_for_key_claiming())
