"""The rooms the bot is in: their record, their language, what the bot says on joining, and the
consent notice (posted again when its version is raised)."""

from __future__ import annotations

from bot.config import Settings
from bot.core.clock import now_ms
from bot.core.ports import ChatPort
from bot.core.records import RoomRow
from bot.core.stores import RoomStore
from bot.core.streaming import send_notice
from bot.core.tasks import Tasks
from bot.texts import PromptTexts, say

MAX_BACKGROUND = 1000


class Rooms:
    def __init__(
        self,
        settings: Settings,
        rooms: RoomStore,
        port: ChatPort,
        prompts: PromptTexts,
        tasks: Tasks,
    ) -> None:
        self.settings = settings
        self.rooms = rooms
        self.port = port
        self.prompts = prompts
        self.tasks = tasks

    async def get(self, room_id: str) -> RoomRow:
        room = await self.rooms.room(room_id)
        if room is None:
            # in a room we have no record of (database replaced): answer only what comes next
            await self.rooms.add_room(room_id, now_ms())
            room = await self.rooms.room(room_id)
            assert room is not None
        return room

    def lang(self, room: RoomRow) -> str:
        """The room's language: its admins' choice, or the configured default."""
        return room.lang or self.settings.bot.default_lang

    def collecting(self, room: RoomRow) -> bool:
        return self.settings.data.collection == "opt_in" and room.collection

    def is_history(self, room: RoomRow, ts: int) -> bool:
        """Sent before the bot joined, or too long ago to answer now."""
        catch_up_ms = self.settings.bot.catch_up_minutes * 60_000
        return ts < room.joined_at or ts < now_ms() - catch_up_ms

    async def notice(
        self, room_id: str, text: str, reply_to: str | None = None, thread: str | None = None
    ) -> str | None:
        return await send_notice(self.port, room_id, text, reply_to, thread)

    def notice_later(self, room_id: str, text: str, reply_to: str | None = None) -> None:
        """A notice sent in the background: the event that caused it is not held up. When too
        many are already waiting (the homeserver is slow, or someone is flooding), it is dropped:
        a notice is never worth unbounded memory."""
        if len(self.tasks) >= MAX_BACKGROUND:
            return
        self.tasks.spawn(self.notice(room_id, text, reply_to), name=f"notice-{room_id}")

    async def joined(self, room_id: str) -> None:
        """Right after the bot accepted an invite: only what comes next is answered."""
        await self.rooms.add_room(room_id, now_ms())

    def introduce(self, room_id: str) -> None:
        """Once the joined room has synced: post the join notice (once per room)."""
        self.tasks.spawn(self._introduce(room_id), name=f"notice-{room_id}")

    async def _introduce(self, room_id: str) -> None:
        room = await self.get(room_id)
        if room.notice_sent:
            return
        lang = self.lang(room)
        prefix = self.settings.bot.command_prefix
        if await self.notice(room_id, self.prompts.join_notice(lang, prefix)) is None:
            return
        await self.rooms.set_room(room_id, notice_sent=1)
        if self.collecting(room):
            await self.consent_notice(room_id, lang)

    async def consent_notice(self, room_id: str, lang: str) -> None:
        """What is kept, why, under which licence; a ✅ reaction on it gives consent."""
        data = self.settings.data
        text = self.prompts.consent_notice(lang, self.settings.bot.command_prefix, data.licence)
        event_id = await self.notice(room_id, text)
        if event_id is not None:
            await self.rooms.set_room(
                room_id,
                consent_notice_event_id=event_id,
                consent_notice_version=data.notice_version,
            )

    async def ask_consent_again(self, room_ids: set[str]) -> None:
        """A raised data.notice_version: rooms shown an older notice are asked again, since
        consent to the older text no longer counts."""
        version = self.settings.data.notice_version
        for room_id in room_ids:
            room = await self.rooms.room(room_id)
            if room is None or room.consent_notice_event_id is None:
                continue  # never shown one: the join notice will
            if room.consent_notice_version is None:
                # shown before versions were kept: taken as the version in force now
                await self.rooms.set_room(room_id, consent_notice_version=version)
            elif room.consent_notice_version < version and self.collecting(room):
                notice = self.consent_notice(room_id, self.lang(room))
                self.tasks.spawn(notice, name="consent-again")

    async def unreadable(self, room_id: str, event_id: str) -> None:
        """An encrypted message's room key never came: say so, and what the person can do."""
        room = await self.get(room_id)
        await self.notice(room_id, say(self.lang(room), "encryption.unreadable"), event_id)
