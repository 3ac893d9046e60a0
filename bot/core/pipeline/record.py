"""The record stage: what each answer was built from and how it went, for restarts, statistics
and consented exports; and the metrics operators watch."""

from __future__ import annotations

import time

from bot.core.clock import now_ms
from bot.core.metrics import Metrics
from bot.core.pipeline.generate import ModelRun
from bot.core.pipeline.publish import Outcome
from bot.core.pipeline.stages import AnswerJob
from bot.core.records import MessageRow
from bot.core.stores import ConversationStore
from bot.core.streaming import ReplyStream
from bot.llm.client import Sampling


class Recorder:
    def __init__(self, answers: ConversationStore, metrics: Metrics, bot_id: str) -> None:
        self.answers = answers
        self.metrics = metrics
        self.bot_id = bot_id

    async def started(
        self, job: AnswerJob, messages: list[dict[str, str]], sampling: Sampling, model: str
    ) -> None:
        """What the model is sent, recorded before it is sent: exactly the turns it reads."""
        await self.answers.update_answer(
            job.row.id,
            status="streaming",
            request_messages=messages,
            prompt_version=job.prompt_version,
            policy_sha256=job.policy_sha256,
            model=model,
            sampling=sampling.as_dict(),
            context_event_ids=[turn.event_id for turn in job.turns if turn.event_id],
            speakers_named=int(not job.is_dm),
            started_at=now_ms(),
            attempts=job.row.attempts + 1,
        )

    async def first_event(self, job: AnswerJob, event_id: str) -> None:
        message = self._message(job, event_id, "")
        await self.answers.answer_message(job.row.id, message, answer_event_id=event_id)

    async def finished(
        self,
        job: AnswerJob,
        stream: ReplyStream,
        run: ModelRun,
        outcome: Outcome,
        refusal: str | None = None,  # answers.refusal, when moderation replaced the answer
    ) -> None:
        result = run.result
        if stream.refused is not None:
            error: str | None = f"refused: {stream.refused}"
        else:
            error = str(run.error) if run.error else None
        visible = stream.first_visible_at
        fields = dict(
            status=outcome.status,
            text=outcome.final or None,
            error=error,
            tokens=result.tokens,
            edits=stream.edits,
            first_token_at=int(result.first_token_at * 1000) if result.first_token_at else None,
            first_visible_at=int(visible * 1000) if visible else None,
            finished_at=now_ms(),
            stages={"sources": job.sources, "filters": job.filters, "replaced": run.replaced_by},
            refusal=refusal,
        )
        if stream.event_id:
            message = self._message(job, stream.event_id, outcome.final)
            await self.answers.answer_message(job.row.id, message, **fields)
        else:
            await self.answers.update_answer(job.row.id, **fields)
        self._measure(outcome.status, run, job.row.question_ts)

    def _message(self, job: AnswerJob, event_id: str, body: str) -> MessageRow:
        return MessageRow(
            event_id=event_id,
            room_id=job.row.room_id,
            sender=self.bot_id,
            sender_name=None,
            body=body,
            ts=now_ms(),
            reply_to=job.question.event_id,
            thread_root=job.question.thread_root,
            from_bot=True,
        )

    def _measure(self, status: str, run: ModelRun, question_ts: int) -> None:
        metrics, result = self.metrics, run.result
        metrics.answers.labels(status).inc()
        if run.error is not None:
            metrics.errors.labels(run.error.kind).inc()
        metrics.tokens.inc(result.tokens)
        if result.first_token_at is not None:
            metrics.first_token.observe(max(0.0, result.first_token_at - question_ts / 1000))
        if status == "complete":
            metrics.final_answer.observe(max(0.0, time.time() - question_ts / 1000))
