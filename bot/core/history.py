"""What the model sees of a conversation: the messages a question builds on, oldest first.

They are read from the bot's own records, and fetched from the homeserver when missing."""

from __future__ import annotations

from collections.abc import Callable

from bot.config import BotSettings
from bot.core.context import Turn, conversation_turn
from bot.core.events import TextMessage
from bot.core.ports import ChatPort
from bot.core.records import MessageRow, RoomRow
from bot.core.stores import ConversationStore

MAX_CHAIN = 50


class History:
    def __init__(
        self,
        settings: BotSettings,
        messages: ConversationStore,
        port: ChatPort,
        mask: Callable[[str], str] = lambda text: text,  # personal identifiers out
    ) -> None:
        self.settings = settings
        self.messages = messages
        self.port = port
        self.mask = mask

    @property
    def bot_id(self) -> str:
        return self.port.user_id

    async def save(self, message: TextMessage, masked: bool = False) -> MessageRow | None:
        """Keep a message (its personal identifiers masked here unless they already are); None
        when it was erased and must stay out of what the model reads."""
        row = MessageRow(
            event_id=message.event_id,
            room_id=message.room_id,
            sender=message.sender,
            sender_name=self.port.display_name(message.room_id, message.sender),
            body=message.body if masked else self.mask(message.body),
            ts=message.ts,
            reply_to=message.reply_to,
            thread_root=message.thread_root,
            from_bot=message.sender == self.bot_id,
        )
        return row if await self.messages.save_message(row) else None

    async def conversation(
        self, question: MessageRow, room: RoomRow, is_dm: bool
    ) -> list[MessageRow]:
        """The messages the model should see, oldest first, ending with the question."""
        if question.thread_root:
            root = await self.message(room.room_id, question.thread_root)
            later = await self.messages.thread_messages(
                room.room_id, question.thread_root, MAX_CHAIN
            )
            chain = ([root] if root else []) + [m for m in later if m.ts <= question.ts]
        elif question.reply_to:
            chain = [question]
            while chain[0].reply_to and len(chain) < MAX_CHAIN:
                earlier = await self.message(room.room_id, chain[0].reply_to)
                if earlier is None:
                    break
                chain.insert(0, earlier)
        elif is_dm:
            chain = await self._recent_exchange(question, room)
        else:
            chain = [question]
        return [message for message in chain if message.body.strip()]

    async def _recent_exchange(self, question: MessageRow, room: RoomRow) -> list[MessageRow]:
        bot = self.settings
        # up to the question, not up to now: a question answered late (after a restart)
        # gets the exchange as it stood when it was asked
        recent = await self.messages.recent_messages(
            room.room_id, room.dm_reset_at, question.ts, bot.dm_history_messages
        )
        recent = [m for m in recent if m.event_id != question.event_id]
        recent.append(question)
        idle_ms = bot.dm_idle_minutes * 60_000
        start = 0
        for index in range(1, len(recent)):
            if recent[index].ts - recent[index - 1].ts > idle_ms:
                start = index  # a long pause starts a new conversation
        return recent[start:]

    def turn(self, message: MessageRow) -> Turn:
        display_name = self.port.display_name(message.room_id, self.bot_id)
        return conversation_turn(message, self.bot_id, display_name)

    async def message(self, room_id: str, event_id: str) -> MessageRow | None:
        stored = await self.messages.message(room_id, event_id)
        if stored is not None:
            return stored
        fetched = await self.port.fetch_message(room_id, event_id)
        if fetched is None:
            return None
        return await self.save(fetched)
