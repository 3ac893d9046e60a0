"""The relay: routes what happens in rooms to the part that deals with it. A message is an
edit, a command or maybe a question; a reaction is feedback; a redaction withdraws or erases.
It decides nothing else itself: the parts are built and wired in bot.app."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from bot.config import Settings
from bot.core.attachments import send_image
from bot.core.clock import now_ms
from bot.core.command_registry import Command, CommandRegistry, parse_command
from bot.core.documents import RoomDocuments
from bot.core.edits import Edit, parse_edit
from bot.core.events import TextMessage, parse_file, parse_message, parse_redaction
from bot.core.fair_use import SlidingLimit
from bot.core.governance import inviter_allowed
from bot.core.metrics import Metrics
from bot.core.ports import ChatPort
from bot.core.questions import Questions
from bot.core.reactions import Reactions
from bot.core.rooms import Rooms
from bot.core.stores import ConversationStore, SyncPosition
from bot.core.tasks import Tasks
from bot.texts import say

log = logging.getLogger(__name__)


class Relay:
    def __init__(
        self,
        settings: Settings,
        port: ChatPort,
        parts: RelayParts,
    ) -> None:
        self.settings = settings
        self.port = port
        self.sync, self.answers = parts.sync, parts.answers
        self.rooms, self.questions = parts.rooms, parts.questions
        self.reactions, self.commands = parts.reactions, parts.commands
        self.tasks, self.metrics = parts.tasks, parts.metrics
        self.documents = parts.documents
        bot = settings.bot
        self.command_limit = SlidingLimit(bot.commands_per_person, bot.fair_use_window_s)
        self.reaction_limit = SlidingLimit(bot.reactions_per_person, bot.fair_use_window_s)

    def _within(self, limit: SlidingLimit, sender: str) -> bool:
        """Operators aside, past the person's share their commands and reactions are ignored."""
        return sender in self.settings.bot.operators or limit.take(sender).allowed

    @property
    def bot_id(self) -> str:
        return self.port.user_id

    # Rooms (what the transport asks before and after joining)
    def accepts_invite(self, inviter: str) -> bool:
        matrix, bot = self.settings.matrix, self.settings.bot
        return inviter_allowed(inviter, matrix.allowed_inviters, bot.operators)

    async def joined(self, room_id: str) -> None:
        await self.rooms.joined(room_id)

    def introduce(self, room_id: str) -> None:
        self.rooms.introduce(room_id)

    async def awaits_key(self, room_id: str, sender: str, ts: int) -> bool:
        """Whether an encrypted message the bot cannot read yet is worth waiting for."""
        if sender == self.bot_id:
            return False
        return not self.rooms.is_history(await self.rooms.get(room_id), ts)

    async def unreadable(self, room_id: str, event_id: str) -> None:
        await self.rooms.unreadable(room_id, event_id)

    async def resume(self, dm_rooms: set[str], rooms: set[str] | None = None) -> None:
        """After the first sync: consent asked again where its notice changed, and answers owed
        from before a restart."""
        await self.rooms.ask_consent_again(rooms or set())
        await self.questions.resume(dm_rooms)

    async def drain(self, grace_s: float) -> None:
        await self.tasks.drain(grace_s)

    async def _edit(self, room_id: str, edit: Edit) -> None:
        kept = await self.answers.message(room_id, edit.target)
        if kept is None or kept.sender != edit.sender or kept.from_bot:
            return  # nothing of theirs kept here: not worth masking the text
        body = self.questions.masked(edit.body)
        await self.answers.edit_question(room_id, edit.target, edit.sender, body, now_ms())

    # Room events
    async def on_message(self, room_id: str, event: dict[str, Any], is_dm: bool) -> None:
        message = parse_message(room_id, event)
        if message is None or message.sender == self.bot_id:
            return
        if message.is_edit:
            edit = parse_edit(room_id, event)
            if edit is not None:  # only its own sender's edit, in its own room, counts
                await self._edit(room_id, edit)
            return
        if message.msgtype == "m.file":
            file = parse_file(room_id, event)
            if file is not None and self.documents is not None:
                await self.documents.shared(file, is_dm)
            return
        if message.msgtype != "m.text":
            return
        room = await self.rooms.get(room_id)
        if self.rooms.is_history(room, message.ts):
            return
        command = parse_command(message.body, self.settings.bot.command_prefix)
        if command is None:
            await self.questions.ask(message, room, is_dm)
        elif not self._within(self.command_limit, message.sender):
            log.info("command limit reached in %s", room_id)
        elif await self.sync.claim_event(room_id, message.event_id, now_ms()):
            lang = self.rooms.lang(room)
            self.tasks.spawn(self._command(command, message, lang), name=f"command-{room_id}")

    async def _command(self, command: Command, message: TextMessage, lang: str) -> None:
        room_id = message.room_id
        if command.name == "consent" and not command.args:
            if self.rooms.collecting(await self.rooms.get(room_id)):
                await self.rooms.consent_notice(room_id, lang)
            else:
                await self.rooms.notice(room_id, say(lang, "cmd.collection.off"))
            return
        reply = await self.commands.reply(command, message, lang)
        if reply.text:
            await self.rooms.notice(room_id, reply.text, message.event_id, message.thread_root)
        if reply.image is not None:  # after the text, which must not wait for it
            await send_image(self.port, room_id, reply.image, message.event_id, message.thread_root)

    async def on_reaction(self, room_id: str, event: dict[str, Any]) -> None:
        sender = event.get("sender")
        if isinstance(sender, str) and not self._within(self.reaction_limit, sender):
            return
        await self.reactions.on_reaction(room_id, event, self.bot_id)

    async def on_redaction(self, room_id: str, event: dict[str, Any]) -> None:
        if await self.reactions.on_redaction(room_id, event) is not None:
            return  # a stored message or reaction: no document is shared by it
        redaction = parse_redaction(room_id, event)
        if redaction is not None and self.documents is not None:
            await self.documents.redacted(redaction)


@dataclass(frozen=True)
class RelayParts:
    """What the relay routes to; bot.app builds them."""

    sync: SyncPosition
    answers: ConversationStore
    rooms: Rooms
    questions: Questions
    reactions: Reactions
    commands: CommandRegistry
    tasks: Tasks
    metrics: Metrics
    documents: RoomDocuments | None = None
