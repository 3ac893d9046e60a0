"""The relay: decides what to answer, builds the model's context, streams the answer back."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Coroutine
from typing import Any

from bot.config import Settings
from bot.core.clock import now_ms
from bot.core.commands import Command, Commands, parse_command
from bot.core.context import Turn, fit_to_budget, to_messages
from bot.core.events import TextMessage, parse_message, parse_reaction, parse_redaction
from bot.core.governance import bare_emoji, inviter_allowed, normalise_vote
from bot.core.metrics import CountingPort, Metrics
from bot.core.ports import ChatPort
from bot.core.render import message_content
from bot.core.scheduler import FairScheduler
from bot.core.streaming import ReplyStream, retrying
from bot.core.triggers import Situation, mentions_bot, should_answer, strip_bot_name
from bot.llm.client import FAILOVER_KINDS, ChatModel, LLMError, Sampling, StreamResult
from bot.storage.store import AnswerRow, MessageRow, RoomRow, StorageUnavailable, Store
from bot.texts import PromptTexts, say

log = logging.getLogger(__name__)
MAX_CHAIN = 50
TYPING_REFRESH_S = 20
TYPING_DELAY_S = 0.8
NOTICE_TIMEOUT_S = 120
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
        self.model = model
        self.metrics = Metrics()
        self.port: ChatPort = CountingPort(port, self.metrics)  # type: ignore[assignment]
        self.prompts = prompts
        self.commands = Commands(settings, store, self.port, prompts, self.regenerate)
        self.reasons = {bare_emoji(k): v for k, v in settings.data.reason_emojis.items()}
        self.scheduler = FairScheduler(settings.llm.max_concurrent_requests)
        self.metrics.queue.set_function(lambda: self.scheduler.queued)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._active: set[int] = set()

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
        await self.store.add_room(room_id, now_ms())

    def introduce(self, room_id: str) -> None:
        """Once the joined room has synced: post the join notice (once per room)."""
        self._spawn(self._introduce(room_id), name=f"notice-{room_id}")

    async def _introduce(self, room_id: str) -> None:
        room = await self._room(room_id)
        if room.notice_sent:
            return
        lang = room.lang or self.settings.bot.default_lang
        prefix = self.settings.bot.command_prefix
        if await self._notice(room_id, self.prompts.join_notice(lang, prefix)) is None:
            return
        await self.store.set_room(room_id, notice_sent=1)
        if self.settings.data.collection == "opt_in":
            await self._consent_notice(room_id, lang)

    async def _consent_notice(self, room_id: str, lang: str) -> None:
        """What is kept, why, under which licence; a ✅ reaction on it gives consent."""
        text = self.prompts.consent_notice(
            lang, self.settings.bot.command_prefix, self.settings.data.licence
        )
        event_id = await self._notice(room_id, text)
        if event_id is not None:
            await self.store.set_room(room_id, consent_notice_event_id=event_id)

    async def _room(self, room_id: str) -> RoomRow:
        room = await self.store.room(room_id)
        if room is None:
            # in a room we have no record of (database replaced): answer only what comes next
            await self.store.add_room(room_id, now_ms())
            room = await self.store.room(room_id)
            assert room is not None
        return room

    async def _notice(
        self, room_id: str, text: str, reply_to: str | None = None, thread: str | None = None
    ) -> str | None:
        content = message_content(text, "m.notice", reply_to=reply_to, thread_root=thread)
        txn_id = uuid.uuid4().hex
        return await retrying(lambda: self.port.send(room_id, content, txn_id), NOTICE_TIMEOUT_S)

    # Incoming events
    async def on_message(self, room_id: str, event: dict[str, Any], is_dm: bool) -> None:
        message = parse_message(room_id, event)
        if message is None or message.sender == self.bot_id:
            return
        if message.msgtype != "m.text" or message.is_edit:
            return
        room = await self._room(room_id)
        if self._is_history(room, message.ts):
            return
        lang = room.lang or self.settings.bot.default_lang
        command = parse_command(message.body, self.settings.bot.command_prefix)
        if command is not None:
            if await self.store.claim_event(message.event_id, now_ms()):
                self._spawn(self._command(command, message, lang), name=f"command-{room_id}")
            return
        display_name = self.port.display_name(room_id, self.bot_id)
        situation = Situation(
            is_dm=is_dm,
            mode=room.mode,
            replies_to_bot=bool(message.reply_to) and await self._from_bot(message.reply_to),
            in_bot_thread=bool(message.thread_root)
            and await self._bot_thread(room_id, message.thread_root),
        )
        mentioned = mentions_bot(message, self.bot_id, display_name)
        if not should_answer(message, situation, mentioned):
            return
        await self._save(message)
        row = await self.store.queue_answer(
            room_id, message.event_id, message.ts, message.thread_root, now_ms()
        )
        if row is not None:
            self._schedule(row, is_dm)
        if self.settings.log_content:
            log.debug("question %s in %s: %r", message.event_id, room_id, message.body)

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
        lang = room.lang or self.settings.bot.default_lang
        await self._notice(room_id, say(lang, "encryption.unreadable"), reply_to=event_id)

    async def _command(self, command: Command, message: TextMessage, lang: str) -> None:
        if command.name == "consent" and not command.args:
            await self._consent_notice(message.room_id, lang)
            return
        reply = await self.commands.run(command, message, lang)
        if reply:
            await self._notice(message.room_id, reply, message.event_id, message.thread_root)

    async def _from_bot(self, event_id: str) -> bool:
        stored = await self.store.message(event_id)
        if stored is not None:
            return stored.from_bot
        return await self.store.answer_by_event(event_id) is not None

    async def _bot_thread(self, room_id: str, root: str) -> bool:
        return await self.store.bot_answered_in_thread(room_id, root) or await self._from_bot(root)

    async def _save(self, message: TextMessage) -> MessageRow:
        row = MessageRow(
            event_id=message.event_id,
            room_id=message.room_id,
            sender=message.sender,
            sender_name=self.port.display_name(message.room_id, message.sender),
            body=message.body,
            ts=message.ts,
            reply_to=message.reply_to,
            thread_root=message.thread_root,
            from_bot=message.sender == self.bot_id,
        )
        await self.store.save_message(row)
        return row

    async def on_reaction(self, room_id: str, event: dict[str, Any]) -> None:
        """👍/👎 votes, reason labels and 🔁 on answers; ✅ on the consent notice."""
        reaction = parse_reaction(room_id, event)
        if reaction is None or reaction.sender == self.bot_id:
            return
        key = bare_emoji(reaction.key)
        if key == CONSENT_KEY and self.settings.data.collection == "opt_in":
            room = await self._room(room_id)
            on_notice = reaction.target == room.consent_notice_event_id
            if on_notice and await self.store.claim_event(reaction.event_id, now_ms()):
                lang = room.lang or self.settings.bot.default_lang
                reply = await self.commands.data.record_consent(
                    reaction.sender, room_id, lang, reaction.event_id
                )
                self._spawn(self._notice(room_id, reply, reaction.target), name="consent")
            return
        answer = await self.store.answer_by_event(reaction.target)
        if answer is None:
            return
        args = (reaction.event_id, reaction.target, room_id, reaction.sender)
        vote = normalise_vote(reaction.key)
        if vote is not None:
            if await self.store.add_vote(*args, vote, reaction.key, reaction.ts):
                self.metrics.votes.labels(vote).inc()
        elif key in self.reasons:
            await self.store.add_label(*args, self.reasons[key], reaction.key, reaction.ts)
        elif key == REGENERATE_KEY and await self.store.claim_event(reaction.event_id, now_ms()):
            await self.regenerate(answer)

    async def on_redaction(self, room_id: str, event: dict[str, Any]) -> None:
        redaction = parse_redaction(room_id, event)
        if redaction is not None:
            # a withdrawn reaction, or a message whose text and derived records must go
            await self.store.withdraw_reaction(redaction.redacts, now_ms())
            await self.store.erase_event(redaction.redacts, now_ms())
            given = await self.store.consent_given_by(redaction.redacts)
            if given is not None:  # taking back the ✅ takes back the consent
                await self.store.add_consent(given[0], "no", given[1], room_id, now_ms())

    async def regenerate(self, answer: AnswerRow) -> None:
        """A new answer to the same question, kept as a sibling of the first."""
        sibling = await self.store.add_sibling(answer, now_ms())
        self._schedule(sibling, self.port.is_dm(answer.room_id))

    # Answers
    async def resume(self, dm_rooms: set[str]) -> None:
        """Answers owed from before a restart: finish them once, or drop those too old."""
        oldest = now_ms() - self.settings.bot.catch_up_minutes * 60_000
        for row in await self.store.open_answers():
            if row.question_ts < oldest:
                status = "cut" if row.answer_event_id else "skipped"
                await self.store.update_answer(row.id, status=status, finished_at=now_ms())
                continue
            log.info("resuming answer to %s in %s", row.question_event_id, row.room_id)
            self._schedule(row, row.room_id in dm_rooms)

    def _schedule(self, row: AnswerRow, is_dm: bool) -> None:
        if row.id in self._active:
            return
        self._active.add(row.id)
        self._spawn(self._answer(row, is_dm), name=f"answer-{row.id}")

    async def _answer(self, row: AnswerRow, is_dm: bool) -> None:
        typed, text_coming = asyncio.Event(), asyncio.Event()
        typing = asyncio.create_task(self._keep_typing(row.room_id, typed, text_coming))
        try:
            question = await self.store.message(row.question_event_id)
            if question is None:
                await self.store.update_answer(row.id, status="error", error="question lost")
                return
            async with self.scheduler.slot(row.room_id):
                await self._generate(row, question, is_dm, text_coming)
        except Exception as exc:
            # the person still hears back, and the next question starts clean
            log.exception("answer %d in %s failed", row.id, row.room_id)
            await self.store.update_answer(
                row.id,
                status="error",
                error=f"internal: {type(exc).__name__}",
                finished_at=now_ms(),
            )
            room = await self._room(row.room_id)
            lang = room.lang or self.settings.bot.default_lang
            await self._notice(row.room_id, say(lang, "error.internal"), row.question_event_id)
        finally:
            typing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await typing
            self._active.discard(row.id)
            if typed.is_set():
                with contextlib.suppress(Exception):
                    await self.port.typing(row.room_id, False)

    async def _keep_typing(
        self, room_id: str, typed: asyncio.Event, text_coming: asyncio.Event
    ) -> None:
        # Typing says the model is thinking. A quick answer needs none, and once the model has
        # spoken the text is on its way: a busy homeserver slow to take it would otherwise get
        # two more requests per answer just when it can least afford them.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(text_coming.wait(), TYPING_DELAY_S)
            return
        typed.set()
        while True:
            with contextlib.suppress(Exception):
                await self.port.typing(room_id, True)
            await asyncio.sleep(TYPING_REFRESH_S)

    async def _generate(
        self, row: AnswerRow, question: MessageRow, is_dm: bool, text_coming: asyncio.Event
    ) -> None:
        room = await self._room(row.room_id)
        lang = room.lang or self.settings.bot.default_lang
        prompt = await self.store.current_prompt(row.room_id)
        system = prompt.text if prompt and prompt.text else self.prompts.system(lang)
        chain = await self._conversation(question, room, is_dm)
        turns = [self._turn(message) for message in chain]
        messages = to_messages(system, turns, name_speakers=not is_dm)
        messages, _ = await fit_to_budget(
            messages, self.settings.llm.context_tokens, self.model.count_tokens
        )
        llm = self.settings.llm
        sampling = Sampling(llm.temperature, llm.top_p, llm.max_tokens)
        started = now_ms()
        await self.store.update_answer(
            row.id,
            status="streaming",
            request_messages=messages,
            prompt_version=prompt.version if prompt else 0,
            model=self.model.model,
            sampling=sampling.as_dict(),
            context_event_ids=[message.event_id for message in chain],
            started_at=started,
            attempts=row.attempts + 1,
        )

        async def first_event(event_id: str) -> None:
            await self.store.update_answer(row.id, answer_event_id=event_id)
            await self.store.save_message(
                MessageRow(
                    event_id,
                    row.room_id,
                    self.bot_id,
                    None,
                    "",
                    now_ms(),
                    question.event_id,
                    question.thread_root,
                    True,
                )
            )

        bot = self.settings.bot
        stream = ReplyStream(
            self.port,
            row.room_id,
            reply_to=question.event_id,
            thread_root=question.thread_root,
            mention=question.sender,
            interval=bot.edit_interval_s,
            max_edits=bot.max_edits_per_answer,
            first_delay=bot.first_text_delay_s,
            final_timeout=bot.final_edit_timeout_s,
            on_first_event=first_event,
            existing_event_id=row.answer_event_id,
            first_txn_id=answer_txn_id(row),
            first_may_exist=row.attempts > 0,
        )
        for restart in range(len(self.model.backends)):
            result, text, error = StreamResult(), "", None
            try:
                async for delta in self.model.stream(messages, sampling, result):
                    text += delta
                    if text.strip():
                        text_coming.set()
                        stream.update(text.strip())
            except LLMError as exc:
                error = exc
                log.warning("model failed for answer %d in %s: %s", row.id, row.room_id, exc.kind)
            broke_midway = error is not None and error.kind in FAILOVER_KINDS and bool(text)
            if not (broke_midway and self.model.can_fail_over()):
                break
            # another replica answers from the start; the same reply is edited as it goes
            log.info("answer %d restarts on another model server (%d)", row.id, restart + 1)
        answer = text.strip()
        if error is None and answer and result.finish_reason != "length":
            status, final = "complete", answer
        else:
            status = "cut" if answer else "error"
            marker = say(lang, "answer.incomplete")
            final = f"{answer}\n\n{marker}" if answer else (marker if stream.event_id else "")
        landed = await stream.finish(final) if final else True
        if error is not None or not answer:  # an answer cut by max_tokens needs no notice
            key = f"error.{error.kind}" if error else "error.empty"
            notice = say(lang, key, prefix=bot.command_prefix)
            await self._notice(row.room_id, notice, question.event_id, question.thread_root)
        self._measure(status if landed else "cut", error, result, row.question_ts)
        await self.store.update_answer(
            row.id,
            status=status if landed else "cut",
            text=final or None,
            error=str(error) if error else None,
            tokens=result.tokens,
            edits=stream.edits,
            first_token_at=int(result.first_token_at * 1000) if result.first_token_at else None,
            first_visible_at=int(stream.first_visible_at * 1000)
            if stream.first_visible_at
            else None,
            finished_at=now_ms(),
        )
        if stream.event_id:
            await self.store.save_message(
                MessageRow(
                    stream.event_id,
                    row.room_id,
                    self.bot_id,
                    None,
                    final,
                    now_ms(),
                    question.event_id,
                    question.thread_root,
                    True,
                )
            )

    def _measure(
        self, status: str, error: LLMError | None, result: StreamResult, question_ts: int
    ) -> None:
        metrics = self.metrics
        metrics.answers.labels(status).inc()
        if error is not None:
            metrics.errors.labels(error.kind).inc()
        metrics.tokens.inc(result.tokens)
        if result.first_token_at is not None:
            metrics.first_token.observe(max(0.0, result.first_token_at - question_ts / 1000))
        if status == "complete":
            metrics.final_answer.observe(max(0.0, time.time() - question_ts / 1000))

    async def _conversation(
        self, question: MessageRow, room: RoomRow, is_dm: bool
    ) -> list[MessageRow]:
        """The messages the model should see, oldest first, ending with the question."""
        if question.thread_root:
            root = await self._message(room.room_id, question.thread_root)
            later = await self.store.thread_messages(room.room_id, question.thread_root, MAX_CHAIN)
            chain = ([root] if root else []) + [m for m in later if m.ts <= question.ts]
        elif question.reply_to:
            chain = [question]
            while chain[0].reply_to and len(chain) < MAX_CHAIN:
                earlier = await self._message(room.room_id, chain[0].reply_to)
                if earlier is None:
                    break
                chain.insert(0, earlier)
        elif is_dm:
            chain = await self._recent_exchange(question, room)
        else:
            chain = [question]
        return [message for message in chain if message.body.strip()]

    async def _recent_exchange(self, question: MessageRow, room: RoomRow) -> list[MessageRow]:
        bot = self.settings.bot
        # up to the question, not up to now: a question answered late (after a restart)
        # gets the exchange as it stood when it was asked
        recent = await self.store.recent_messages(
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

    def _turn(self, message: MessageRow) -> Turn:
        if message.from_bot:
            return Turn("assistant", message.body)
        display_name = self.port.display_name(message.room_id, self.bot_id)
        body = strip_bot_name(message.body, self.bot_id, display_name)
        return Turn("user", body, speaker=message.sender_name or message.sender)

    async def _message(self, room_id: str, event_id: str) -> MessageRow | None:
        stored = await self.store.message(event_id)
        if stored is not None:
            return stored
        fetched = await self.port.fetch_message(room_id, event_id)
        if fetched is None:
            return None
        return await self._save(fetched)


def answer_txn_id(row: AnswerRow) -> str:
    """The first message of an answer keeps this transaction id through every restart."""
    digest = hashlib.sha256(f"{row.question_event_id}\n{row.sibling}".encode()).hexdigest()
    return f"lucie-answer-{digest[:32]}"
