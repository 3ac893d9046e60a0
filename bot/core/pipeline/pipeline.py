"""The answer pipeline: runs the stages for one answer, in order, and makes sure the person
hears back whatever goes wrong."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

from bot.config import Settings
from bot.core.clock import now_ms
from bot.core.context import fit_turns
from bot.core.metrics import Metrics
from bot.core.pipeline.generate import Generator, ModelRun
from bot.core.pipeline.grounding import Grounding
from bot.core.pipeline.moderation import AnswerModeration, answer_refusal
from bot.core.pipeline.publish import Publisher
from bot.core.pipeline.record import Recorder
from bot.core.pipeline.stages import AnswerJob, ContextSource, OutputFilter, RequestFilter
from bot.core.ports import ChatPort
from bot.core.records import AnswerRow
from bot.core.rooms import Rooms
from bot.core.scheduler import FairScheduler
from bot.core.server_queue import ServerQueue
from bot.core.stores import ConversationStore
from bot.core.streaming import send_notice
from bot.llm.client import ChatModel, Sampling
from bot.texts import say

log = logging.getLogger(__name__)
TYPING_REFRESH_S = 20


class TokenMeter(Protocol):
    async def spent(self, person: str, room_id: str, tokens: int) -> None: ...


TYPING_DELAY_S = 0.8


class AnswerPipeline:
    def __init__(
        self,
        settings: Settings,
        parts: tuple[ConversationStore, Rooms, ChatModel, ChatPort, Metrics],
        sources: Sequence[ContextSource],
        request_filters: Sequence[RequestFilter] = (),
        output_filters: Sequence[OutputFilter] = (),
        grounding: Grounding | None = None,
        quotas: TokenMeter | None = None,
    ) -> None:
        self.settings = settings
        self.answers, self.rooms, self.model, self.port, metrics = parts
        self.sources = [*sources, grounding] if grounding is not None else list(sources)
        self.grounding = grounding
        self.request_filters = request_filters
        self.output_filters = output_filters
        llm = settings.llm
        self.scheduler = FairScheduler(llm.max_concurrent_requests)
        self.server_queue = (
            ServerQueue(self.scheduler, self.model.server_waiting, llm.max_concurrent_requests)
            if llm.follow_server_queue
            else None
        )
        self.publisher = Publisher(settings.bot, self.port)
        self.generator = Generator(self.model)
        self.recorder = Recorder(self.answers, metrics, self.port.user_id)
        self.quotas = quotas

    def saturated(self) -> float | None:
        """The expected wait, in seconds, once too many answers wait for the model."""
        return self.scheduler.saturated(self.settings.llm.max_queued_answers)

    async def answer(self, row: AnswerRow, is_dm: bool) -> None:
        """Answer once; whatever goes wrong, the person hears back."""
        typed, text_coming = asyncio.Event(), asyncio.Event()
        typing = asyncio.create_task(self._keep_typing(row.room_id, typed, text_coming))
        try:
            job = await self._gather(row, is_dm)
            if job is not None:
                await self._run(job, text_coming)
        except Exception as exc:
            # the person still hears back, and the next question starts clean
            log.exception("answer %d in %s failed", row.id, row.room_id)
            await self.answers.update_answer(
                row.id,
                status="error",
                error=f"internal: {type(exc).__name__}",
                finished_at=now_ms(),
            )
            lang = self.rooms.lang(await self.rooms.get(row.room_id))
            text = say(lang, "error.internal")
            await send_notice(self.port, row.room_id, text, row.question_event_id)
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

    async def _gather(self, row: AnswerRow, is_dm: bool) -> AnswerJob | None:
        """Stage 1: the question and its room."""
        question = await self.answers.message(row.room_id, row.question_event_id)
        if question is None:
            await self.answers.update_answer(row.id, status="error", error="question lost")
            return None
        room = await self.rooms.get(row.room_id)
        return AnswerJob(row, question, room, self.rooms.lang(room), is_dm)

    async def _run(self, job: AnswerJob, text_coming: asyncio.Event) -> None:
        stream = self.publisher.stream(
            job, lambda event_id: self.recorder.first_event(job, event_id)
        )
        if self.server_queue is not None:
            self.server_queue.nudge()
        async with self.scheduler.slot(job.row.room_id):
            # the context is read once the model is free: answers to earlier questions of the
            # room, finished meanwhile, are part of it
            for source in self.sources:  # stage 2: what the model reads
                await source.add(job)
            if await self._refused(job):  # stage 3
                return
            messages, sampling = await self._request(job)  # stage 4, through stage 5
            filters = [*self.output_filters, *job.output_filters]
            job.filters += [output_filter.name for output_filter in filters]
            for output_filter in filters:
                if isinstance(output_filter, AnswerModeration):
                    output_filter.wake_on(stream.poke)
            run = await self.generator.run(
                job.row.id, messages, sampling, (stream, text_coming), filters
            )
        # The model's part is over: its slot serves the next question while the homeserver,
        # however slow, takes the final text (stage 6), then the record (stage 7).
        if self.server_queue is not None:
            self.server_queue.nudge()
        answer = await self._filtered(run, filters)
        outcome = await self.publisher.conclude(job, stream, run, answer)
        await self.recorder.finished(job, stream, run, outcome, answer_refusal(filters))
        if self.grounding is not None:
            await self.grounding.record(job)
        if self.quotas is not None:
            tokens = run.result.tokens + run.result.prompt_tokens
            # a regeneration's tokens are the requester's, not the asker's
            person = job.row.requested_by or job.question.sender
            await self.quotas.spent(person, job.row.room_id, tokens)

    async def _refused(self, job: AnswerJob) -> bool:
        for request_filter in self.request_filters:
            job.filters.append(request_filter.name)
            refusal = await request_filter.check(job)
            if refusal is not None:
                log.info("answer %d refused by %s", job.row.id, request_filter.name)
                await self.answers.update_answer(
                    job.row.id,
                    status="error",
                    error=f"refused by {request_filter.name}: {refusal.reason}",
                    finished_at=now_ms(),
                    # what the refusal was about, for statistics and labelled safety examples
                    text=refusal.notice,
                    refusal=refusal.record,
                    context_event_ids=[turn.event_id for turn in job.turns if turn.event_id],
                    prompt_version=job.prompt_version,
                    policy_sha256=job.policy_sha256,
                    speakers_named=int(not job.is_dm),
                )
                q = job.question
                await send_notice(self.port, q.room_id, refusal.notice, q.event_id, q.thread_root)
                return True
        return False

    async def _request(self, job: AnswerJob) -> tuple[list[dict[str, str]], Sampling]:
        """The turns that fit the model's budget, recorded as exactly what it reads."""
        llm, count = self.settings.llm, self.model.count_tokens
        budget = llm.context_tokens
        if self.grounding is not None and job.found is not None:
            budget -= await self.grounding.fit(job, llm.context_tokens, count)
        job.turns, messages = await fit_turns(job.system, job.turns, not job.is_dm, budget, count)
        if self.grounding is not None and job.found is not None:
            self.grounding.into_messages(job, messages)
        sampling = Sampling(llm.temperature, llm.top_p, llm.max_tokens)
        await self.recorder.started(job, messages, sampling, self.model.model)
        if self.grounding is not None:
            await self.grounding.given(job)
        return messages, sampling

    async def _filtered(self, run: ModelRun, filters: Sequence[OutputFilter]) -> str:
        answer = run.text.text()
        for output_filter in filters:
            verdict = await output_filter.final(answer)
            answer = verdict.text
            if verdict.replaced and output_filter.name not in run.replaced_by:
                run.replaced_by.append(output_filter.name)
            if verdict.halt:
                break  # the answer was replaced whole: no later filter decorates it
        return answer
