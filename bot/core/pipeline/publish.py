"""The publish stage: the reply as it grows, then its final text, with a notice when something
went wrong; nothing the homeserver refused for good is ever sent again."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.config import BotSettings
from bot.core.answer_size import fit_off_loop
from bot.core.pipeline.generate import ModelRun
from bot.core.pipeline.stages import AnswerJob
from bot.core.ports import ChatPort
from bot.core.records import AnswerRow
from bot.core.streaming import ReplyStream, SendPace, send_notice
from bot.texts import say


@dataclass(frozen=True)
class Outcome:
    status: str  # complete, cut or error
    final: str  # the text the reply ends with ("" when none went out)


def answer_txn_id(row: AnswerRow) -> str:
    """The first message of an answer keeps this transaction id through every restart."""
    digest = hashlib.sha256(f"{row.question_event_id}\n{row.sibling}".encode()).hexdigest()
    return f"lucie-answer-{digest[:32]}"


class Publisher:
    def __init__(self, settings: BotSettings, port: ChatPort) -> None:
        self.settings = settings
        self.port = port
        self.pace = SendPace()  # the homeserver's pace, learnt from every answer's sends

    def stream(
        self, job: AnswerJob, on_first_event: Callable[[str], Awaitable[None]]
    ) -> ReplyStream:
        row, question, bot = job.row, job.question, self.settings
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
            on_first_event=on_first_event,
            existing_event_id=row.answer_event_id,
            first_txn_id=answer_txn_id(row),
            first_may_exist=row.attempts > 0,
            # an answer resumed after a restart into a message already shown is completed by
            # one final edit: many answers resumed at once would otherwise flood the homeserver
            # with edits just as the bot comes back
            live=bot.streaming and row.answer_event_id is None,
            pace=self.pace,
        )

    async def conclude(
        self, job: AnswerJob, stream: ReplyStream, run: ModelRun, answer: str
    ) -> Outcome:
        """Land the final text (answer, after the output filters), tell the person what went
        wrong, and say how it ended."""
        error, result = run.error, run.result
        marker = say(job.lang, "answer.incomplete")
        if error is None and answer and result.finish_reason != "length" and not run.stopped:
            status, final = "complete", answer
        else:
            status = "cut" if answer else "error"
            final = f"{answer}\n\n{marker}" if answer else (marker if stream.event_id else "")
        if final:
            fitted = await fit_off_loop(final, answer, marker, job.question.sender)
            status = "cut" if fitted != final else status
            final = fitted
        landed = await stream.finish(final) if final and not stream.refused else True
        if error is not None or not answer or stream.refused:  # max_tokens needs no notice
            await self._notice(job, error.kind if error else None, bool(stream.refused))
        if stream.refused:
            # final: a restart must not send again what the homeserver refuses for good
            status = "cut" if stream.event_id else "error"
        elif not landed:
            status = "cut"
        return Outcome(status, final)

    async def _notice(self, job: AnswerJob, kind: str | None, refused: bool) -> None:
        key = f"error.{kind}" if kind else "error.refused" if refused else "error.empty"
        text = say(job.lang, key, prefix=self.settings.command_prefix)
        question = job.question
        await send_notice(self.port, job.row.room_id, text, question.event_id, question.thread_root)
