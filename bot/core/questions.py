"""Questions: whether a message asks the bot something, whether the person has their fair share
left, and the answers owed (new, regenerated, or left over from before a restart)."""

from __future__ import annotations

import logging
import math
from typing import Protocol

from bot.config import Settings
from bot.core.clock import now_ms
from bot.core.events import TextMessage
from bot.core.fair_use import SlidingLimit
from bot.core.history import History
from bot.core.metrics import Metrics
from bot.core.personal_data import PersonalData
from bot.core.ports import ChatPort
from bot.core.quotas import Quotas, is_exempt, retry_text
from bot.core.records import AnswerRow, RoomRow
from bot.core.rooms import Rooms
from bot.core.stores import ConversationStore
from bot.core.tasks import Tasks
from bot.core.triggers import Situation, mentions_bot, should_answer
from bot.texts import say

log = logging.getLogger(__name__)
# at most one "busy" notice per room in this time: a flood must not become a flood of notices
BUSY_NOTICE_EVERY_S = 60.0


class Answerer(Protocol):
    async def answer(self, row: AnswerRow, is_dm: bool) -> None:
        """Answer once; whatever goes wrong, the person hears back."""
        ...

    def saturated(self) -> float | None:
        """None while the queue has room; else about how many seconds a new answer would wait."""
        ...


