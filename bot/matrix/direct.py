"""Which rooms are DMs (at most two members), known even right after a restart.

nio's member list is no count under lazy loading: it holds only the members whose events it
has seen, so after a restart a busy group room shows just the bot and whoever spoke last. The
homeserver's room summary is a count, but a sync carries one only when membership changed or
on an initial sync; what it last said is kept in the database for the syncs in between.
"""

from __future__ import annotations

import asyncio
import logging

from nio import AsyncClient, JoinedMembersResponse, MatrixRoom

from bot.core.stores import RoomStore

log = logging.getLogger(__name__)
MEMBERS_TIMEOUT_S = 30.0


def summary_count(room: MatrixRoom | None) -> int | None:
    """Members (joined and invited) by the homeserver's room summary; None without one."""
    summary = room.summary if room is not None else None
    if summary is None or summary.joined_member_count is None:
        return None
    return summary.joined_member_count + (summary.invited_member_count or 0)


class DirectRooms:
    def __init__(self, client: AsyncClient, store: RoomStore) -> None:
        self.client = client
        self.store = store
        self._direct: dict[str, bool] = {}  # as last learnt

    def is_dm(self, room_id: str) -> bool:
        """By the homeserver's count; without one, by what was last learnt; not a DM when
        nothing is known (answering every message of a group room is the worse mistake)."""
        count = summary_count(self.client.rooms.get(room_id))
        if count is not None:
            return count <= 2
        return self._direct.get(room_id, False)

    def dm_rooms(self) -> set[str]:
        return {room_id for room_id in self.client.rooms if self.is_dm(room_id)}

    async def learn(self, room_id: str, fresh_summary: bool, must_know: bool) -> None:
        """After a sync showed the room: remember what its summary says, or recall what was
        stored; ask the homeserver only when nothing says it and an event needs to know."""
        count = summary_count(self.client.rooms.get(room_id))
        if count is None:
            if room_id in self._direct:
                return
            row = await self.store.room(room_id)
            if row is not None and row.direct is not None:
                self._direct[room_id] = row.direct
                return
            if not must_know:
                return
            count = await self._joined_count(room_id)
            if count is None:
                return
        elif not fresh_summary and room_id in self._direct:
            return  # summaries come with membership changes: nothing new since the last one
        direct = count <= 2
        if self._direct.get(room_id) == direct:
            return  # Synapse repeats the summary in most syncs: no write when nothing changed
        await self.store.set_room(room_id, direct=int(direct))
        self._direct[room_id] = direct  # once stored: a failed write is tried again next sync

    async def _joined_count(self, room_id: str) -> int | None:
        try:
            response = await asyncio.wait_for(
                self.client.joined_members(room_id), MEMBERS_TIMEOUT_S
            )
        except Exception as exc:
            log.warning("could not count the members of %s: %s", room_id, type(exc).__name__)
            return None
        return len(response.members) if isinstance(response, JoinedMembersResponse) else None
