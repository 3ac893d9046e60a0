"""The relay: reads what happens in rooms and decides what to do with it: answer (through
bot.core.answering), record a vote, run a command, greet a room."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from bot.config import Settings
from bot.core.answering import Answerer
from bot.core.clock import now_ms
from bot.core.command_registry import Command, CommandRegistry, RoomAdmins, parse_command
from bot.core.commands import RoomCommands
from bot.core.data_commands import DataCommands
from bot.core.edits import parse_edit
from bot.core.events import TextMessage, parse_message, parse_reaction, parse_redaction
from bot.core.fair_use import SlidingLimit, Verdict
from bot.core.governance import bare_emoji, inviter_allowed, normalise_vote
from bot.core.history import History
from bot.core.metrics import CountingPort, Metrics
from bot.core.ports import ChatPort
from bot.core.streaming import send_notice
from bot.core.triggers import Situation, mentions_bot, should_answer
from bot.llm.client import ChatModel
from bot.storage.database import StorageUnavailable
from bot.storage.store import AnswerRow, RoomRow, Store
from bot.texts import PromptTexts, say

log = logging.getLogger(__name__)
CONSENT_KEY = "\u2705"  # ✅
REGENERATE_KEY = "\U0001f501"  # 🔁


class Relay:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        model: ChatModel,
        port: ChatPort,
        prompts: PromptTexts,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = Metrics()
        self.port: ChatPort = CountingPort(port, self.metrics)  # type: ignore[assignment]
        self.prompts = prompts
        prefix = settings.bot.command_prefix
        self.commands = CommandRegistry(prefix, RoomAdmins(settings.bot.operators, self.port))
        self.data_commands = DataCommands(settings, store, self.regenerate)
        self.commands.add(*RoomCommands(prefix, store.rooms, prompts).specs())
        self.commands.add(*self.data_commands.specs())
        self.reasons = {bare_emoji(k): v for k, v in settings.data.reason_emojis.items()}
        self.history = History(settings.bot, store.conversations, self.port)
        self.answerer = Answerer(
            settings, store, model, self.port, prompts, self.metrics, self.history, self._room
        )
        self.metrics.queue.set_function(lambda: self.answerer.scheduler.queued)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._active: set[int] = set()
        bot = settings.bot
        self.question_limit = SlidingLimit(bot.questions_per_person, bot.fair_use_window_s)
        self.regeneration_limit = SlidingLimit(bot.regenerations_per_person, bot.fair_use_window_s)

    @property
    def bot_id(self) -> str:
        return self.port.user_id

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        if isinstance(error, StorageUnavailable):  # said in one line; resumed at the next start
            log.error("%s stopped: database unavailable (%s)", task.get_name(), error)
        else:
            log.error("%s failed", task.get_name(), exc_info=error)

    async def drain(self, grace_s: float) -> None:
        """Let answers under way finish, for grace_s at most, then stop the rest."""
        if self._tasks:
            log.info("waiting up to %.0f s for %d answers under way", grace_s, len(self._tasks))
            await asyncio.wait(list(self._tasks), timeout=grace_s)
        await self.close()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # Rooms
    def accepts_invite(self, inviter: str) -> bool:
        matrix, bot = self.settings.matrix, self.settings.bot
        return inviter_allowed(inviter, matrix.allowed_inviters, bot.operators)

    async def joined(self, room_id: str) -> None:
        """Right after the bot accepted an invite: only what comes next is answered."""
        await self.store.rooms.add_room(room_id, now_ms())

    def introduce(self, room_id: str) -> None:
        """Once the joined room has synced: post the join notice (once per room)."""
        self._spawn(self._introduce(room_id), name=f"notice-{room_id}")

    async def _introduce(self, room_id: str) -> None:
        room = await self._room(room_id)
        if room.notice_sent:
            return
        lang = self._lang(room)
        prefix = self.settings.bot.command_prefix
        if await self._notice(room_id, self.prompts.join_notice(lang, prefix)) is None:
            return
        await self.store.rooms.set_room(room_id, notice_sent=1)
        if self._collecting(room):
            await self._consent_notice(room_id, lang)

    def _collecting(self, room: RoomRow) -> bool:
        return self.settings.data.collection == "opt_in" and room.collection

    async def _consent_notice(self, room_id: str, lang: str) -> None:
        """What is kept, why, under which licence; a ✅ reaction on it gives consent."""
        data = self.settings.data
        text = self.prompts.consent_notice(lang, self.settings.bot.command_prefix, data.licence)
        event_id = await self._notice(room_id, text)
        if event_id is not None:
            await self.store.rooms.set_room(
                room_id,
                consent_notice_event_id=event_id,
                consent_notice_version=data.notice_version,
            )

    async def ask_consent_again(self, room_ids: set[str]) -> None:
        """A raised data.notice_version: rooms shown an older notice are asked again, since
        consent to the older text no longer counts."""
        version = self.settings.data.notice_version
        for room_id in room_ids:
            room = await self.store.rooms.room(room_id)
            if room is None or room.consent_notice_event_id is None:
                continue  # never shown one: the join notice will
            if room.consent_notice_version is None:
                # shown before versions were kept: taken as the version in force now
                await self.store.rooms.set_room(room_id, consent_notice_version=version)
            elif room.consent_notice_version < version and self._collecting(room):
                self._spawn(self._consent_notice(room_id, self._lang(room)), name="consent-again")

    def _lang(self, room: RoomRow) -> str:
        return room.lang or self.settings.bot.default_lang

    async def _room(self, room_id: str) -> RoomRow:
        room = await self.store.rooms.room(room_id)
        if room is None:
            # in a room we have no record of (database replaced): answer only what comes next
            await self.store.rooms.add_room(room_id, now_ms())
            room = await self.store.rooms.room(room_id)
            assert room is not None
        return room

    async def _notice(
        self, room_id: str, text: str, reply_to: str | None = None, thread: str | None = None
    ) -> str | None:
        return await send_notice(self.port, room_id, text, reply_to, thread)

    # Incoming events
    async def on_message(self, room_id: str, event: dict[str, Any], is_dm: bool) -> None:
        message = parse_message(room_id, event)
        if message is None or message.sender == self.bot_id:
            return
        if message.is_edit:
            edit = parse_edit(room_id, event)
            if edit is not None:  # only its own sender's edit, in its own room, counts
                await self.store.conversations.edit_question(
                    room_id, edit.target, edit.sender, edit.body
                )
            return
        if message.msgtype != "m.text":
            return
        room = await self._room(room_id)
        if self._is_history(room, message.ts):
            return
        lang = self._lang(room)
        command = parse_command(message.body, self.settings.bot.command_prefix)
        if command is not None:
            if await self.store.sync.claim_event(room_id, message.event_id, now_ms()):
                self._spawn(self._command(command, message, lang), name=f"command-{room_id}")
            return
        if not await self._addressed(message, room, is_dm):
            return
        if not self._allowed(self.question_limit, message.sender, room, "limit.questions"):
            return
        await self.history.save(message)
        row = await self.store.conversations.queue_answer(
            room_id,
            message.event_id,
            message.ts,
            message.thread_root,
            now_ms(),
            collected=room.collection,
        )
        if row is not None:
            self._schedule(row, is_dm)
        if self.settings.log_content:
            log.debug("question %s in %s: %r", message.event_id, room_id, message.body)

    async def _addressed(self, message: TextMessage, room: RoomRow, is_dm: bool) -> bool:
        room_id = message.room_id
        display_name = self.port.display_name(room_id, self.bot_id)
        situation = Situation(
            is_dm=is_dm,
            mode=room.mode,
            replies_to_bot=bool(message.reply_to)
            and await self._from_bot(room_id, message.reply_to),
            in_bot_thread=bool(message.thread_root)
            and await self._bot_thread(room_id, message.thread_root),
        )
        mentioned = mentions_bot(message, self.bot_id, display_name)
        return should_answer(message, situation, mentioned)

    def _allowed(self, limit: SlidingLimit, person: str, room: RoomRow, notice: str) -> bool:
        """Within the person's fair share; otherwise one notice per window, then silence (a
        refusal must stay cheap when someone keeps asking)."""
        if person in self.settings.bot.operators:
            return True
        verdict: Verdict = limit.take(person)
        if verdict.allowed:
            return True
        log.info("fair-use limit reached in %s", room.room_id)
        if verdict.first_refusal:
            minutes = max(1, round(verdict.retry_after_s / 60))
            text = say(self._lang(room), notice, minutes=minutes)
            self._spawn(self._notice(room.room_id, text), name="limit-notice")
        return False

    def _is_history(self, room: RoomRow, ts: int) -> bool:
        """Sent before the bot joined, or too long ago to answer now."""
        catch_up_ms = self.settings.bot.catch_up_minutes * 60_000
        return ts < room.joined_at or ts < now_ms() - catch_up_ms

    async def awaits_key(self, room_id: str, sender: str, ts: int) -> bool:
        """Whether an encrypted message the bot cannot read yet is worth waiting for."""
        if sender == self.bot_id:
            return False
        return not self._is_history(await self._room(room_id), ts)

    async def unreadable(self, room_id: str, event_id: str) -> None:
        """Its room key never came: say so, and what the person can do."""
        room = await self._room(room_id)
        await self._notice(room_id, say(self._lang(room), "encryption.unreadable"), event_id)

    async def _command(self, command: Command, message: TextMessage, lang: str) -> None:
        if command.name == "consent" and not command.args:
            if self._collecting(await self._room(message.room_id)):
                await self._consent_notice(message.room_id, lang)
            else:
                await self._notice(message.room_id, say(lang, "cmd.collection.off"))
            return
        reply = await self.commands.run(command, message, lang)
        if reply:
            await self._notice(message.room_id, reply, message.event_id, message.thread_root)

    async def _from_bot(self, room_id: str, event_id: str) -> bool:
        stored = await self.store.conversations.message(room_id, event_id)
        if stored is not None:
            return stored.from_bot
        return await self.store.conversations.answer_by_event(room_id, event_id) is not None

    async def _bot_thread(self, room_id: str, root: str) -> bool:
        if await self.store.conversations.bot_answered_in_thread(room_id, root):
            return True
        return await self._from_bot(room_id, root)

    async def on_reaction(self, room_id: str, event: dict[str, Any]) -> None:
        """👍/👎 votes, reason labels and 🔁 on answers; ✅ on the consent notice."""
        reaction = parse_reaction(room_id, event)
        if reaction is None or reaction.sender == self.bot_id:
            return
        key = bare_emoji(reaction.key)
        if key == CONSENT_KEY and self.settings.data.collection == "opt_in":
            room = await self._room(room_id)
            on_notice = reaction.target == room.consent_notice_event_id
            claimed = on_notice and await self.store.sync.claim_event(
                room_id, reaction.event_id, now_ms()
            )
            if claimed:
                reply = await self.data_commands.record_consent(
                    reaction.sender, room_id, self._lang(room), reaction.event_id
                )
                self._spawn(self._notice(room_id, reply, reaction.target), name="consent")
            return
        answer = await self.store.conversations.answer_by_event(room_id, reaction.target)
        if answer is None:
            return
        args = (reaction.event_id, reaction.target, room_id, reaction.sender)
        vote = normalise_vote(reaction.key)
        if vote is not None:
            if await self.store.feedback.add_vote(*args, vote, reaction.key, reaction.ts):
                self.metrics.votes.labels(vote).inc()
        elif key in self.reasons:
            await self.store.feedback.add_label(*args, self.reasons[key], reaction.key, reaction.ts)
        elif key == REGENERATE_KEY and await self.store.sync.claim_event(
            room_id, reaction.event_id, now_ms()
        ):
            notice = await self.regenerate(answer, reaction.sender)
            if notice:
                self._spawn(self._notice(room_id, notice, reaction.target), name="limit-notice")

    async def on_redaction(self, room_id: str, event: dict[str, Any]) -> None:
        redaction = parse_redaction(room_id, event)
        if redaction is not None:
            # a withdrawn reaction, or a message whose text and derived records must go
            redacts, now = redaction.redacts, now_ms()
            await self.store.feedback.withdraw_reaction(room_id, redacts, now)
            await self.store.erasure.erase_event(room_id, redacts, now)
            given = await self.store.feedback.consent_given_by(room_id, redacts)
            if given is not None:  # taking back the ✅ takes back the consent
                await self.store.feedback.add_consent(given[0], "no", given[1], room_id, now)

    async def regenerate(self, answer: AnswerRow, requester: str) -> str:
        """A new answer to the same question, kept as a sibling of the first; the notice to
        give instead when the question had its share, or the person theirs ("" otherwise)."""
        room = await self._room(answer.room_id)
        # the person's limit first: it also bounds how many refusals one person can cause
        if not self._allowed(self.regeneration_limit, requester, room, "limit.regenerations"):
            return ""
        most = self.settings.bot.max_answers_per_question
        count = await self.store.conversations.siblings(answer.room_id, answer.question_event_id)
        if count >= most:
            return say(self._lang(room), "limit.siblings", count=count)
        sibling = await self.store.conversations.add_sibling(
            answer, now_ms(), collected=room.collection
        )
        self._schedule(sibling, self.port.is_dm(answer.room_id))
        return ""

    # Answers
    async def resume(self, dm_rooms: set[str], rooms: set[str] | None = None) -> None:
        """Answers owed from before a restart: finish them once, or drop those too old."""
        await self.ask_consent_again(rooms or set())
        oldest = now_ms() - self.settings.bot.catch_up_minutes * 60_000
        for row in await self.store.conversations.open_answers():
            if row.question_ts < oldest:
                status = "cut" if row.answer_event_id else "skipped"
                await self.store.conversations.update_answer(
                    row.id, status=status, finished_at=now_ms()
                )
                continue
            log.info("resuming answer to %s in %s", row.question_event_id, row.room_id)
            self._schedule(row, row.room_id in dm_rooms)

    def _schedule(self, row: AnswerRow, is_dm: bool) -> None:
        if row.id in self._active:
            return
        self._active.add(row.id)
        self._spawn(self._answer(row, is_dm), name=f"answer-{row.id}")

    async def _answer(self, row: AnswerRow, is_dm: bool) -> None:
        try:
            await self.answerer.answer(row, is_dm)
        finally:
            self._active.discard(row.id)
