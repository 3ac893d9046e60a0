"""One answer: the model's context, its stream, the reply as it grows, the records and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.config import Settings
from bot.core.clock import now_ms
from bot.core.context import fit_to_budget, to_messages
from bot.core.history import History
from bot.core.metrics import Metrics
from bot.core.ports import ChatPort
from bot.core.scheduler import FairScheduler
from bot.core.streaming import AnswerText, ReplyStream, fit_off_loop, send_notice
from bot.llm.client import FAILOVER_KINDS, ChatModel, LLMError, Sampling, StreamResult
from bot.storage.store import AnswerRow, MessageRow, RoomRow, Store
from bot.texts import PromptTexts, say

log = logging.getLogger(__name__)
TYPING_REFRESH_S = 20
TYPING_DELAY_S = 0.8


@dataclass
class ModelRun:
    """What one answer got from the model."""

    text: AnswerText
    result: StreamResult
    error: LLMError | None = None
    stopped: bool = False  # cut short: nothing more could be shown


class Answerer:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        model: ChatModel,
        port: ChatPort,
        prompts: PromptTexts,
        metrics: Metrics,
        history: History,
        room: Callable[[str], Awaitable[RoomRow]],
    ) -> None:
        self.settings = settings
        self.store = store
        self.model = model
        self.port = port
        self.prompts = prompts
        self.metrics = metrics
        self.history = history
        self.room = room
        self.scheduler = FairScheduler(settings.llm.max_concurrent_requests)

    @property
    def bot_id(self) -> str:
        return self.port.user_id

    async def answer(self, row: AnswerRow, is_dm: bool) -> None:
        """Answer once; whatever goes wrong, the person hears back."""
        typed, text_coming = asyncio.Event(), asyncio.Event()
        typing = asyncio.create_task(self._keep_typing(row.room_id, typed, text_coming))
        try:
            question = await self.store.message(row.room_id, row.question_event_id)
            if question is None:
                await self.store.update_answer(row.id, status="error", error="question lost")
                return
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
            room = await self.room(row.room_id)
            lang = room.lang or self.settings.bot.default_lang
            await send_notice(
                self.port, row.room_id, say(lang, "error.internal"), row.question_event_id
            )
        finally:
            typing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await typing
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
        room = await self.room(row.room_id)
        lang = room.lang or self.settings.bot.default_lang
        stream = self._reply_stream(row, question)
        async with self.scheduler.slot(row.room_id):
            messages, sampling = await self._request(row, question, room, is_dm)
            run = await self._run_model(row, messages, sampling, stream, text_coming)
        # The model's part is over: its slot serves the next question while the homeserver,
        # however slow, takes the final text.
        await self._conclude(row, question, lang, stream, run)

    async def _request(
        self, row: AnswerRow, question: MessageRow, room: RoomRow, is_dm: bool
    ) -> tuple[list[dict[str, str]], Sampling]:
        """What the model is sent, recorded before it is sent."""
        lang = room.lang or self.settings.bot.default_lang
        prompt = await self.store.current_prompt(row.room_id)
        system = prompt.text if prompt and prompt.text else self.prompts.system(lang)
        chain = await self.history.conversation(question, room, is_dm)
        turns = [self.history.turn(message) for message in chain]
        messages = to_messages(system, turns, name_speakers=not is_dm)
        messages, _ = await fit_to_budget(
            messages, self.settings.llm.context_tokens, self.model.count_tokens
        )
        llm = self.settings.llm
        sampling = Sampling(llm.temperature, llm.top_p, llm.max_tokens)
        await self.store.update_answer(
            row.id,
            status="streaming",
            request_messages=messages,
            prompt_version=prompt.version if prompt else 0,
            model=self.model.model,
            sampling=sampling.as_dict(),
            context_event_ids=[message.event_id for message in chain],
            started_at=now_ms(),
            attempts=row.attempts + 1,
        )
        return messages, sampling

    def _reply_stream(self, row: AnswerRow, question: MessageRow) -> ReplyStream:
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
        return ReplyStream(
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

    async def _run_model(
        self,
        row: AnswerRow,
        messages: list[dict[str, str]],
        sampling: Sampling,
        stream: ReplyStream,
        text_coming: asyncio.Event,
    ) -> ModelRun:
        """Stream the model's answer into the reply; stop at once when nothing more can be
        shown (too large for one event, or refused by the homeserver)."""
        for restart in range(len(self.model.backends)):
            run = ModelRun(AnswerText(), StreamResult())
            try:
                # closing the stream drops the request: the model server stops generating
                async with contextlib.aclosing(
                    self.model.stream(messages, sampling, run.result)
                ) as deltas:
                    async for delta in deltas:
                        run.text.add(delta)
                        if run.text.has_text:
                            text_coming.set()
                            stream.update(run.text)  # read only when a send is due
                        if run.text.full or stream.overflowed or stream.refused:
                            run.stopped = True
                            break
            except LLMError as exc:
                run.error = exc
                log.warning("model failed for answer %d in %s: %s", row.id, row.room_id, exc.kind)
            error = run.error
            broke_midway = error is not None and error.kind in FAILOVER_KINDS and run.text.size > 0
            if not (broke_midway and self.model.can_fail_over()) or stream.refused:
                break
            # another replica answers from the start; the same reply is edited as it goes
            log.info("answer %d restarts on another model server (%d)", row.id, restart + 1)
        return run

    async def _conclude(
        self, row: AnswerRow, question: MessageRow, lang: str, stream: ReplyStream, run: ModelRun
    ) -> None:
        """Land the final text, tell the person what went wrong, record how it ended."""
        answer, error, result = run.text.text(), run.error, run.result
        marker = say(lang, "answer.incomplete")
        if error is None and answer and result.finish_reason != "length" and not run.stopped:
            status, final = "complete", answer
        else:
            status = "cut" if answer else "error"
            final = f"{answer}\n\n{marker}" if answer else (marker if stream.event_id else "")
        if final:
            fitted = await fit_off_loop(final, answer, marker, question.sender)
            status = "cut" if fitted != final else status
            final = fitted
        landed = await stream.finish(final) if final and not stream.refused else True
        refused = stream.refused
        if error is not None or not answer or refused:  # a cut by max_tokens needs no notice
            key = f"error.{error.kind}" if error else "error.refused" if refused else "error.empty"
            notice = say(lang, key, prefix=self.settings.bot.command_prefix)
            await send_notice(
                self.port, row.room_id, notice, question.event_id, question.thread_root
            )
        if refused:
            # final: a restart must not send again what the homeserver refuses for good
            status = "cut" if stream.event_id else "error"
        elif not landed:
            status = "cut"
        self._measure(status, error, result, row.question_ts)
        await self._record(row, question, stream, run, status, final)

    async def _record(
        self,
        row: AnswerRow,
        question: MessageRow,
        stream: ReplyStream,
        run: ModelRun,
        status: str,
        final: str,
    ) -> None:
        result = run.result
        if stream.refused is not None:
            error: str | None = f"refused: {stream.refused}"
        else:
            error = str(run.error) if run.error else None
        await self.store.update_answer(
            row.id,
            status=status,
            text=final or None,
            error=error,
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


def answer_txn_id(row: AnswerRow) -> str:
    """The first message of an answer keeps this transaction id through every restart."""
    digest = hashlib.sha256(f"{row.question_event_id}\n{row.sibling}".encode()).hexdigest()
    return f"lucie-answer-{digest[:32]}"