class Questions:
    def __init__(
        self,
        settings: Settings,
        answers: ConversationStore,
        port: ChatPort,
        rooms: Rooms,
        history: History,
        answerer: Answerer,
        tasks: Tasks,
        quotas: Quotas | None = None,
        metrics: Metrics | None = None,
        personal: PersonalData | None = None,
    ) -> None:
        self.settings = settings
        self.answers = answers
        self.port = port
        self.rooms = rooms
        self.history = history
        self.answerer = answerer
        self.tasks = tasks
        self.quotas = quotas
        self.metrics = metrics
        self.personal = personal
        self._active: set[int] = set()
        bot = settings.bot
        self.question_limit = SlidingLimit(bot.questions_per_person, bot.fair_use_window_s)
        self.regeneration_limit = SlidingLimit(bot.regenerations_per_person, bot.fair_use_window_s)
        self.busy_notices = SlidingLimit(1, BUSY_NOTICE_EVERY_S)  # per room

    async def ask(self, message: TextMessage, room: RoomRow, is_dm: bool) -> None:
        """A message that may be a question to the bot."""
        if not await self._addressed(message, room, is_dm):
            return
        if not self._allowed(self.question_limit, message.sender, room, "limit.questions"):
            return
        refusal = await self._turned_away(message.sender, room)
        if refusal is not None:
            if refusal:
                self.rooms.notice_later(room.room_id, refusal, message.event_id)
            return
        masked = self.personal is not None
        if self.personal is not None:  # identifiers masked before anything is stored
            message = await self.personal.question(message, room)
        if await self.history.save(message, masked) is None:
            return  # written before its author asked to be forgotten: never answered now
        row = await self.answers.queue_answer(
            message.room_id,
            message.event_id,
            message.ts,
            message.thread_root,
            now_ms(),
            collected=room.collection,
        )
        if row is not None:
            self._schedule(row, is_dm)
            if self.quotas is not None:
                await self.quotas.asked(message.sender, message.room_id)
        if self.settings.log_content:
            log.debug("question %s in %s: %r", message.event_id, message.room_id, message.body)

    def masked(self, text: str) -> str:
        """A text people wrote (an edit of a question), its personal identifiers masked."""
        return self.personal.masked(text) if self.personal is not None else text

    async def _addressed(self, message: TextMessage, room: RoomRow, is_dm: bool) -> bool:
        room_id, bot_id = message.room_id, self.port.user_id
        situation = Situation(
            is_dm=is_dm,
            mode=room.mode,
            replies_to_bot=bool(message.reply_to)
            and await self._from_bot(room_id, message.reply_to),
            in_bot_thread=bool(message.thread_root)
            and await self._bot_thread(room_id, message.thread_root),
        )
        mentioned = mentions_bot(message, bot_id, self.port.display_name(room_id, bot_id))
        return should_answer(message, situation, mentioned)

    async def _from_bot(self, room_id: str, event_id: str | None) -> bool:
        if event_id is None:
            return False
        stored = await self.answers.message(room_id, event_id)
        if stored is not None:
            return stored.from_bot
        return await self.answers.answer_by_event(room_id, event_id) is not None

    async def _bot_thread(self, room_id: str, root: str | None) -> bool:
        if root is None:
            return False
        if await self.answers.bot_answered_in_thread(room_id, root):
            return True
        return await self._from_bot(room_id, root)

    def _allowed(self, limit: SlidingLimit, person: str, room: RoomRow, notice: str) -> bool:
        """Within the person's fair share; otherwise one notice per window, then silence (a
        refusal must stay cheap when someone keeps asking)."""
        if is_exempt(self.settings, person):
            return True
        verdict = limit.take(person)
        if verdict.allowed:
            return True
        log.info("fair-use limit reached in %s", room.room_id)
        if verdict.first_refusal:
            minutes = max(1, round(verdict.retry_after_s / 60))
            self.rooms.notice_later(
                room.room_id, say(self.rooms.lang(room), notice, minutes=minutes)
            )
        return False

    async def regenerate(self, answer: AnswerRow, requester: str) -> str:
        """A new answer to the same question, kept as a sibling of the first; the notice to
        give instead when the question had its share, or the person theirs ("" otherwise)."""
        room = await self.rooms.get(answer.room_id)
        # the person's limit first: it also bounds how many refusals one person can cause
        if not self._allowed(self.regeneration_limit, requester, room, "limit.regenerations"):
            return ""
        refusal = await self._turned_away(requester, room)
        if refusal is not None:
            return refusal
        if not is_exempt(self.settings, requester):
            most = self.settings.bot.max_answers_per_question
            count = await self.answers.siblings(answer.room_id, answer.question_event_id)
            if count >= most:
                return say(self.rooms.lang(room), "limit.siblings", count=count)
        sibling = await self.answers.add_sibling(
            answer, now_ms(), collected=room.collection, requested_by=requester
        )
        self._schedule(sibling, self.port.is_dm(answer.room_id))
        if self.quotas is not None:
            await self.quotas.asked(requester, answer.room_id)
        return ""

    async def _turned_away(self, person: str, room: RoomRow) -> str | None:
        """None when the question may be queued; else the notice to give, "" for none."""
        # the queue first: when it is full, turning people away must not cost a database trip
        busy = self._busy(room)
        if busy is not None:
            return busy
        return await self._over_quota(person, room)

    def _busy(self, room: RoomRow) -> str | None:
        """None while the queue has room; else the notice to give ("" to stay silent: one
        notice per room a minute is enough)."""
        wait_s = self.answerer.saturated()
        if wait_s is None:
            return None
        if self.metrics is not None:
            self.metrics.busy_refusals.inc()
        log.info("queue full: question in %s turned away", room.room_id)
        if not self.busy_notices.take(room.room_id).allowed:
            return ""
        minutes = max(1, math.ceil(wait_s / 60))
        return say(self.rooms.lang(room), "busy", minutes=minutes)

    async def _over_quota(self, person: str, room: RoomRow) -> str | None:
        """None within the quotas; else the notice to give ("" after the first refusal of a
        block: someone who keeps asking is not answered each time)."""
        if self.quotas is None:
            return None
        refusal = await self.quotas.check(person, room.room_id)
        if refusal is None:
            return None
        log.info("quota %s reached in %s", refusal.key, room.room_id)
        if not refusal.first:
            return ""
        lang = self.rooms.lang(room)
        when = retry_text(lang, refusal.retry_after_s)
        return say(lang, refusal.key, limit=refusal.limit, when=when)

    async def resume(self, dm_rooms: set[str]) -> None:
        """Answers owed from before a restart: finish them once, or drop those too old."""
        oldest = now_ms() - self.settings.bot.catch_up_minutes * 60_000
        for row in await self.answers.open_answers():
            if row.question_ts < oldest:
                status = "cut" if row.answer_event_id else "skipped"
                await self.answers.update_answer(row.id, status=status, finished_at=now_ms())
                continue
            log.info("resuming answer to %s in %s", row.question_event_id, row.room_id)
            self._schedule(row, row.room_id in dm_rooms)

    def _schedule(self, row: AnswerRow, is_dm: bool) -> None:
        if row.id in self._active:
            return
        self._active.add(row.id)
        self.tasks.spawn(self._answer(row, is_dm), name=f"answer-{row.id}")

    async def _answer(self, row: AnswerRow, is_dm: bool) -> None:
        try:
            await self.answerer.answer(row, is_dm)
        finally:
            self._active.discard(row.id)
